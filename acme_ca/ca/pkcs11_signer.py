"""The HSM signer: CA keys in a PKCS#11 token (:class:`Pkcs11Signer`, :func:`generate_pkcs11_key`).

It implements :class:`acme_ca.ca.signer.Signer`; like the software signer it returns X.509-form
signatures and checks every one with the public key before returning it, so a faulty HSM (an
RSA-CRT fault leaks the key) never reaches a certificate.

python-pkcs11 calls block, so each one runs in a worker thread.  python-pkcs11 always
calls ``C_Initialize(NULL)``, which promises the module single-threaded use (SoftHSM2 then turns
its own locks off), so calls into one module are serialised by a process-wide lock unless the
caller vouches that the module is thread-safe anyway (``thread_safe_module=True``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import hashlib
import hmac
import os
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Protocol, TypeVar, cast

import pkcs11
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pkcs11 import Attribute, Mechanism, MechanismFlag, ObjectClass
from pkcs11.exceptions import (
    MultipleObjectsReturned,
    MultipleTokensReturned,
    NoSuchKey,
    NoSuchToken,
    PinIncorrect,
    PinLenRange,
    PinLocked,
    PKCS11Error,
    UserAlreadyLoggedIn,
)

from acme_ca import metrics
from acme_ca.ca.signer import (
    CaPublicKey,
    HashName,
    KeySpec,
    KeyType,
    SignerError,
    check_hash,
    default_hash,
    key_type_of,
    signature_algorithm_der,
    spki_sha256_hex,
    verify_signature,
    warn_if_loose,
)
from acme_ca.log import get_logger

_log = get_logger(__name__)
_T = TypeVar("_T")

#: DER of the namedCurve OIDs as CKA_EC_PARAMS holds them.
_EC_PARAMS: Final[Mapping[str, bytes]] = {
    "secp256r1": bytes.fromhex("06082a8648ce3d030107"),
    "secp384r1": bytes.fromhex("06052b81040022"),
}
_CURVES: Final[Mapping[str, ec.EllipticCurve]] = {
    "secp256r1": ec.SECP256R1(),
    "secp384r1": ec.SECP384R1(),
}
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


class _SigningKey(Protocol):
    """What python-pkcs11 mixes into a private key object at run time (its stubs lack it)."""

    def sign(self, data: bytes, *, mechanism: Mechanism) -> bytes: ...

    def __getitem__(self, key: Attribute) -> Any: ...


@dataclass
class _Login:
    """One C_Login per token per process: PKCS#11 login state is shared by every session."""

    session: pkcs11.Session
    pin_digest: bytes
    users: int


@dataclass
class _Module:
    """Per-module state: the lock serialising calls, and the token logins we hold."""

    lock: threading.Lock
    logins: dict[int, _Login]
    #: Bumped at each re-initialisation (C_Finalize + C_Initialize), which invalidates every
    #: session and login opened before it.
    generation: int = 0


_MODULES: dict[str, _Module] = {}
_MODULES_LOCK = threading.Lock()


def _module(path: str) -> _Module:
    with _MODULES_LOCK:
        return _MODULES.setdefault(path, _Module(threading.Lock(), {}))


def _open_entries(
    path: str, state: _Module, token_label: str, key_label: str, pin: str, pool_size: int
) -> tuple[list[_PoolEntry], CaPublicKey, int]:
    """Log in, open ``pool_size`` sessions and find the key pair by label; caller holds
    ``state.lock``.  Returns the sessions with their key objects, the public key, the slot."""
    token = _load_token(path, token_label)
    slot_id = _login(state, token, pin)
    sessions: list[pkcs11.Session] = []
    try:
        for _ in range(pool_size):
            sessions.append(token.open())  # no PIN: the token is logged in
        entries = [
            _PoolEntry(s, cast(_SigningKey, _find_key(s, ObjectClass.PRIVATE_KEY, key_label)))
            for s in sessions
        ]
        public = _find_key(sessions[0], ObjectClass.PUBLIC_KEY, key_label)
        public_key = _public_key_from_token(public)
        key_type_of(public_key)
    except BaseException:
        _close_quietly(sessions)
        _logout(state, slot_id)
        raise
    return entries, public_key, slot_id


def _resolve_module(module: str | Path) -> tuple[str, _Module]:
    """One canonical path per module, so one lock and one login table per loaded library.

    python-pkcs11 caches libraries by path string; a second C_Initialize of the same module
    loaded under another name fails.
    """
    path = os.path.realpath(module)
    return path, _module(path)


def _load_token(module: str, token_label: str) -> pkcs11.Token:
    try:
        lib = pkcs11.lib(module)
    except PKCS11Error as e:
        raise SignerError(f"cannot load PKCS#11 module {module}: {e}") from e
    try:
        return lib.get_token(token_label=token_label)
    except NoSuchToken as e:
        raise SignerError(f"no token labelled {token_label!r} in {module}") from e
    except MultipleTokensReturned as e:
        raise SignerError(f"more than one token labelled {token_label!r} in {module}") from e


def _login(state: _Module, token: pkcs11.Token, pin: str) -> int:
    """Log in to ``token`` or join an existing login; caller holds ``state.lock``."""
    slot_id = token.slot.slot_id
    digest = hashlib.sha256(pin.encode()).digest()
    held = state.logins.get(slot_id)
    if held is not None:
        if not hmac.compare_digest(held.pin_digest, digest):
            raise SignerError(
                f"token {token.label!r} is already logged in by this process with another PIN"
            )
        held.users += 1
        return slot_id
    what = f"PKCS#11 login to token {token.label!r} failed"
    try:
        session = token.open(user_pin=pin)
    except PinIncorrect as e:
        raise SignerError(f"{what}: incorrect PIN") from e
    except PinLocked as e:
        raise SignerError(f"{what}: PIN is locked (too many wrong attempts)") from e
    except PinLenRange as e:
        raise SignerError(f"{what}: PIN has the wrong length") from e
    except UserAlreadyLoggedIn as e:
        raise SignerError(
            f"{what}: already logged in by code outside acme_ca.ca.signer in this process"
        ) from e
    except PKCS11Error as e:
        raise SignerError(f"{what}: {type(e).__name__}") from e
    state.logins[slot_id] = _Login(session, digest, 1)
    return slot_id


def _logout(state: _Module, slot_id: int) -> None:
    """Drop one user of a login; the last one logs out.  Caller holds ``state.lock``."""
    held = state.logins[slot_id]
    held.users -= 1
    if held.users == 0:
        del state.logins[slot_id]
        try:
            held.session.close()  # C_Logout, then C_CloseSession
        except PKCS11Error as e:
            _log.warning("signer.pkcs11.logout_failed", error=type(e).__name__)


def _close_quietly(sessions: list[pkcs11.Session]) -> None:
    for session in sessions:
        try:
            session.close()
        except PKCS11Error as e:
            _log.warning("signer.pkcs11.close_failed", error=type(e).__name__)


def _find_key(session: pkcs11.Session, object_class: ObjectClass, label: str) -> Any:
    kind = "private" if object_class == ObjectClass.PRIVATE_KEY else "public"
    try:
        return session.get_key(object_class=object_class, label=label)
    except NoSuchKey as e:
        raise SignerError(f"no {kind} key labelled {label!r} on the token") from e
    except MultipleObjectsReturned as e:
        raise SignerError(f"more than one {kind} key labelled {label!r} on the token") from e


def _public_key_from_token(key: Any) -> CaPublicKey:
    """Rebuild the public key from CKA_* attributes so cryptography can build the SPKI."""
    key_type = key[Attribute.KEY_TYPE]
    if key_type == pkcs11.KeyType.RSA:
        n = int.from_bytes(key[Attribute.MODULUS], "big")
        e = int.from_bytes(key[Attribute.PUBLIC_EXPONENT], "big")
        return rsa.RSAPublicNumbers(e, n).public_key()
    if key_type == pkcs11.KeyType.EC:
        params = bytes(key[Attribute.EC_PARAMS])
        names = [name for name, der in _EC_PARAMS.items() if der == params]
        if not names:
            raise SignerError(f"EC key on an unsupported curve (CKA_EC_PARAMS {params.hex()})")
        curve = _CURVES[names[0]]
        point = bytes(key[Attribute.EC_POINT])
        width = 1 + 2 * ((curve.key_size + 7) // 8)
        if len(point) == 2 + width and point[:2] == bytes([0x04, width]):
            point = point[2:]  # the DER OCTET STRING PKCS#11 asks for; some modules omit it
        try:
            return ec.EllipticCurvePublicKey.from_encoded_point(curve, point)
        except ValueError as e:
            raise SignerError(f"cannot decode CKA_EC_POINT {point.hex()}") from e
    raise SignerError(f"unsupported PKCS#11 key type {key_type!r}")


def _ecdsa_raw_to_der(raw: bytes, public_key: ec.EllipticCurvePublicKey) -> bytes:
    """PKCS#11 gives ECDSA as r||s, each as wide as the order; X.509 wants Ecdsa-Sig-Value."""
    size = (public_key.curve.key_size + 7) // 8
    if len(raw) != 2 * size:
        raise SignerError(f"ECDSA signature of {len(raw)} bytes from the HSM, wanted {2 * size}")
    return encode_dss_signature(
        int.from_bytes(raw[:size], "big"), int.from_bytes(raw[size:], "big")
    )


@dataclass(frozen=True)
class _PoolEntry:
    """An open session and the private key object found through it."""

    session: pkcs11.Session
    key: _SigningKey


class Pkcs11Signer:
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
        entries: list[_PoolEntry],
        slot_id: int,
        thread_safe_module: bool,
        pin: str = "",
        session_wait: float = DEFAULT_SESSION_WAIT,
        sign_timeout: float = DEFAULT_SIGN_TIMEOUT,
    ) -> None:
        """Use :meth:`open`; this only wires up what it found.  The PIN is kept to log in
        again after the token comes back (:meth:`_reopen`)."""
        self._module_path = module
        self._state = _module(module)
        self._token_label = token_label
        self._key_label = key_label
        self._public_key = public_key
        self._key_type = key_type_of(public_key)
        self._slot_id = slot_id
        self._thread_safe = thread_safe_module
        self._pool_size = len(entries)
        self._pool: asyncio.Queue[_PoolEntry] = asyncio.Queue()
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

        def work() -> tuple[str, list[_PoolEntry], CaPublicKey, int]:
            path, state = _resolve_module(module)
            with state.lock:
                entries, public_key, slot_id = _open_entries(
                    path, state, token_label, key_label, pin, pool_size
                )
                _warn_if_exportable(entries[0].key, key_label)
            return path, entries, public_key, slot_id

        future = _in_thread(work)
        try:
            path, entries, public_key, slot_id = await asyncio.shield(future)
        except asyncio.CancelledError:
            # The thread runs on; when it has opened everything, give it all back.
            future.add_done_callback(_discard_opened)
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
    def key_type(self) -> KeyType:
        return self._key_type

    @property
    def public_key(self) -> CaPublicKey:
        return self._public_key

    @property
    def pool_size(self) -> int:
        return self._pool_size

    def signature_algorithm_der(self, hash: HashName) -> bytes:
        return signature_algorithm_der(self._public_key, hash)

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
            future = _in_thread(functools.partial(self._sign_blocking, entry, data, hash))
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

    def _returned(self, entry: _PoolEntry, future: asyncio.Future[bytes]) -> None:
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
            old: list[_PoolEntry] = []
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

            def work() -> tuple[int, list[_PoolEntry], CaPublicKey, int]:
                with self._state.lock:
                    if self._state.generation == seen:
                        pkcs11.lib(self._module_path).reinitialize()
                        self._state.generation += 1
                        self._state.logins.clear()
                    entries, public_key, slot_id = _open_entries(
                        self._module_path,
                        self._state,
                        self._token_label,
                        self._key_label,
                        self._pin,
                        self._pool_size,
                    )
                    return self._state.generation, entries, public_key, slot_id

            try:
                generation, entries, public_key, slot_id = await asyncio.shield(_in_thread(work))
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

    def _sign_blocking(self, entry: _PoolEntry, data: bytes, hash: HashName) -> bytes:
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
            _in_thread(functools.partial(_close_entries, self._module_path, entries, self._slot_id))
        )

    async def __aenter__(self) -> Pkcs11Signer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _in_thread(fn: Callable[[], _T]) -> asyncio.Future[_T]:
    """Run ``fn`` in the default executor with the caller's context, as ``to_thread`` does.

    Returns the future itself, so callers can shield it and attach clean-up.
    """
    context = contextvars.copy_context()
    return asyncio.get_running_loop().run_in_executor(None, context.run, fn)


def _close_entries(module: str, entries: list[_PoolEntry], slot_id: int) -> None:
    state = _module(module)
    with state.lock:
        _close_quietly([e.session for e in entries])
        _logout(state, slot_id)


def _discard_opened(future: asyncio.Future[tuple[str, list[_PoolEntry], CaPublicKey, int]]) -> None:
    """Close what a cancelled :meth:`Pkcs11Signer.open` opened after its caller left."""
    if future.cancelled() or future.exception() is not None:
        return
    path, entries, _, slot_id = future.result()
    # Nobody is left to await this; closing logs its own failures.
    future.get_loop().run_in_executor(None, _close_entries, path, entries, slot_id)


def _warn_if_exportable(key: _SigningKey, label: str) -> None:
    """A CA key that can leave the HSM defeats the HSM; say so at every start."""
    try:
        sensitive = bool(key[Attribute.SENSITIVE])
        extractable = bool(key[Attribute.EXTRACTABLE])
    except PKCS11Error:
        return
    if extractable or not sensitive:
        _log.warning(
            "signer.pkcs11.key_exportable",
            key_label=label,
            sensitive=sensitive,
            extractable=extractable,
        )


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
        path, state = _resolve_module(module)
        with state.lock:
            token = _load_token(path, token_label)
            slot_id = _login(state, token, pin)
            try:
                with token.open(rw=True) as session:
                    if next(session.get_objects({Attribute.LABEL: key_label}), None) is not None:
                        raise SignerError(f"an object labelled {key_label!r} already exists")
                    public_template: dict[Attribute, Any] = {
                        Attribute.TOKEN: True,
                        Attribute.PRIVATE: False,
                    }
                    if curve is not None:
                        public_template[Attribute.EC_PARAMS] = _EC_PARAMS[curve]
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
                    return _public_key_from_token(public)
            finally:
                _logout(state, slot_id)

    public_key = await asyncio.to_thread(work)
    _log.info(
        "signer.pkcs11.key_generated",
        token=token_label,
        key_label=key_label,
        key_type=key_type,
        spki_sha256=spki_sha256_hex(public_key),
    )
    return public_key
