"""Composition: the only package that knows every room (issue 18 item 6).

Each module builds one process, or one part of it, from a :class:`~acme_ca.config.Config`:
:mod:`~acme_ca.main.app` the ACME web app, :mod:`~acme_ca.main.worker` the signing worker with
the status updater and the key-compromise sweeper beside it, :mod:`~acme_ca.main.status` the
status listener, :mod:`~acme_ca.main.remote_va` a remote perspective's process, and
:mod:`~acme_ca.main.serve` the ``serve`` and ``worker`` processes.  Only the CLI imports it.
The rooms themselves only know their neighbours (docs/architecture.md, the import-linter
contracts in pyproject.toml).
"""
