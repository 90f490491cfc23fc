"""PKCS#11 module, token, login and session bookkeeping for the HSM signer.

python-pkcs11 allows one ``C_Initialize`` per loaded library and shares a token's login
between all of its sessions, so this module keeps, per canonical module path, the lock that
serialises calls into it, the logins held (one ``C_Login`` per token, counted by user) and
the generation bumped at each re-initialisation; it opens a pool of sessions on a key pair
found by label, rebuilds the public key from the token, and closes and logs out again.
:class:`acme_ca.ca.pkcs11_signer.Pkcs11Signer` signs through these sessions and reopens them
after a token loss.  The PKCS#11 calls here block: callers run them in a worker thread
(:func:`in_thread`), holding the module's lock where a docstring says so.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import hmac
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar, cast

import pkcs11
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pkcs11 import Attribute, Mechanism, ObjectClass
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

from acme_ca.ca.signer import CaPublicKey, SignerError, key_type_of
from acme_ca.log import get_logger

# The signer's name: these events are the signer's (signer.pkcs11.*), wherever they happen.
_log = get_logger("acme_ca.ca.pkcs11_signer")
_T = TypeVar("_T")

#: DER of the namedCurve OIDs as CKA_EC_PARAMS holds them.
EC_PARAMS: Final[Mapping[str, bytes]] = {
    "secp256r1": bytes.fromhex("06082a8648ce3d030107"),
    "secp384r1": bytes.fromhex("06052b81040022"),
}
CURVES: Final[Mapping[str, ec.EllipticCurve]] = {
    "secp256r1": ec.SECP256R1(),
    "secp384r1": ec.SECP384R1(),
}


class SigningKey(Protocol):
    """What python-pkcs11 mixes into a private key object at run time (its stubs lack it)."""

    def sign(self, data: bytes, *, mechanism: Mechanism) -> bytes: ...

    def __getitem__(self, key: Attribute) -> Any: ...


@dataclass
class Login:
    """One C_Login per token per process: PKCS#11 login state is shared by every session."""

    session: pkcs11.Session
    pin_digest: bytes
    users: int


@dataclass
class ModuleState:
    """Per-module state: the lock serialising calls, and the token logins we hold."""

    lock: threading.Lock
    logins: dict[int, Login]
    #: Bumped at each re-initialisation (C_Finalize + C_Initialize), which invalidates every
    #: session and login opened before it.
    generation: int = 0


_MODULES: dict[str, ModuleState] = {}
_MODULES_LOCK = threading.Lock()


def module_state(path: str) -> ModuleState:
    with _MODULES_LOCK:
        return _MODULES.setdefault(path, ModuleState(threading.Lock(), {}))


def open_entries(
    path: str, state: ModuleState, token_label: str, key_label: str, pin: str, pool_size: int
) -> tuple[list[PoolEntry], CaPublicKey, int]:
    """Log in, open ``pool_size`` sessions and find the key pair by label; caller holds
    ``state.lock``.  Returns the sessions with their key objects, the public key, the slot."""
    token = load_token(path, token_label)
    slot_id = login(state, token, pin)
    sessions: list[pkcs11.Session] = []
    try:
        for _ in range(pool_size):
            sessions.append(token.open())  # no PIN: the token is logged in
        entries = [
            PoolEntry(s, cast(SigningKey, _find_key(s, ObjectClass.PRIVATE_KEY, key_label)))
            for s in sessions
        ]
        public = _find_key(sessions[0], ObjectClass.PUBLIC_KEY, key_label)
        public_key = public_key_from_token(public)
        key_type_of(public_key)
    except BaseException:
        _close_quietly(sessions)
        logout(state, slot_id)
        raise
    return entries, public_key, slot_id


def resolve_module(module: str | Path) -> tuple[str, ModuleState]:
    """One canonical path per module, so one lock and one login table per loaded library.

    python-pkcs11 caches libraries by path string; a second C_Initialize of the same module
    loaded under another name fails.
    """
    path = os.path.realpath(module)
    return path, module_state(path)


def load_token(module: str, token_label: str) -> pkcs11.Token:
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


def login(state: ModuleState, token: pkcs11.Token, pin: str) -> int:
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
    state.logins[slot_id] = Login(session, digest, 1)
    return slot_id


def logout(state: ModuleState, slot_id: int) -> None:
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


def public_key_from_token(key: Any) -> CaPublicKey:
    """Rebuild the public key from CKA_* attributes so cryptography can build the SPKI."""
    key_type = key[Attribute.KEY_TYPE]
    if key_type == pkcs11.KeyType.RSA:
        n = int.from_bytes(key[Attribute.MODULUS], "big")
        e = int.from_bytes(key[Attribute.PUBLIC_EXPONENT], "big")
        return rsa.RSAPublicNumbers(e, n).public_key()
    if key_type == pkcs11.KeyType.EC:
        params = bytes(key[Attribute.EC_PARAMS])
        names = [name for name, der in EC_PARAMS.items() if der == params]
        if not names:
            raise SignerError(f"EC key on an unsupported curve (CKA_EC_PARAMS {params.hex()})")
        curve = CURVES[names[0]]
        point = bytes(key[Attribute.EC_POINT])
        width = 1 + 2 * ((curve.key_size + 7) // 8)
        if len(point) == 2 + width and point[:2] == bytes([0x04, width]):
            point = point[2:]  # the DER OCTET STRING PKCS#11 asks for; some modules omit it
        try:
            return ec.EllipticCurvePublicKey.from_encoded_point(curve, point)
        except ValueError as e:
            raise SignerError(f"cannot decode CKA_EC_POINT {point.hex()}") from e
    raise SignerError(f"unsupported PKCS#11 key type {key_type!r}")


@dataclass(frozen=True)
class PoolEntry:
    """An open session and the private key object found through it."""

    session: pkcs11.Session
    key: SigningKey


def in_thread(fn: Callable[[], _T]) -> asyncio.Future[_T]:
    """Run ``fn`` in the default executor with the caller's context, as ``to_thread`` does.

    Returns the future itself, so callers can shield it and attach clean-up.
    """
    context = contextvars.copy_context()
    return asyncio.get_running_loop().run_in_executor(None, context.run, fn)


def close_entries(module: str, entries: list[PoolEntry], slot_id: int) -> None:
    state = module_state(module)
    with state.lock:
        _close_quietly([e.session for e in entries])
        logout(state, slot_id)


def discard_opened(future: asyncio.Future[tuple[str, list[PoolEntry], CaPublicKey, int]]) -> None:
    """Close what a cancelled :meth:`Pkcs11Signer.open` opened after its caller left."""
    if future.cancelled() or future.exception() is not None:
        return
    path, entries, _, slot_id = future.result()
    # Nobody is left to await this; closing logs its own failures.
    future.get_loop().run_in_executor(None, close_entries, path, entries, slot_id)


def warn_if_exportable(key: SigningKey, label: str) -> None:
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
