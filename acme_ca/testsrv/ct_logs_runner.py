"""The three in-process CT test logs of ``acme-ca serve --test`` and the embedded defaults.

When ``ct_log_list`` is unset, the process of each signing worker (``acme-ca worker``, serve's
worker child, or ``serve`` itself with ``serve_worker_in_process``) starts the logs of
:func:`acme_ca.testsrv.ct_log_set.default_specs` (operators A, B, C; A and B RFC 6962, C
static-ct-api) on free ports of 127.0.0.1, accepting the roots of ``issuers.toml``, writes their
log list to ``home/ct/log_list.json`` and hands it to its signing worker, so every certificate
carries real SCTs that verify with that list.  The worker is their only client, so they run
in its process: in serve's worker child their share of the CPU (about 7 ms per issuance) is
off serve's core (issue 20 target 2, docs/performance.md).

The log keys live in ``home/ct/test-log-{a,b,c}.pem`` (created on first start, shared by every
process on the same home), so a log's identity survives restarts and processes; only its URL
(port) changes, and each process submits to its own instances.

These logs prove nothing to a browser: production sets ``ct_log_list`` (docs/ct.md).
Production rooms never import this module.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from acme_ca.ca.ct.loglist import LogListSource, StaticLogList, parse_log_list
from acme_ca.ca.issuers_file import read_issuers_file
from acme_ca.config import Config
from acme_ca.testsrv.ct_log_set import TestCtLogs, default_specs

log = structlog.get_logger(component="acme_ca.testsrv.ct_logs_runner")

TEST_LOGS_BANNER = (
    "CT TEST LOGS: certificates get SCTs from in-process test logs no browser trusts; "
    "set ct_log_list for publicly-trusted issuance"
)


def log_list_path(config: Config) -> Path:
    return config.home / "ct" / "log_list.json"


def load_or_create_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The P-256 key in ``path``, created first if missing (safe against a concurrent
    creator: the first file linked into place wins and everyone reads that one)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        partial.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        os.chmod(partial, 0o600)
        try:
            os.link(partial, path)
        except FileExistsError:
            pass
        finally:
            partial.unlink(missing_ok=True)
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{path} is not an EC key")
    return loaded


def accepted_roots(config: Config) -> list[x509.Certificate]:
    """Every root of issuers.toml (the primary and the alternate chains' roots)."""
    parsed = read_issuers_file(config.pki_path)
    roots = [parsed.root]
    for entry in parsed.roots.values():
        if entry.certificate not in roots:
            roots.append(entry.certificate)
    return roots


@contextlib.asynccontextmanager
async def ct_test_logs(config: Config) -> AsyncIterator[LogListSource | None]:
    """Run the test logs while the context lasts when ``ct_log_list`` is unset; yields their
    log list (None when a real list is configured and nothing was started)."""
    if config.ct_log_list is not None:
        yield None
        return
    keys = [load_or_create_key(config.home / "ct" / f"test-log-{x}.pem") for x in "abc"]
    async with TestCtLogs(default_specs(keys), accepted_roots(config)) as logs:
        path = logs.write_log_list(log_list_path(config))
        log.warning(
            "ct.test_logs_started",
            banner=TEST_LOGS_BANNER,
            log_list=str(path.resolve()),
            logs=[
                {"log": x.name, "operator": x.operator, "api": x.spec.mode, "url": x.url}
                for x in logs.logs
            ],
        )
        yield StaticLogList(parse_log_list(logs.log_list()))
