"""The HSM signer: CA keys in a PKCS#11 token (:class:`Pkcs11Signer`, :func:`generate_pkcs11_key`).

It implements :class:`acme_ca.ca.signer.Signer`; like the software signer it returns X.509-form
signatures and checks every one with the public key before returning it, so a faulty HSM (an
RSA-CRT fault leaks the key) never reaches a certificate.

python-pkcs11 calls block, so each one runs in a worker thread.  python-pkcs11 always
calls ``C_Initialize(NULL)``, which promises the module single-threaded use (SoftHSM2 then turns
its own locks off), so calls into one module are serialised by a process-wide lock unless the
caller vouches that the module is thread-safe anyway (``thread_safe_module=True``).  The
module's lock, the token logins and the session opening live in :mod:`acme_ca.ca.pkcs11_token`;
this module holds the session pool, signing, and the reopen after a token loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import pkcs11
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pkcs11 import Attribute, Mechanism, MechanismFlag
from pkcs11.exceptions import (
    PKCS11Error,
)

from acme_ca import metrics
from acme_ca.ca.pkcs11_token import (
    EC_PARAMS,
    PoolEntry,
    close_entries,
    discard_opened,
    in_thread,
    load_token,
    login,
    logout,
    module_state,
    open_entries,
    public_key_from_token,
    resolve_module,
    warn_if_exportable,
)
from acme_ca.ca.signer import (
    CaPublicKey,
    HashName,
    KeySpec,
    SignerError,
    SignerPublicKey,
    check_hash,
    default_hash,
    spki_sha256_hex,
    verify_signature,
    warn_if_loose,
)
from acme_ca.log import get_logger

_log = get_logger(__name__)

_RSA_MECHANISMS: Final[Mapping[HashName, Mechanism]] = {
    "sha256": Mechanism.SHA256_RSA_PKCS,
    "sha384": Mechanism.SHA384_RSA_PKCS,
}
#: A fixed probe signed once when a key is opened, to prove the key pair matches.
_SELF_TEST_DATA: Final = b"acme_ca signer self-test"
#: Longest a signature waits for a free session (``hsm_session_wait_seconds``).
DEFAULT_SESSION_WAIT: Final = 10.0
#: Longest one signature may take inside the module (``hsm_sign_timeout_seconds``).
DEFAULT_SIGN_TIMEOUT: Final = 30.0


def resolve_pin(pin: str | None, pin_file: Path | None, env_var: str | None = None) -> str:
    """Pick the HSM PIN from exactly one source, so a stale second source cannot win silently.

    ``env_var`` is read only when given: callers whose ``pin`` already came from the
    configuration (which reads ``ACME_CA_PKCS11_PIN`` itself) pass None, so one variable is
    not counted twice. ``pin_file`` loses its trailing newline only. Blocking file I/O:
    call it at start-up.
    """
    from_env = os.environ.get(env_var) if env_var else None
    sources = [
        name
        for name, value in (("pin", pin), ("pin_file", pin_file), (env_var or "env", from_env))
        if value is not None
    ]
    if len(sources) > 1:
        raise SignerError(f"HSM PIN given more than once ({', '.join(sources)}); keep one")
    if pin_file is not None:
        warn_if_loose(pin_file, "HSM PIN file")
        value = pin_file.read_text(encoding="utf-8").rstrip("\r\n")
    elif pin is not None:
        value = pin
    elif from_env is not None:
        value = from_env
    else:
        raise SignerError(
            f"no HSM PIN: set pkcs11_pin, pkcs11_pin_file or {env_var or 'ACME_CA_PKCS11_PIN'}"
        )
    if not value:
        raise SignerError(f"HSM PIN from {sources[0]} is empty")
    return value


def _ecdsa_raw_to_der(raw: bytes, public_key: ec.EllipticCurvePublicKey) -> bytes:
    """PKCS#11 gives ECDSA as r||s, each as wide as the order; X.509 wants Ecdsa-Sig-Value."""
    size = (public_key.curve.key_size + 7) // 8
    if len(raw) != 2 * size:
        raise SignerError(f"ECDSA signature of {len(raw)} bytes from the HSM, wanted {2 * size}")
    return encode_dss_signature(
        int.from_bytes(raw[:size], "big"), int.from_bytes(raw[size:], "big")
    )


class Pkcs11Signer(SignerPublicKey):
    """A private key in an HSM, used through a small pool of PKCS#11 sessions.

    Open with :meth:`open` and close with :meth:`aclose` (or ``async with``).  Each signature
    borrows one session; a session returns to the pool only when its thread is done with it,
    even if the awaiting task was cancelled.
    """

    def __init__(
        self,
        *,
        module: str,
        token_label: str,
        key_label: str,
        public_key: CaPublicKey,
        entries: list[PoolEntry],
        slot_id: int,
        thread_safe_module: bool,
        pin: str = "",
        session_wait: float = DEFAULT_SESSION_WAIT,
        sign_timeout: float = DEFAULT_SIGN_TIMEOUT,
    ) -> None:
        """Use :meth:`open`; this only wires up what it found.  The PIN is kept to log in
        again after the token comes back (:meth:`_reopen`)."""
        self._module_path = module
        self._state = module_state(module)
        self._token_label = token_label
        self._key_label = key_label
        super().__init__(public_key)
        self._slot_id = slot_id
        self._thread_safe = thread_safe_module
        self._pool_size = len(entries)
        self._pool: asyncio.Queue[PoolEntry] = asyncio.Queue()
        for entry in entries:
            self._pool.put_nowait(entry)
        self._closed = False
        self._pin = pin
        self._session_wait = session_wait
        self._sign_timeout = sign_timeout
        #: The module generation our sessions belong to, and the one our last reopen saw.
        self._generation = self._state.generation
        self._seen_generation = self._state.generation
        #: A signature failed inside the module: reopen before the next one.
        self._stale = False
        self._reopen_lock = asyncio.Lock()

    @classmethod
    async def open(
        cls,
        module: str | Path,
        token_label: str,
        key_label: str,
        pin: str,
        *,
        pool_size: int = 2,
        thread_safe_module: bool = False,
        session_wait: float = DEFAULT_SESSION_WAIT,
        sign_timeout: float = DEFAULT_SIGN_TIMEOUT,
    ) -> Pkcs11Signer:
        """Log in, open ``pool_size`` sessions, find the key pair by label and self-test it.

        ``thread_safe_module=True`` lets signatures run in parallel; use it only for modules
        documented as thread-safe even after ``C_Initialize(NULL)`` (SoftHSM2 is not).
        """
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")

        def work() -> tuple[str, list[PoolEntry], CaPublicKey, int]:
            path, state = resolve_module(module)
            with state.lock:
                entries, public_key, slot_id = open_entries(
                    path, state, token_label, key_label, pin, pool_size
                )
                warn_if_exportable(entries[0].key, key_label)
            return path, entries, public_key, slot_id

        future = in_thread(work)
        try:
            path, entries, public_key, slot_id = await asyncio.shield(future)
        except asyncio.CancelledError:
            # The thread runs on; when it has opened everything, give it all back.
            future.add_done_callback(discard_opened)
            raise
        signer = cls(
            module=path,
            token_label=token_label,
            key_label=key_label,
            public_key=public_key,
            entries=entries,
            slot_id=slot_id,
            thread_safe_module=thread_safe_module,
            pin=pin,
            session_wait=session_wait,
            sign_timeout=sign_timeout,
        )
        try:
            # Proves the private key found by label belongs to the public key found by label.
            await signer.sign(_SELF_TEST_DATA, default_hash(public_key))
        except BaseException:
            await signer.aclose()
            raise
        _log.info(
            "signer.pkcs11.opened",
            module=path,
            token=token_label,
            key_label=key_label,
            key_type=signer.key_type,
            pool_size=pool_size,
            spki_sha256=spki_sha256_hex(public_key),
        )
        return signer

    @property
    def pool_size(self) -> int:
        return self._pool_size

    async def sign(self, data: bytes, hash: HashName) -> bytes:
        return await metrics.measured_signature("pkcs11", self._key_label, self._sign(data, hash))

    async def _sign(self, data: bytes, hash: HashName) -> bytes:
        check_hash(self._public_key, hash)
        if self._closed:
            raise SignerError("signer is closed")
        if self._stale or self._generation != self._state.generation:
            await self._reopen()
        try:
            entry = await asyncio.wait_for(self._pool.get(), self._session_wait)
        except TimeoutError:
            raise SignerError(
                f"no PKCS#11 session of key {self._key_label!r} free within "
                f"{self._session_wait:g} s"
            ) from None
        try:
            future = in_thread(functools.partial(self._sign_blocking, entry, data, hash))
        except BaseException:
            self._pool.put_nowait(entry)
            raise
        # The session goes back when the thread is done with it, not when the caller stops
        # waiting; shield() keeps a cancelled caller from cancelling a job still queued in the
        # executor, which would never run and so never hand the session back.
        future.add_done_callback(functools.partial(self._returned, entry))
        try:
            return await asyncio.wait_for(asyncio.shield(future), self._sign_timeout)
        except TimeoutError:
            # The call hangs in the module: its session comes back if it ever returns; the
            # next signature reopens. The job backs off instead of holding its lease forever.
            self._stale = True
            raise SignerError(
                f"PKCS#11 signing with key {self._key_label!r} did not return within "
                f"{self._sign_timeout:g} s"
            ) from None

    def _returned(self, entry: PoolEntry, future: asyncio.Future[bytes]) -> None:
        """A signature ended: its session goes back; a failure inside the module (token
        removed, HSM reset, session lost) marks the sessions for reopening."""
        error = None if future.cancelled() else future.exception()
        if error is not None and isinstance(error.__cause__, PKCS11Error):
            self._stale = True
        self._pool.put_nowait(entry)

    async def _reopen(self) -> None:
        """Re-initialise the module (unless another signer did since our last try), log in
        again and open fresh sessions on the same key; raises :class:`SignerError` while
        the token is still absent, so the job backs off and a later signature tries again.

        The old sessions are dropped, never closed: after a re-initialisation their handle
        numbers may belong to new sessions."""
        async with self._reopen_lock:
            if not self._stale and self._generation == self._state.generation:
                return  # another signature reopened meanwhile
            old: list[PoolEntry] = []
            try:
                async with asyncio.timeout(self._session_wait):
                    while len(old) < self._pool_size:  # signatures in flight finish first
                        old.append(await self._pool.get())
            except TimeoutError:
                for entry in old:
                    self._pool.put_nowait(entry)
                raise SignerError(
                    f"PKCS#11 sessions of key {self._key_label!r} still busy after "
                    f"{self._session_wait:g} s; not reopened"
                ) from None
            seen = self._seen_generation

            def work() -> tuple[int, list[PoolEntry], CaPublicKey, int]:
                with self._state.lock:
                    if self._state.generation == seen:
                        pkcs11.lib(self._module_path).reinitialize()
                        self._state.generation += 1
                        self._state.logins.clear()
                    entries, public_key, slot_id = open_entries(
                        self._module_path,
                        self._state,
                        self._token_label,
                        self._key_label,
                        self._pin,
                        self._pool_size,
                    )
                    return self._state.generation, entries, public_key, slot_id

            try:
                generation, entries, public_key, slot_id = await asyncio.shield(in_thread(work))
            except (SignerError, PKCS11Error) as e:
                self._seen_generation = self._state.generation
                for entry in old:
                    self._pool.put_nowait(entry)
                _log.warning(
                    "signer.pkcs11.reopen_failed",
                    key_label=self._key_label,
                    error=str(e) or type(e).__name__,
                )
                raise SignerError(
                    f"PKCS#11 token {self._token_label!r} unavailable: {str(e) or type(e).__name__}"
                ) from e
            if spki_sha256_hex(public_key) != spki_sha256_hex(self._public_key):
                for entry in old:
                    self._pool.put_nowait(entry)
                raise SignerError(
                    f"the token's key {self._key_label!r} is not the key this signer opened"
                )
            self._generation = self._seen_generation = generation
            self._slot_id = slot_id
            self._stale = False
            for entry in entries:
                self._pool.put_nowait(entry)
            _log.warning(
                "signer.pkcs11.reopened",
                key_label=self._key_label,
                token=self._token_label,
                generation=generation,
            )

    def _sign_blocking(self, entry: PoolEntry, data: bytes, hash: HashName) -> bytes:
        lock: contextlib.AbstractContextManager[object] = (
            contextlib.nullcontext() if self._thread_safe else self._state.lock
        )
        try:
            if isinstance(self._public_key, rsa.RSAPublicKey):
                with lock:
                    signature = entry.key.sign(data, mechanism=_RSA_MECHANISMS[hash])
            else:
                # Hash here and use plain CKM_ECDSA: SoftHSM2 and several HSMs lack
                # CKM_ECDSA_SHA256/384, and the digest of a TBS is no secret.
                digest = hashlib.new(hash, data).digest()
                with lock:
                    raw = entry.key.sign(digest, mechanism=Mechanism.ECDSA)
                signature = _ecdsa_raw_to_der(raw, self._public_key)
        except PKCS11Error as e:
            raise SignerError(
                f"PKCS#11 signing with key {self._key_label!r} failed: {type(e).__name__}"
            ) from e
        verify_signature(self._public_key, signature, data, hash)
        return signature

    async def aclose(self) -> None:
        """Wait for signatures in flight, then close the sessions and drop the login."""
        if self._closed:
            return
        self._closed = True
        entries = [await self._pool.get() for _ in range(self._pool_size)]
        if self._generation != self._state.generation:
            return  # the module was re-initialised: those sessions and that login are gone
        await asyncio.shield(
            in_thread(functools.partial(close_entries, self._module_path, entries, self._slot_id))
        )

    async def __aenter__(self) -> Pkcs11Signer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


_KEY_SPECS: Final[Mapping[KeySpec, tuple[pkcs11.KeyType, int | None, str | None]]] = {
    "rsa2048": (pkcs11.KeyType.RSA, 2048, None),
    "rsa3072": (pkcs11.KeyType.RSA, 3072, None),
    "ec-p256": (pkcs11.KeyType.EC, None, "secp256r1"),
    "ec-p384": (pkcs11.KeyType.EC, None, "secp384r1"),
}


async def generate_pkcs11_key(
    module: str | Path, token_label: str, pin: str, key_label: str, key_type: KeySpec
) -> CaPublicKey:
    """Create a sensitive, non-extractable signing key pair in the token; return its public key.

    Refuses a label already in use, since :class:`Pkcs11Signer` finds keys by label alone.
    python-pkcs11's default private template sets CKA_SENSITIVE but not CKA_EXTRACTABLE, so
    both are set here explicitly.
    """
    if key_type not in _KEY_SPECS:
        raise ValueError(f"unknown key type {key_type!r}")
    p11_type, bits, curve = _KEY_SPECS[key_type]
    key_id = secrets.token_bytes(16)  # pairs the halves for tools that match on CKA_ID

    def work() -> CaPublicKey:
        path, state = resolve_module(module)
        with state.lock:
            token = load_token(path, token_label)
            slot_id = login(state, token, pin)
            try:
                with token.open(rw=True) as session:
                    if next(session.get_objects({Attribute.LABEL: key_label}), None) is not None:
                        raise SignerError(f"an object labelled {key_label!r} already exists")
                    public_template: dict[Attribute, Any] = {
                        Attribute.TOKEN: True,
                        Attribute.PRIVATE: False,
                    }
                    if curve is not None:
                        public_template[Attribute.EC_PARAMS] = EC_PARAMS[curve]
                    try:
                        public, _private = session.generate_keypair(
                            p11_type,
                            bits,
                            id=key_id,
                            label=key_label,
                            store=True,
                            capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
                            public_template=public_template,
                            private_template={
                                Attribute.TOKEN: True,
                                Attribute.PRIVATE: True,
                                Attribute.SENSITIVE: True,
                                Attribute.EXTRACTABLE: False,
                            },
                        )
                    except PKCS11Error as e:
                        raise SignerError(
                            f"PKCS#11 key generation ({key_type}) failed: {type(e).__name__}"
                        ) from e
                    return public_key_from_token(public)
            finally:
                logout(state, slot_id)

    public_key = await asyncio.to_thread(work)
    _log.info(
        "signer.pkcs11.key_generated",
        token=token_label,
        key_label=key_label,
        key_type=key_type,
        spki_sha256=spki_sha256_hex(public_key),
    )
    return public_key
