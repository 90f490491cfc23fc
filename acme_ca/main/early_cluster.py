"""``serve --test --ephemeral``'s slow first steps, begun before the server's modules import.

Importing the server takes about a second of CPU; booting the throwaway cluster that holds the
runs' template (``$ACME_CA_HOME/pg-ephemeral``) is mostly a wait on other processes, and the
new hierarchy's RSA keys (Root X1's 3072 bits, the two RSA issuers') are CPU another core can
spend.  As soon as it has read the configuration the CLI starts the cluster in a thread
(:class:`EarlyCluster`, claimed by :func:`acme_ca.db.database.ephemeral_database`) and the RSA
keys in a child process (:class:`EarlyKeys`, handed to ``acme-ca init``'s key store), so both
overlap the imports (issue 21 item 8: ready within 1.5 s).  This module is imported before
everything else, so it imports nothing heavy itself.
"""

from __future__ import annotations

import concurrent.futures
import subprocess
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from acme_ca.own_python import own_python

if TYPE_CHECKING:
    from acme_ca.ca.signer import CaPrivateKey, KeySpec
    from acme_ca.embedded_pg import EmbeddedPostgres

StartedCluster = concurrent.futures.Future[tuple["EmbeddedPostgres", str]]
"""The cluster and the DSN of its ``acme_ca`` database, once it runs."""


class EarlyCluster:
    """The cluster starting in a thread; :meth:`claim` hands it over, :meth:`abandon` stops it
    when nothing claimed it (the start failed before the database was needed)."""

    def __init__(self, data_root: Path) -> None:
        self._data_root = data_root
        self._future: StartedCluster = concurrent.futures.Future()
        self._claimed = False
        self._thread = threading.Thread(target=self._run, name="ephemeral-postgres", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            from acme_ca.embedded_pg import EmbeddedPostgres

            embedded = EmbeddedPostgres(self._data_root, throwaway=True)
            self._future.set_result((embedded, embedded.start()))
        except BaseException as exc:  # handed to whoever claims it
            self._future.set_exception(exc)

    def claim(self) -> StartedCluster:
        """The cluster, for the run's database; whoever claims it stops it."""
        self._claimed = True
        return self._future

    def abandon(self) -> None:
        """Stop the cluster unless it was claimed."""
        if self._claimed:
            return
        self._thread.join()
        if self._future.exception() is None:
            embedded, _ = self._future.result()
            embedded.stop()


#: The RSA keys the development hierarchy generates (Root X1; the DV and OV RSA issuers), which
#: the Pebble-shaped one shares (its issuers; its other keys are ECDSA, cheap to make).
EARLY_RSA_KEYS: dict[str, int] = {"rsa3072": 1, "rsa2048": 2}
_CHILD = """
import sys
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
for arg in sys.argv[1:]:
    bits, count = arg.split("=")
    for _ in range(int(count)):
        key = rsa.generate_private_key(public_exponent=65537, key_size=int(bits))
        sys.stdout.buffer.write(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
"""
_END = b"-----END PRIVATE KEY-----\n"


class EarlyKeys:
    """Fresh RSA keys made by a child process while the server imports; :meth:`take` (called
    from the key store's worker thread) hands one over by type, or None when it has no more or
    the child failed (the key store then generates its own).  :meth:`close` ends the child."""

    def __init__(self, wanted: dict[str, int] = EARLY_RSA_KEYS) -> None:
        args = [f"{spec.removeprefix('rsa')}={count}" for spec, count in wanted.items()]
        argv, env = own_python("-c", _CHILD, *args)
        self._child = subprocess.Popen(  # noqa: S603 - this interpreter, fixed code, no shell
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self._lock = threading.Lock()
        self._keys: dict[str, list[CaPrivateKey]] | None = None

    def take(self, key_spec: KeySpec) -> CaPrivateKey | None:
        with self._lock:
            if self._keys is None:
                self._keys = self._collect()
            pool = self._keys.get(key_spec, [])
            return pool.pop() if pool else None

    def _collect(self) -> dict[str, list[CaPrivateKey]]:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        try:
            out, _ = self._child.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self._child.kill()
            self._child.wait()
            return {}
        if self._child.returncode != 0:
            return {}
        keys: dict[str, list[CaPrivateKey]] = {}
        for block in out.split(_END)[:-1]:
            # Keys our own child just generated: RSA's consistency check (~10-25 ms of CPU a
            # key, on the path to ready) guards against damaged or hostile key files only.
            key = serialization.load_pem_private_key(
                block + _END, password=None, unsafe_skip_rsa_key_validation=True
            )
            if isinstance(key, rsa.RSAPrivateKey):
                keys.setdefault(f"rsa{key.key_size}", []).append(key)
        return keys

    def close(self) -> None:
        if self._child.poll() is None:
            self._child.kill()
        self._child.wait()
