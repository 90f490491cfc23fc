"""``acme_ca/localca.py``'s file writes: whole or absent, with their mode from the start.

A CI harness polls for ``$ACME_CA_HOME/tls/ca.pem`` to trust the HTTPS listener; a
certificate written in place was once read empty (``NO_CERTIFICATE_OR_CRL_FOUND``)."""

from __future__ import annotations

import stat
from pathlib import Path

from acme_ca.localca import replace_file, write_private
from acme_ca.tls import ensure_local_tls


def test_replace_file_writes_whole_with_mode_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "ca.pem"
    target.write_bytes(b"old")
    replace_file(target, b"new contents")
    assert target.read_bytes() == b"new contents"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["ca.pem"]


def test_private_key_file_is_owner_only(tmp_path: Path) -> None:
    key = tmp_path / "ca.key"
    write_private(key, b"secret")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_bytes() == b"secret"


def test_local_tls_files_are_complete_and_nothing_else_is_left(tmp_path: Path) -> None:
    chain, key, ca = ensure_local_tls(tmp_path / "tls")
    assert chain.read_bytes().count(b"BEGIN CERTIFICATE") == 2
    assert ca.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert sorted(p.name for p in (tmp_path / "tls").iterdir()) == [
        "ca.key",
        "ca.pem",
        "server.key",
        "server.pem",
    ]
