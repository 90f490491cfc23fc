"""``acme-ca remote-va``'s settings: the one place remote_va/ reads the Config."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from acme_ca.config.keys import Config
from acme_ca.va.perspectives import MpicConfigError, valid_perspective_id
from acme_ca.va.quorum import UnknownRir, canonical_rir
from acme_ca.va.settings import VASettings


@dataclass(frozen=True)
class RemoteIdentity:
    """Who this remote is: what it puts in every reply."""

    perspective_id: str
    rir: str


@dataclass(frozen=True)
class RemoteVaSettings:
    """What ``acme-ca remote-va`` reads: who it is, where it listens, its mutual-TLS material
    and the checks' own settings."""

    identity: RemoteIdentity
    host: str
    port: int
    tls_cert: Path
    tls_key: Path
    client_ca: Path
    va: VASettings

    @classmethod
    def from_config(cls, config: Config) -> RemoteVaSettings:
        """Check the remote VA's configuration; :class:`MpicConfigError` lists every problem."""
        problems: list[str] = []
        if not valid_perspective_id(config.perspective_id):
            problems.append(
                f"perspective_id (--perspective) {config.perspective_id!r} must be a lowercase DNS "
                "label other than 'primary'"
            )
        rir = ""
        try:
            rir = canonical_rir(config.perspective_rir)
        except UnknownRir as exc:
            problems.append(f"perspective_rir (--rir): {exc}")
        host, _, port_text = config.remote_va_listen.rpartition(":")
        if not host or not port_text.isdigit() or not 0 <= int(port_text) < 65536:
            problems.append(
                f"remote_va_listen (--listen) {config.remote_va_listen!r} is not HOST:PORT"
            )
            port_text = "0"
        paths = {
            "tls_cert (--tls-cert)": config.tls_cert,
            "tls_key (--tls-key)": config.tls_key,
            "remote_va_client_ca (--client-ca)": config.remote_va_client_ca,
        }
        for name, path in paths.items():
            if path is None:
                problems.append(f"{name} is required: a remote VA speaks mutual TLS only")
            elif not path.is_file():
                problems.append(f"{name}: {path} is not a readable file")
        if problems:
            raise MpicConfigError("remote-va: " + "; ".join(problems))
        assert config.tls_cert and config.tls_key and config.remote_va_client_ca
        return cls(
            identity=RemoteIdentity(config.perspective_id, rir),
            host=host.strip("[]"),
            port=int(port_text),
            tls_cert=config.tls_cert,
            tls_key=config.tls_key,
            client_ca=config.remote_va_client_ca,
            va=VASettings.from_config(config),
        )
