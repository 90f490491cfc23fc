"""Composition: the only package that knows every room (issue 18 item 6).

Each module builds one process, or one part of it, from a :class:`~acme_ca.config.Config`:
:mod:`acme_ca.main.worker` the signing worker with the status updater and the key-compromise
sweeper beside it.  The rooms themselves only know their neighbours (docs/architecture.md,
the import-linter contracts in pyproject.toml).
"""
