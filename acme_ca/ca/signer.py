"""The CA's signing keys: one :class:`Signer` protocol, its algorithm rules, and a test signer.

Production keys live in an HSM reached over PKCS#11
(:class:`acme_ca.ca.pkcs11_signer.Pkcs11Signer`); :class:`SoftwareSigner` exists only for the
embedded default and says so loudly.  Both return signatures in X.509 form and check every
signature with the public key (:func:`verify_signature`) before returning it, so a faulty HSM
(an RSA-CRT fault leaks the key) never reaches a certificate.
"""

from __future__ import annotations

import asyncio
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final, Literal, Protocol, get_args

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from acme_ca import metrics
from acme_ca.keyid import spki_sha256
from acme_ca.localca import key_pem, write_new
from acme_ca.log import get_logger

_log = get_logger(__name__)

KeyType = Literal["rsa", "ec"]
HashName = Literal["sha256", "sha384"]
#: Key kinds ``acme-ca init`` can create, in the HSM or (test CA only) on disk.
KeySpec = Literal["rsa2048", "rsa3072", "ec-p256", "ec-p384"]
CaPublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
CaPrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

#: AlgorithmIdentifier DER per key type and hash, byte for byte as CA/B Forum BR 7.1.3.2 lists
#: them: RSA with an explicit NULL parameter, ECDSA with the parameters absent.
SIGNATURE_ALGORITHMS: Final[Mapping[tuple[KeyType, HashName], bytes]] = {
    ("rsa", "sha256"): bytes.fromhex("300d06092a864886f70d01010b0500"),
    ("rsa", "sha384"): bytes.fromhex("300d06092a864886f70d01010c0500"),
    ("ec", "sha256"): bytes.fromhex("300a06082a8648ce3d040302"),
    ("ec", "sha384"): bytes.fromhex("300a06082a8648ce3d040303"),
}

#: BR 7.1.3.2.2 ties each curve to one hash; RSA keys may use either hash.
_CURVE_HASH: Final[Mapping[str, HashName]] = {"secp256r1": "sha256", "secp384r1": "sha384"}
_MIN_RSA_BITS: Final = 2048


class SignerError(Exception):
    """The signer cannot be opened or used; the message is meant for the operator."""


class SignatureCheckFailed(SignerError):
    """A fresh signature did not verify with the public key; it was withheld."""


class Signer(Protocol):
    """The one thing the CA may do with its private key: sign bytes it has prepared."""

    @property
    def key_type(self) -> KeyType: ...

    @property
    def public_key(self) -> CaPublicKey: ...

    async def sign(self, data: bytes, hash: HashName) -> bytes:
        """Sign ``data``: RSA PKCS#1 v1.5, or ECDSA as a DER Ecdsa-Sig-Value."""
        ...

    def signature_algorithm_der(self, hash: HashName) -> bytes:
        """The BR AlgorithmIdentifier DER that matches :meth:`sign` with ``hash``."""
        ...

    async def aclose(self) -> None:
        """Release sessions or handles; the signer cannot sign afterwards."""
        ...


def key_type_of(public_key: CaPublicKey) -> KeyType:
    """Classify a CA key, refusing what the BRs do not allow (small RSA, other curves)."""
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < _MIN_RSA_BITS or public_key.key_size % 8:
            raise SignerError(f"RSA key of {public_key.key_size} bits is not allowed for a CA")
        return "rsa"
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if public_key.curve.name not in _CURVE_HASH:
            raise SignerError(f"curve {public_key.curve.name} is not allowed for a CA")
        return "ec"
    raise SignerError(f"unsupported CA key type {type(public_key).__name__}")


def check_hash(public_key: CaPublicKey, hash: HashName) -> None:
    """Reject hashes the BRs do not pair with this key (P-256 needs SHA-256, P-384 SHA-384)."""
    if hash not in get_args(HashName):
        raise ValueError(f"unsupported hash {hash!r}")
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        wanted = _CURVE_HASH[public_key.curve.name]
        if hash != wanted:
            raise ValueError(f"{public_key.curve.name} keys must sign with {wanted}, not {hash}")


def default_hash(public_key: CaPublicKey) -> HashName:
    """The hash the BRs pair with an EC curve; SHA-256 for RSA."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return _CURVE_HASH[public_key.curve.name]
    return "sha256"


def signature_algorithm_der(public_key: CaPublicKey, hash: HashName) -> bytes:
    """The BR AlgorithmIdentifier DER for this key and hash."""
    check_hash(public_key, hash)
    return SIGNATURE_ALGORITHMS[(key_type_of(public_key), hash)]


def _hash_algorithm(hash: HashName) -> hashes.HashAlgorithm:
    return hashes.SHA256() if hash == "sha256" else hashes.SHA384()


def verify_signature(
    public_key: CaPublicKey, signature: bytes, data: bytes, hash: HashName
) -> None:
    """Raise :class:`SignatureCheckFailed` unless ``signature`` is good for ``data``."""
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, data, padding.PKCS1v15(), _hash_algorithm(hash))
        else:
            public_key.verify(signature, data, ec.ECDSA(_hash_algorithm(hash)))
    except InvalidSignature as e:
        raise SignatureCheckFailed("signature did not verify with the CA public key") from e


def spki_sha256_hex(public_key: CaPublicKey) -> str:
    """The key's SPKI SHA-256 in hex (:func:`acme_ca.keyid.spki_sha256`): how log events
    name a CA key."""
    return spki_sha256(public_key).hex()


# --------------------------------------------------------------------------- software keys


class SignerPublicKey:
    """The public side every :class:`Signer` reports (its key type, the key, and the
    AlgorithmIdentifier of its signatures): a base for the signers and the issuer's public key
    in :mod:`acme_ca.ca.profile`."""

    def __init__(self, public_key: CaPublicKey) -> None:
        self._public_key = public_key
        self._key_type = key_type_of(public_key)

    @property
    def key_type(self) -> KeyType:
        return self._key_type

    @property
    def public_key(self) -> CaPublicKey:
        return self._public_key

    def signature_algorithm_der(self, hash: HashName) -> bytes:
        return signature_algorithm_der(self._public_key, hash)


def _matches(key: CaPrivateKey, key_spec: KeySpec) -> bool:
    """Whether ``key`` is what ``key_spec`` names (type and size or curve)."""
    match key_spec:
        case "rsa2048" | "rsa3072":
            return isinstance(key, rsa.RSAPrivateKey) and key.key_size == int(key_spec[3:])
        case "ec-p256" | "ec-p384":
            curve = "secp256r1" if key_spec == "ec-p256" else "secp384r1"
            return isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == curve
    return False


def _generate_private_key(key_spec: KeySpec) -> CaPrivateKey:
    match key_spec:
        case "rsa2048":
            return rsa.generate_private_key(public_exponent=65537, key_size=2048)
        case "rsa3072":
            return rsa.generate_private_key(public_exponent=65537, key_size=3072)
        case "ec-p256":
            return ec.generate_private_key(ec.SECP256R1())
        case "ec-p384":
            return ec.generate_private_key(ec.SECP384R1())
    raise ValueError(f"unknown key spec {key_spec!r}")


def warn_if_loose(path: Path, what: str) -> None:
    """Log a secret file (key, PIN) that group or others may read."""
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        _log.warning(
            "signer.file_permissions_loose", path=str(path), what=what, mode=oct(mode & 0o777)
        )


def _key_name(path: Path) -> str:
    """``keys/dv-ecc.key.pem`` -> ``dv-ecc``: the name the metrics label the key with."""
    return path.name.removesuffix(".pem").removesuffix(".key")


class SoftwareSigner(SignerPublicKey):
    """A private key in process memory, for the embedded test CA only: never for real issuance."""

    def __init__(self, private_key: CaPrivateKey, *, name: str = "software") -> None:
        """``name`` labels its metrics (the key file's stem)."""
        super().__init__(private_key.public_key())
        self._key = private_key
        self._name = name
        _log.warning(
            "signer.key_not_in_hsm",
            detail="CA private key is held in process memory, NOT in an HSM; "
            "acceptable only for the embedded test CA, never for publicly-trusted issuance",
            key_type=self._key_type,
            spki_sha256=spki_sha256_hex(self._public_key),
        )

    async def sign(self, data: bytes, hash: HashName) -> bytes:
        return await metrics.measured_signature("software", self._name, self._sign(data, hash))

    async def _sign(self, data: bytes, hash: HashName) -> bytes:
        check_hash(self._public_key, hash)
        return await asyncio.to_thread(self._sign_blocking, data, hash)

    def _sign_blocking(self, data: bytes, hash: HashName) -> bytes:
        if isinstance(self._key, rsa.RSAPrivateKey):
            signature = self._key.sign(data, padding.PKCS1v15(), _hash_algorithm(hash))
        else:
            signature = self._key.sign(data, ec.ECDSA(_hash_algorithm(hash)))
        verify_signature(self._public_key, signature, data, hash)
        return signature

    async def aclose(self) -> None:
        """Nothing to release; present so both signers share one lifetime."""

    @classmethod
    async def generate(
        cls,
        key_spec: KeySpec,
        path: Path,
        *,
        supplied: Callable[[KeySpec], CaPrivateKey | None] | None = None,
    ) -> SoftwareSigner:
        """Create a key, write it as unencrypted PKCS#8 PEM with mode 0600; never overwrite.
        ``supplied`` may hand over a fresh key of ``key_spec`` generated elsewhere (``serve
        --test --ephemeral`` makes its RSA keys in a child process while it starts)."""

        def work() -> CaPrivateKey:
            key = supplied(key_spec) if supplied is not None else None
            if key is None or not _matches(key, key_spec):
                key = _generate_private_key(key_spec)
            write_new(path, key_pem(key), 0o600)
            return key

        return cls(await asyncio.to_thread(work), name=_key_name(path))

    @classmethod
    async def load(cls, path: Path) -> SoftwareSigner:
        """Read a PEM key written by :meth:`generate` (or any unencrypted RSA/EC PEM key)."""

        def work() -> CaPrivateKey:
            warn_if_loose(path, "CA private key")
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
                raise SignerError(f"{path}: not an RSA or EC private key")
            return key

        return cls(await asyncio.to_thread(work), name=_key_name(path))
