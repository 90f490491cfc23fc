"""Public-key policy for account keys and CSR keys (BR-KEY-1..3, ACME-JWS-4, ACME-FIN-3).

One :class:`KeyPolicy`, built once from configuration, answers "may this key be used?" for
both purposes, in the manner of Boulder's ``goodkey/good_key.go``.  Every refusal raises
:class:`KeyRejected` with a named :class:`KeyRejectReason`, so tests and logs say *which* rule
fired.  The web layer maps a rejection to ``badPublicKey`` (JWS keys, RFC 8555 §6.2) or
``badCSR`` (finalize, §7.4); :meth:`KeyRejected.to_acme_error` does exactly that.

Rules, in the order they run (cheap and local first, then I/O, then CPU in a thread):

1. Shape.  Account keys: RSA 2048..8192 bits, a multiple of 8, odd e >= 65537 and e < n; or
   EC P-256/P-384/P-521 (the ES256/ES384/ES512 JWS algorithms).  CSR keys: RSA of a
   configured size with e = 65537, or an EC curve from ``ec_curves``.  Everything else
   (Ed25519, DSA, ...) is refused.
2. EC public-key validation (SP 800-56A §5.6.2.3): coordinates in range and on the curve.
   All three NIST curves have cofactor 1, so this partial validation is full validation.
3. Debian weak keys (CVE-2008-0166, BR §6.1.1.3): RSA moduli looked up in lists in the
   Debian ``openssl-blacklist`` format, see :func:`openssl_blacklist_fingerprint`.  Each
   list covers one modulus size, which Debian puts in the file name (``blacklist.RSA-2048``,
   :func:`openssl_blacklist_size`).  With ``debian_weak_rsa_sizes`` (production,
   :mod:`acme_ca.deployment`) an RSA key of a size no list covers is refused: whether it is a
   Debian weak key cannot be known.
4. Our own blocked keys (revoked for keyCompromise, BR §6.1.1.3(4), ACME-REV-3): the injected
   ``blocked_key_lookup`` is asked about :func:`acme_ca.keyid.spki_sha256` of the key.
5. badkeys (https://badkeys.info/), run through :func:`asyncio.to_thread`: Fermat within 100
   rounds (SC-073 "close primes"), ROCA, small factors, primes shared with known-broken keys,
   polynomial-pattern moduli, Wiener-small private exponents, and the badkeys blocklist of
   published/compromised keys when its data files are present.

badkeys data: every check above is pure computation except two.  ``sharedprimes`` reads prime
tables shipped inside the wheel (``badkeys/keydata``, moduli of 512/768/1024/2048/4096 bits
only).  ``blocklist`` needs ``blocklist.dat`` and ``badkeysdata.json`` in badkeys' cache
directory (``$XDG_CACHE_HOME/badkeys`` or ``~/.cache/badkeys``), which only
``badkeys --update-bl`` downloads.  This module never downloads anything: provision those
files at deploy time, or the blocklist check is skipped and a warning is logged once, when
the policy is built.  badkeys calls ``sys.exit`` when the files are missing, so the check is
never called without them.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import os
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Final, Literal

import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from acme_ca.acme.problems import AcmeError, bad_csr, bad_public_key
from acme_ca.keyid import spki_sha256

log = structlog.get_logger(__name__)

Purpose = Literal["account", "csr"]
#: Given the SHA-256 of a key's DER SubjectPublicKeyInfo, true when we blocked that key.
BlockedKeyLookup = Callable[[bytes], Awaitable[bool]]

#: BR §6.1.5: the floor for every RSA key, account or subscriber.
RSA_MIN_BITS: Final = 2048
#: Account keys only sign JWS; the cap bounds verification cost.
ACCOUNT_RSA_MAX_BITS: Final = 8192
#: The only public exponent put in subscriber certificates (CP; inside BR §6.1.6's SHOULD).
SUBSCRIBER_RSA_EXPONENT: Final = 65537
#: Account keys may use any odd exponent from here up (below the modulus).
ACCOUNT_RSA_MIN_EXPONENT: Final = 65537
#: BR §6.1.1.3 (ballot SC-073): reject keys Fermat's method factors within this many rounds.
#: badkeys' ``fermat`` check uses exactly this bound; tests pin it at the boundary.
FERMAT_ROUNDS: Final = 100

DEFAULT_RSA_SIZES: Final = frozenset({2048, 3072, 4096})
DEFAULT_EC_CURVES: Final = frozenset({"P-256", "P-384"})
#: Account keys must match a JWS algorithm we accept (ES256, ES384, ES512; ACME-JWS-3).
#: P-521 is accepted for accounts only, as Boulder and Pebble do; certificate keys follow
#: ``ec_curves`` (P-256/P-384 by default, as the root programs require).
ACCOUNT_EC_CURVES: Final = frozenset({"P-256", "P-384", "P-521"})


class KeyRejectReason(enum.StrEnum):
    """Why a key was refused; one value per rule."""

    UNSUPPORTED_KEY_TYPE = "unsupported_key_type"
    RSA_TOO_SMALL = "rsa_too_small"
    RSA_SIZE_NOT_ALLOWED = "rsa_size_not_allowed"
    RSA_EXPONENT = "rsa_exponent"
    EC_CURVE_NOT_ALLOWED = "ec_curve_not_allowed"
    EC_POINT_INVALID = "ec_point_invalid"
    DEBIAN_WEAK = "debian_weak"
    DEBIAN_WEAK_UNCHECKABLE = "debian_weak_uncheckable"
    BLOCKED = "blocked"
    KNOWN_COMPROMISED = "known_compromised"
    FERMAT_FACTORABLE = "fermat_factorable"
    ROCA = "roca"
    SMALL_FACTOR = "small_factor"
    SHARED_PRIME = "shared_prime"
    POLYNOMIAL_PATTERN = "polynomial_pattern"
    SMALL_PRIVATE_EXPONENT = "small_private_exponent"


class KeyRejected(Exception):
    """A key failed :meth:`KeyPolicy.check`; ``detail`` is safe to show the client.

    Details never carry recovered factors: the CA must not become a factoring oracle for
    somebody else's public key.
    """

    def __init__(self, reason: KeyRejectReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

    def to_acme_error(self, *, purpose: Purpose) -> AcmeError:
        """``badPublicKey`` for a JWS key (ACME-JWS-4), ``badCSR`` for a CSR key (§7.4)."""
        factory = bad_public_key if purpose == "account" else bad_csr
        return AcmeError(factory(f"key rejected: {self.detail}"))


def openssl_blacklist_fingerprint(modulus: int) -> str:
    """The line the Debian ``openssl-blacklist`` lists hold for an RSA modulus.

    Format (openssl-vulnkey(1), package openssl-blacklist 0.5): lower-case hex SHA-1 of the
    text ``openssl rsa -noout -modulus`` prints, i.e. ``"Modulus=" + upper-case hex of n
    without leading zeros + "\\n"``, with the first 20 hex digits removed (the low 80 bits).
    Boulder's ``goodkey/weak.go`` hashes the same string.
    """
    text = f"Modulus={modulus:X}\n".encode("ascii")
    return hashlib.sha1(text, usedforsecurity=False).hexdigest()[20:]


_BLACKLIST_NAME: Final = re.compile(r"blacklist\.RSA-([0-9]+)")


def openssl_blacklist_size(path: Path) -> int | None:
    """The RSA modulus size an ``openssl-blacklist`` file covers, from Debian's file name
    (``/usr/share/openssl-blacklist/blacklist.RSA-2048``); None for any other name."""
    match = _BLACKLIST_NAME.fullmatch(path.name)
    return int(match.group(1)) if match else None


def load_openssl_blacklist(path: Path) -> set[bytes]:
    """Read one ``openssl-blacklist`` file into 10-byte suffixes; malformed lines fail loudly.

    A typo in a weak-key list would silently disable it, so each non-comment line must be
    exactly 20 hex digits (upper case is tolerated).
    """
    suffixes: set[bytes] = set()
    with path.open(encoding="ascii") as lines:
        for number, raw in enumerate(lines, start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            try:
                suffix = bytes.fromhex(line)
            except ValueError:
                suffix = b""
            if len(line) != 20 or len(suffix) != 10:
                raise ValueError(f"{path}:{number}: expected 20 hex digits, got {line!r}")
            suffixes.add(suffix)
    return suffixes


# ---------------------------------------------------------------------------- EC validation
# (p, b) of each NIST prime curve y^2 = x^3 - 3x + b (FIPS 186-5 / SP 800-186 §3.2.1).
_P256_P: Final = 2**256 - 2**224 + 2**192 + 2**96 - 1
_P384_P: Final = 2**384 - 2**128 - 2**96 + 2**32 - 1
_P521_P: Final = 2**521 - 1
_NIST_CURVES: Final[dict[str, tuple[int, int]]] = {
    "P-256": (
        _P256_P,
        0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B,
    ),
    "P-384": (
        _P384_P,
        int(
            "B3312FA7E23EE7E4988E056BE3F82D19181D9C6EFE8141120314088F5013875A"
            "C656398D8A2ED19D2A85C8EDD3EC2AEF",
            16,
        ),
    ),
    "P-521": (
        _P521_P,
        int(
            "0051953EB9618E1C9A1F929A21A0B68540EEA2DA725B99B315F3B8B489918EF1"
            "09E156193951EC7E937B1652C0BD3BB1BF073573DF883D2C34F1EF451FD46B503F00",
            16,
        ),
    ),
}
#: cryptography's (SEC 2) curve names to the NIST names used in configuration.
_CURVE_NAMES: Final = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}


def _ec_point_valid(nist_name: str, x: int, y: int) -> bool:
    """Partial public-key validation; full validation here because every cofactor is 1."""
    p, b = _NIST_CURVES[nist_name]
    if not (0 <= x < p and 0 <= y < p):
        return False
    return (y * y - (x * x * x - 3 * x + b)) % p == 0


# ---------------------------------------------------------------------------- badkeys
# badkeys check name -> our reason, in the order reasons are reported when several fire.
# ``rsainvalid`` is left out: the shape rules already refuse every exponent it flags.
_BADKEYS_REASONS: Final = {
    "blocklist": (KeyRejectReason.KNOWN_COMPROMISED, "key is in the badkeys blocklist"),
    "fermat": (
        KeyRejectReason.FERMAT_FACTORABLE,
        f"modulus factors with Fermat's method within {FERMAT_ROUNDS} rounds (close primes)",
    ),
    "roca": (KeyRejectReason.ROCA, "modulus has the ROCA fingerprint (CVE-2017-15361)"),
    "smallfactors": (KeyRejectReason.SMALL_FACTOR, "modulus has a small prime factor"),
    "sharedprimes": (
        KeyRejectReason.SHARED_PRIME,
        "modulus shares a prime with known vulnerable keys",
    ),
    "rsapoly": (
        KeyRejectReason.POLYNOMIAL_PATTERN,
        "modulus has a zero-byte pattern that allows polynomial factoring",
    ),
    "smalld": (
        KeyRejectReason.SMALL_PRIVATE_EXPONENT,
        "private exponent is small enough for Wiener's attack",
    ),
}
_BADKEYS_DATA_FILES: Final = ("blocklist.dat", "badkeysdata.json")


def badkeys_data_dir() -> Path:
    """Where badkeys looks for its downloaded blocklist (it reads no other location): its
    ``badkeys.utils._cachedir``, restated so that building a policy does not import badkeys
    (~0.03-0.05 s of CPU on ``serve --test``'s path to ready, issue 21 item 8);
    test_key_policy.py pins the two equal."""
    cache = os.getenv("XDG_CACHE_HOME")
    return Path(cache, "badkeys") if cache else Path("~/.cache/badkeys").expanduser()


def _badkeys_blocklist_present() -> bool:
    directory = badkeys_data_dir()
    return all((directory / name).is_file() for name in _BADKEYS_DATA_FILES)


def _badkeys_findings(spki_pem: str, checks: tuple[str, ...]) -> frozenset[str]:
    """Run badkeys (CPU-bound; called in a worker thread) and return the checks that fired.
    badkeys (and gmpy2) load on the first key checked, not at start (issue 21 item 8)."""
    import badkeys

    try:
        result = badkeys.checkpubkey(spki_pem, checks=checks)
    except SystemExit as exc:  # badkeys' reaction to missing data; must not stop the server
        raise RuntimeError("badkeys exited instead of checking the key") from exc
    if "exception" in result:
        raise RuntimeError(f"badkeys could not parse the key: {result.get('errmsg')}")
    return frozenset(result["results"])


class KeyPolicy:
    """Decides whether a public key may be an account key or a subscriber (CSR) key.

    Built once at start-up from configuration: weak-key lists are read here (blocking file
    I/O, so build it before serving or in a thread), and later changes need a new policy.
    """

    def __init__(
        self,
        *,
        rsa_sizes: Iterable[int] = DEFAULT_RSA_SIZES,
        ec_curves: Iterable[str] = DEFAULT_EC_CURVES,
        weak_key_blocklist_paths: Sequence[Path] = (),
        blocked_key_lookup: BlockedKeyLookup | None = None,
        use_badkeys: bool = True,
        debian_weak_rsa_sizes: Iterable[int] | None = None,
    ) -> None:
        """``debian_weak_rsa_sizes``: the RSA sizes a Debian weak-key list covers; RSA keys
        of any other size are refused (BR §6.1.1.3).  None (development) skips that rule."""
        self.rsa_sizes = frozenset(rsa_sizes)
        self.ec_curves = frozenset(ec_curves)
        if not self.rsa_sizes:
            raise ValueError("rsa_sizes must name at least one size")
        for size in self.rsa_sizes:
            if size < RSA_MIN_BITS or size % 8 or size > ACCOUNT_RSA_MAX_BITS:
                raise ValueError(
                    f"rsa_sizes: {size} is not a multiple of 8 in "
                    f"{RSA_MIN_BITS}..{ACCOUNT_RSA_MAX_BITS} (BR §6.1.5)"
                )
        unknown = self.ec_curves - _NIST_CURVES.keys()
        if unknown:
            raise ValueError(f"ec_curves: {sorted(unknown)} not in P-256, P-384, P-521 (BR §6.1.5)")
        self.weak_key_blocklist_paths = tuple(weak_key_blocklist_paths)
        self._debian: set[bytes] = set()
        for path in self.weak_key_blocklist_paths:
            self._debian |= load_openssl_blacklist(path)
        self.debian_weak_rsa_sizes = (
            None if debian_weak_rsa_sizes is None else frozenset(debian_weak_rsa_sizes)
        )
        self._blocked_key_lookup = blocked_key_lookup
        self.use_badkeys = use_badkeys
        self._badkeys_checks: tuple[str, ...] = ()
        if use_badkeys:
            checks = list(_BADKEYS_REASONS)
            if not _badkeys_blocklist_present():
                checks.remove("blocklist")
                log.warning(
                    "key_policy.badkeys_blocklist_missing",
                    directory=str(badkeys_data_dir()),
                    detail="known-compromised key check skipped; provision the files with "
                    "`badkeys --update-bl` at deploy time (never downloaded at runtime)",
                )
            self._badkeys_checks = tuple(checks)
        else:
            log.warning(
                "key_policy.badkeys_disabled",
                detail="Fermat, ROCA and small-factor checks (BR §6.1.1.3) are off",
            )
        if not self._debian and "blocklist" not in self._badkeys_checks:
            log.warning(
                "key_policy.no_debian_weak_key_list",
                detail="no openssl-blacklist file and no badkeys blocklist: Debian weak keys "
                "(BR §6.1.1.3) are not detected",
            )

    @property
    def badkeys_checks(self) -> tuple[str, ...]:
        """The badkeys checks that actually run (data-dependent ones may be absent)."""
        return self._badkeys_checks

    async def check(self, public_key: PublicKeyTypes, *, purpose: Purpose) -> None:
        """Raise :class:`KeyRejected` unless ``public_key`` is acceptable for ``purpose``."""
        if purpose not in ("account", "csr"):
            raise ValueError(f"unknown key purpose {purpose!r}")
        if isinstance(public_key, rsa.RSAPublicKey):
            numbers = public_key.public_numbers()
            self._check_rsa_shape(numbers, purpose)
            self._check_debian(numbers.n)
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            self._check_ec(public_key, purpose)
        else:
            raise KeyRejected(
                KeyRejectReason.UNSUPPORTED_KEY_TYPE,
                f"{type(public_key).__name__.removeprefix('_')} keys are not accepted; "
                "use RSA or ECDSA",
            )

        if self._blocked_key_lookup is not None and await self._blocked_key_lookup(
            spki_sha256(public_key)
        ):
            raise KeyRejected(
                KeyRejectReason.BLOCKED, "key is blocked by this CA (e.g. reported compromised)"
            )

        if self._badkeys_checks:
            pem = _spki_pem(public_key)
            findings = await asyncio.to_thread(_badkeys_findings, pem, self._badkeys_checks)
            for name, (reason, detail) in _BADKEYS_REASONS.items():
                if name in findings:
                    raise KeyRejected(reason, detail)

    # ------------------------------------------------------------------ rules
    def _check_rsa_shape(self, numbers: rsa.RSAPublicNumbers, purpose: Purpose) -> None:
        bits, e = numbers.n.bit_length(), numbers.e
        if bits < RSA_MIN_BITS:
            raise KeyRejected(
                KeyRejectReason.RSA_TOO_SMALL, f"RSA key has {bits} bits; minimum {RSA_MIN_BITS}"
            )
        if purpose == "account":
            if bits % 8 or bits > ACCOUNT_RSA_MAX_BITS:
                raise KeyRejected(
                    KeyRejectReason.RSA_SIZE_NOT_ALLOWED,
                    f"RSA account key has {bits} bits; need a multiple of 8 up to "
                    f"{ACCOUNT_RSA_MAX_BITS}",
                )
            if e < ACCOUNT_RSA_MIN_EXPONENT or e % 2 == 0 or e >= numbers.n:
                raise KeyRejected(
                    KeyRejectReason.RSA_EXPONENT,
                    f"RSA public exponent must be odd, at least {ACCOUNT_RSA_MIN_EXPONENT} "
                    "and below the modulus",
                )
            return
        if bits not in self.rsa_sizes:
            allowed = ", ".join(str(s) for s in sorted(self.rsa_sizes))
            raise KeyRejected(
                KeyRejectReason.RSA_SIZE_NOT_ALLOWED,
                f"RSA key has {bits} bits; allowed sizes: {allowed}",
            )
        if e != SUBSCRIBER_RSA_EXPONENT:
            raise KeyRejected(
                KeyRejectReason.RSA_EXPONENT,
                f"RSA public exponent must be {SUBSCRIBER_RSA_EXPONENT}",
            )

    def _check_debian(self, modulus: int) -> None:
        covered = self.debian_weak_rsa_sizes
        bits = modulus.bit_length()
        if covered is not None and bits not in covered:
            sizes = ", ".join(str(s) for s in sorted(covered)) or "none"
            raise KeyRejected(
                KeyRejectReason.DEBIAN_WEAK_UNCHECKABLE,
                f"RSA key has {bits} bits, a size no Debian weak-key list of this CA covers, "
                f"so it cannot be checked as BR 6.1.1.3 requires; RSA sizes checked: {sizes} "
                "(or use an ECDSA key)",
            )
        if not self._debian:
            return
        if bytes.fromhex(openssl_blacklist_fingerprint(modulus)) in self._debian:
            raise KeyRejected(
                KeyRejectReason.DEBIAN_WEAK,
                "key is a Debian weak key (CVE-2008-0166)",
            )

    def _check_ec(self, public_key: ec.EllipticCurvePublicKey, purpose: Purpose) -> None:
        nist = _CURVE_NAMES.get(public_key.curve.name)
        allowed = ACCOUNT_EC_CURVES if purpose == "account" else self.ec_curves
        if nist is None or nist not in allowed:
            raise KeyRejected(
                KeyRejectReason.EC_CURVE_NOT_ALLOWED,
                f"curve {nist or public_key.curve.name} is not accepted; "
                f"allowed: {', '.join(sorted(allowed))}",
            )
        numbers = public_key.public_numbers()
        if not _ec_point_valid(nist, numbers.x, numbers.y):
            raise KeyRejected(
                KeyRejectReason.EC_POINT_INVALID, f"public point is not on curve {nist}"
            )


def _spki_pem(public_key: PublicKeyTypes) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")
