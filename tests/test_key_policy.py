"""KeyPolicy (acme_ca/ra/keys.py): BR-KEY-1/2, ACME-JWS-4, ACME-FIN-3.

Keys are real: generated with ``cryptography``, or built from primes found here with a
Miller-Rabin test (close primes for Fermat, Infineon-structured primes for ROCA).  Two public
fixtures are used as known answers:

* Boulder ``goodkey/weak_test.go``: a 2048-bit modulus from the Debian openssl weak-key list
  and its ``openssl-blacklist`` line ``8df20e6961a16398b85a``.
* badkeys ``tests/data/rsa-roca.key``: a ROCA-vulnerable 2048-bit public key.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from badkeys.allkeys import block as badkeys_block
from badkeys.utils import _cachedir as badkeys_cachedir
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from acme_ca.acme.problems import AcmeError
from acme_ca.keyid import spki_sha256
from acme_ca.ra import keys
from acme_ca.ra.keys import (
    KeyPolicy,
    KeyRejected,
    KeyRejectReason,
    badkeys_data_dir,
    openssl_blacklist_fingerprint,
)

R = KeyRejectReason

BOULDER_DEBIAN_WEAK_MODULUS = int(
    "D673252AF6723C3F72529403EAB7C30DEF3C52F97E799825F4A70191C616ADCF1ECE1113F1625971074C492C"
    "592025FDEADBDB146A081826BDF0D77C3C913DCF1B6F0B3B78F5108D2E493AD0EEE8CA5C021711ADC13D358E"
    "61133870FCD19C8E5C22403959782AA82E72AEE53A3D491E3912CE27B27E1A85EA69C19A527D28F7934C9823"
    "B7E56FDD657DAC83FDC65BB22A98D843DF73238919781B714C81A5E2AFEC71F5C54AA2A27C590AD94C03C106"
    "2D50EFCFFAC743E3C8A3AE056846A1D756EB862BF4224169D467C35215ADE0AFCC11E85FE629AFB802C4786F"
    "F2E9C929BCCF502B3D3B8876C6A11785CC398B389F1D86BDD9CB0BD4EC13956EC3FA270D",
    16,
)
BOULDER_DEBIAN_WEAK_LINE = "8df20e6961a16398b85a"

BADKEYS_ROCA_PEM = b"""-----BEGIN RSA PUBLIC KEY-----
MIIBCgKCAQEAkTKtIR/MDftNrkgyashkwifks5Swm9HEkw4ZcCijyQdpTStInk9p
dUrq4zjG6tk5xX9AaYXLu47fmiBVzClGvAXTZbpn6JbG1IERUs+i0pBRT5CzUu7v
J/63L72NzVvJFaT0SUE5zByhCjJE+pflMnX1e1UptOdnN5AHeY4RKkugVse3XO2x
Ms3yH3vTyZdtnaOIFRU0d6E7PrsgRtEAqFHcAGmPUw0ZOW8A++8sS/FlnrxMf9lV
a1/8k/A8otPfrNIipfAoq0MKJ+oxE2wML1DDxIGTGmNaN3gPANJyeuca7ptA+NGq
5oU1x3pWMXgSvrVSXUooNk8xIkrKxSz3LQIDAQAB
-----END RSA PUBLIC KEY-----
"""

# ------------------------------------------------------------------------------ primes
_SMALL_PRIMES = [p for p in range(3, 2000, 2) if all(p % d for d in range(3, math.isqrt(p) + 1, 2))]


def _is_probable_prime(n: int, rng: random.Random) -> bool:
    """Trial division, then 24 Miller-Rabin rounds (error < 4**-24)."""
    if n < 2 or n % 2 == 0:
        return n == 2
    for p in _SMALL_PRIMES:
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for _ in range(24):
        x = pow(rng.randrange(2, n - 1), d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def _next_prime(n: int, rng: random.Random, step: int = 2) -> int:
    n |= 1
    while not _is_probable_prime(n, rng):
        n += step
    return n


def _random_prime(bits: int, rng: random.Random) -> int:
    """A prime with its top two bits set, so two of them make a modulus of exactly 2*bits."""
    return _next_prime(rng.getrandbits(bits) | (3 << (bits - 2)), rng)


def _fermat_round(n: int) -> int:
    """0-based Fermat round that factors n: a = ceil(sqrt(n)) + round gives a square a^2 - n."""
    a = math.isqrt(n)
    if a * a < n:
        a += 1
    start = a
    while math.isqrt(a * a - n) ** 2 != a * a - n:
        a += 1
    return a - start


def _rsa(n: int, e: int = 65537) -> rsa.RSAPublicKey:
    return rsa.RSAPublicNumbers(e, n).public_key()


def _generated(bits: int, e: int = 65537) -> rsa.RSAPublicKey:
    return rsa.generate_private_key(public_exponent=e, key_size=bits).public_key()


@pytest.fixture(scope="module")
def rng() -> random.Random:
    return random.Random(20261122)  # fixed: reproducible test keys, not key material


@pytest.fixture(scope="module")
def rsa2048() -> rsa.RSAPublicKey:
    return _generated(2048)


def _make_close_prime_key(p: int, fermat_round: int, rng: random.Random) -> rsa.RSAPublicKey:
    """n = p*q with q chosen so Fermat's method needs exactly ``fermat_round`` + 1 rounds.

    With a = (p+q)/2 and s = sqrt(pq), a - s = (sqrt(p) - sqrt(q))^2 / 2, and the round
    index is a - ceil(s).  Aim at a - s = round + 1/2; moving q to the next prime shifts
    that by ~2^-500, so the index is exact (asserted below).
    """
    width = 2 * fermat_round + 1
    q = _next_prime(p - math.isqrt(4 * p * width) + width, rng)
    n = p * q
    assert n.bit_length() == 2048
    assert _fermat_round(n) == fermat_round
    return _rsa(n)


CloseKeys = Callable[[int], rsa.RSAPublicKey]


@pytest.fixture(scope="module")
def close_prime_key(rng: random.Random) -> CloseKeys:
    """Keys sharing one p, memoised per Fermat round (prime search is the slow part)."""
    p = _random_prime(1024, rng)
    made: dict[int, rsa.RSAPublicKey] = {}

    def make(fermat_round: int) -> rsa.RSAPublicKey:
        if fermat_round not in made:
            made[fermat_round] = _make_close_prime_key(p, fermat_round, rng)
        return made[fermat_round]

    return make


@pytest.fixture
def policy() -> KeyPolicy:
    return KeyPolicy()


async def _reason(
    policy: KeyPolicy, key: PublicKeyTypes, purpose: keys.Purpose
) -> KeyRejectReason | None:
    try:
        await policy.check(key, purpose=purpose)
    except KeyRejected as exc:
        return exc.reason
    return None


# ------------------------------------------------------------------------------ BR-KEY-1 shape
@pytest.mark.parametrize(
    ("bits", "e", "purpose", "expected"),
    [
        (1024, 65537, "account", R.RSA_TOO_SMALL),
        (1024, 65537, "csr", R.RSA_TOO_SMALL),
        (2047, 65537, "account", R.RSA_TOO_SMALL),
        (2047, 65537, "csr", R.RSA_TOO_SMALL),
        (2048, 65537, "account", None),
        (2048, 65537, "csr", None),
        (2052, 65537, "account", R.RSA_SIZE_NOT_ALLOWED),
        (2056, 65537, "account", None),
        (2056, 65537, "csr", R.RSA_SIZE_NOT_ALLOWED),
        (3072, 65537, "csr", None),
        (2048, 3, "account", R.RSA_EXPONENT),
        (2048, 3, "csr", R.RSA_EXPONENT),
    ],
    ids=[
        "1024-account",
        "1024-csr",
        "2047-account",
        "2047-csr",
        "2048-account",
        "2048-csr",
        "2052-account-not-multiple-of-8",
        "2056-account",
        "2056-csr-not-configured",
        "3072-csr",
        "e3-account",
        "e3-csr",
    ],
)
async def test_br_key_1_rsa_generated_keys(
    bits: int, e: int, purpose: keys.Purpose, expected: KeyRejectReason | None
) -> None:
    assert await _reason(KeyPolicy(), _generated(bits, e), purpose) == expected


async def test_br_key_1_rsa_1024_rejected(policy: KeyPolicy) -> None:
    with pytest.raises(KeyRejected) as info:
        await policy.check(_generated(1024), purpose="csr")
    assert info.value.reason == R.RSA_TOO_SMALL
    assert "1024" in info.value.detail


async def test_br_key_1_account_rsa_above_8192_rejected(policy: KeyPolicy) -> None:
    # The size rule fires before anything looks at the factors, so an odd 8200-bit number
    # stands in for a key that would take far too long to generate here.
    huge = _rsa((1 << 8199) | 1)
    assert await _reason(policy, huge, "account") == R.RSA_SIZE_NOT_ALLOWED
    assert await _reason(policy, huge, "csr") == R.RSA_SIZE_NOT_ALLOWED


@pytest.mark.parametrize(
    ("e", "purpose", "expected"),
    [
        (65539, "account", None),
        (65539, "csr", R.RSA_EXPONENT),
        (2**255 + 1, "account", None),
        (2**255 + 1, "csr", R.RSA_EXPONENT),
        (65535, "account", R.RSA_EXPONENT),
        (17, "account", R.RSA_EXPONENT),
    ],
    ids=["65539-account", "65539-csr", "2^255+1-account", "2^255+1-csr", "65535", "17"],
)
async def test_br_key_1_rsa_exponent(
    policy: KeyPolicy,
    rsa2048: rsa.RSAPublicKey,
    e: int,
    purpose: keys.Purpose,
    expected: KeyRejectReason | None,
) -> None:
    key = _rsa(rsa2048.public_numbers().n, e)
    assert await _reason(policy, key, purpose) == expected


@pytest.mark.parametrize(
    ("curve", "purpose", "expected"),
    [
        (ec.SECP256R1(), "account", None),
        (ec.SECP256R1(), "csr", None),
        (ec.SECP384R1(), "account", None),
        (ec.SECP384R1(), "csr", None),
        (ec.SECP521R1(), "account", None),  # ES512, as Boulder and Pebble accept
        (ec.SECP521R1(), "csr", R.EC_CURVE_NOT_ALLOWED),  # certificate keys: P-256/P-384
        (ec.SECP256K1(), "account", R.EC_CURVE_NOT_ALLOWED),
        (ec.SECP256K1(), "csr", R.EC_CURVE_NOT_ALLOWED),
    ],
    ids=lambda v: v.name if isinstance(v, ec.EllipticCurve) else str(v),
)
async def test_br_key_1_ec_curves(
    policy: KeyPolicy, curve: ec.EllipticCurve, purpose: keys.Purpose, expected: Any
) -> None:
    key = ec.generate_private_key(curve).public_key()
    assert await _reason(policy, key, purpose) == expected


async def test_br_key_1_p521_allowed_for_csr_only_when_configured(policy: KeyPolicy) -> None:
    key = ec.generate_private_key(ec.SECP521R1()).public_key()
    assert await _reason(policy, key, "csr") == R.EC_CURVE_NOT_ALLOWED
    configured = KeyPolicy(ec_curves={"P-256", "P-384", "P-521"})
    assert await _reason(configured, key, "csr") is None
    assert await _reason(configured, key, "account") is None


@pytest.mark.parametrize("purpose", ["account", "csr"])
@pytest.mark.parametrize(
    "make",
    [
        lambda: ed25519.Ed25519PrivateKey.generate().public_key(),
        lambda: ed448.Ed448PrivateKey.generate().public_key(),
    ],
    ids=["ed25519", "ed448"],
)
async def test_br_key_1_edwards_keys_rejected(
    policy: KeyPolicy, make: Callable[[], PublicKeyTypes], purpose: keys.Purpose
) -> None:
    assert await _reason(policy, make(), purpose) == R.UNSUPPORTED_KEY_TYPE


class _OffCurveKey(ec.EllipticCurvePublicKey):
    """A P-256 'key' whose point is off the curve; cryptography itself refuses to build one."""

    def __init__(self, real: ec.EllipticCurvePublicKey) -> None:
        numbers = real.public_numbers()
        self._numbers = ec.EllipticCurvePublicNumbers(numbers.x, numbers.y + 1, real.curve)
        self._real = real

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._real.curve

    @property
    def key_size(self) -> int:
        return self._real.key_size

    def public_numbers(self) -> ec.EllipticCurvePublicNumbers:
        return self._numbers

    def public_bytes(self, encoding: Any, format: Any) -> bytes:
        raise AssertionError("the point must be rejected before the key is serialised")

    def verify(self, signature: Any, data: Any, signature_algorithm: Any) -> None:
        raise AssertionError("unused")

    def __eq__(self, other: object) -> bool:
        return other is self

    def __hash__(self) -> int:
        return id(self)

    def __copy__(self) -> _OffCurveKey:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> _OffCurveKey:
        return self


@pytest.mark.parametrize("purpose", ["account", "csr"])
async def test_acme_jws_4_ec_point_off_curve_rejected(
    policy: KeyPolicy, purpose: keys.Purpose
) -> None:
    real = ec.generate_private_key(ec.SECP256R1()).public_key()
    assert await _reason(policy, _OffCurveKey(real), purpose) == R.EC_POINT_INVALID


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rsa_sizes": {1024}},
        {"rsa_sizes": {2047}},
        {"rsa_sizes": {2052}},
        {"rsa_sizes": set()},
        {"ec_curves": {"P-192"}},
    ],
    ids=["rsa-1024", "rsa-2047", "rsa-2052", "rsa-none", "p192"],
)
def test_br_key_1_bad_configuration_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        KeyPolicy(**kwargs)


async def test_unknown_purpose_refused(policy: KeyPolicy, rsa2048: rsa.RSAPublicKey) -> None:
    with pytest.raises(ValueError):
        await policy.check(rsa2048, purpose="jws")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ BR-KEY-2 Fermat
@pytest.mark.parametrize("purpose", ["account", "csr"])
@pytest.mark.parametrize("fermat_round", [0, 99], ids=["round-1", "round-100"])
async def test_br_key_2_fermat_close_primes_rejected(
    policy: KeyPolicy, close_prime_key: CloseKeys, fermat_round: int, purpose: keys.Purpose
) -> None:
    key = close_prime_key(fermat_round)
    assert await _reason(policy, key, purpose) == R.FERMAT_FACTORABLE


async def test_br_key_2_fermat_needs_101_rounds_accepted(
    policy: KeyPolicy, close_prime_key: CloseKeys
) -> None:
    """SC-073 says 'within 100 rounds'; round 101 is outside the rule (pins badkeys' bound)."""
    key = close_prime_key(100)
    assert await _reason(policy, key, "csr") is None


# ------------------------------------------------------------------------------ BR-KEY-2 ROCA
@pytest.fixture(scope="module")
def roca_key(rng: random.Random) -> rsa.RSAPublicKey:
    """Primes of Infineon's form p = k*M + 65537^a mod M (Nemec et al., CCS 2017, §2.1).

    M is the primorial of the first 126 primes, the value RSALib used for 2048-bit keys.
    """
    primes = [2, *_SMALL_PRIMES][:126]
    m = math.prod(primes)

    def structured_prime() -> int:
        residue = pow(65537, rng.randrange(1, 2**62), m)
        k = (rng.getrandbits(1024) | (3 << 1022)) // m
        return _next_prime(k * m + residue, rng, step=m)

    return _rsa(structured_prime() * structured_prime())


@pytest.mark.parametrize("purpose", ["account", "csr"])
async def test_br_key_2_roca_constructed_key_rejected(
    policy: KeyPolicy, roca_key: rsa.RSAPublicKey, purpose: keys.Purpose
) -> None:
    assert roca_key.key_size == 2048
    assert await _reason(policy, roca_key, purpose) == R.ROCA


async def test_br_key_2_roca_badkeys_sample_rejected(policy: KeyPolicy) -> None:
    key = serialization.load_pem_public_key(BADKEYS_ROCA_PEM)
    assert await _reason(policy, key, "csr") == R.ROCA


# ------------------------------------------------------------------------------ BR-KEY-2 misc
async def test_br_key_2_small_factor_rejected(policy: KeyPolicy, rng: random.Random) -> None:
    """A 2048-bit modulus with the factor 65537: the corrupted-key pattern badkeys reports."""
    cofactor = ((1 << 2047) // 65537 + rng.getrandbits(2000)) | 1
    n = 65537 * cofactor
    assert n.bit_length() == 2048
    assert await _reason(policy, _rsa(n), "csr") == R.SMALL_FACTOR


async def test_br_key_2_generated_keys_pass_weakness_checks(
    policy: KeyPolicy, rsa2048: rsa.RSAPublicKey
) -> None:
    assert "fermat" in policy.badkeys_checks
    assert "roca" in policy.badkeys_checks
    await policy.check(rsa2048, purpose="csr")
    await policy.check(rsa2048, purpose="account")


async def test_br_key_2_weakness_checks_run_off_the_event_loop(
    policy: KeyPolicy, rsa2048: rsa.RSAPublicKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Callable[..., Any]] = []
    real = asyncio.to_thread

    async def spy(func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        calls.append(func)
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", spy)
    await policy.check(rsa2048, purpose="csr")
    assert calls == [keys._badkeys_findings]


async def test_br_key_2_use_badkeys_false_skips_weakness_checks(
    close_prime_key: CloseKeys,
) -> None:
    with structlog.testing.capture_logs() as logs:
        policy = KeyPolicy(use_badkeys=False)
    warnings = [e["event"] for e in logs if e["log_level"] == "warning"]
    assert "key_policy.badkeys_disabled" in warnings
    assert await _reason(policy, close_prime_key(0), "csr") is None


# ------------------------------------------------------------------------------ BR-KEY-2 Debian
def test_br_key_2_debian_fingerprint_known_answer() -> None:
    """Boulder's vector: SHA-1("Modulus=D673...270D\\n") = a3853d0c563765e504c1 + line."""
    assert openssl_blacklist_fingerprint(BOULDER_DEBIAN_WEAK_MODULUS) == BOULDER_DEBIAN_WEAK_LINE


def test_br_key_2_debian_fingerprint_has_no_leading_zero_nibble() -> None:
    """openssl prints the modulus with BN_print, which drops leading zero hex digits."""
    n = 0x0ABC
    expected = hashlib.sha1(b"Modulus=ABC\n").hexdigest()[20:]
    assert openssl_blacklist_fingerprint(n) == expected


def _write_blacklist(path: Path, *lines: str) -> Path:
    header = [
        "# After these initial comments, each line must consist of the lower-case key",
        "# modulus checksum with the first 20 characters removed.",
        "",
    ]
    path.write_text("\n".join([*header, *lines]) + "\n", encoding="ascii")
    return path


@pytest.mark.parametrize("purpose", ["account", "csr"])
async def test_br_key_2_debian_blocklist_file(
    tmp_path: Path, rsa2048: rsa.RSAPublicKey, purpose: keys.Purpose
) -> None:
    weak = _generated(2048)
    lists = [
        _write_blacklist(
            tmp_path / "blacklist.RSA-2048",
            "00005890bc78bcbee3ca",
            openssl_blacklist_fingerprint(weak.public_numbers().n),
        ),
        _write_blacklist(tmp_path / "blacklist.RSA-4096", "0000d80c186767f2473a"),
    ]
    policy = KeyPolicy(weak_key_blocklist_paths=lists)
    assert await _reason(policy, weak, purpose) == R.DEBIAN_WEAK
    assert await _reason(policy, rsa2048, purpose) is None


async def test_br_key_2_debian_real_weak_modulus(tmp_path: Path) -> None:
    path = _write_blacklist(tmp_path / "blacklist.RSA-2048", BOULDER_DEBIAN_WEAK_LINE.upper())
    policy = KeyPolicy(weak_key_blocklist_paths=[path])
    key = _rsa(BOULDER_DEBIAN_WEAK_MODULUS)
    assert await _reason(policy, key, "csr") == R.DEBIAN_WEAK


@pytest.mark.parametrize(
    "line", ["8df20e6961a16398b85", "8df20e6961a16398b85a0", "8df20e6961a16398b85z"]
)
def test_br_key_2_debian_blocklist_malformed_line_refused(tmp_path: Path, line: str) -> None:
    path = _write_blacklist(tmp_path / "blacklist.RSA-2048", line)
    with pytest.raises(ValueError, match=r"blacklist\.RSA-2048:4"):
        KeyPolicy(weak_key_blocklist_paths=[path])


# ------------------------------------------------------------------------------ blocked keys
def test_spki_sha256_is_hash_of_der_spki(rsa2048: rsa.RSAPublicKey) -> None:
    der = rsa2048.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert spki_sha256(rsa2048) == hashlib.sha256(der).digest()


def _lookup(blocked: set[bytes], seen: list[bytes]) -> Callable[[bytes], Awaitable[bool]]:
    async def lookup(key_id: bytes) -> bool:
        seen.append(key_id)
        return key_id in blocked

    return lookup


@pytest.mark.parametrize("purpose", ["account", "csr"])
async def test_acme_rev_3_blocked_key_rejected(
    rsa2048: rsa.RSAPublicKey, purpose: keys.Purpose
) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    seen: list[bytes] = []
    policy = KeyPolicy(blocked_key_lookup=_lookup({spki_sha256(rsa2048)}, seen))
    assert await _reason(policy, rsa2048, purpose) == R.BLOCKED
    assert await _reason(policy, ec_key, purpose) is None
    assert seen == [spki_sha256(rsa2048), spki_sha256(ec_key)]


async def test_blocked_lookup_not_called_for_malformed_keys(policy: KeyPolicy) -> None:
    seen: list[bytes] = []
    policy = KeyPolicy(blocked_key_lookup=_lookup(set(), seen))
    assert await _reason(policy, _generated(1024), "csr") == R.RSA_TOO_SMALL
    assert seen == []


# ------------------------------------------------------------------------------ badkeys blocklist
@pytest.fixture
def badkeys_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point badkeys at an empty cache directory of our own (never the network)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(badkeys_block, "_bldata", False)
    monkeypatch.setattr(badkeys_block, "_blmeta", False)
    badkeys_cachedir.cache_clear()
    directory = tmp_path / "badkeys"
    directory.mkdir()
    yield directory
    badkeys_cachedir.cache_clear()


def test_badkeys_data_dir_is_where_badkeys_itself_reads(
    badkeys_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The policy restates badkeys' cache location, so that building it imports no badkeys
    (issue 21 item 8); a badkeys that moved it fails here."""
    assert badkeys_data_dir() == Path(badkeys_cachedir()) == badkeys_cache
    monkeypatch.delenv("XDG_CACHE_HOME")
    badkeys_cachedir.cache_clear()
    assert badkeys_data_dir() == Path(badkeys_cachedir())


def test_br_key_2_badkeys_blocklist_missing_is_skipped_and_logged_once(
    badkeys_cache: Path,
) -> None:
    with structlog.testing.capture_logs() as logs:
        policy = KeyPolicy()
    assert "blocklist" not in policy.badkeys_checks
    events = [e["event"] for e in logs]
    assert events.count("key_policy.badkeys_blocklist_missing") == 1
    assert "key_policy.no_debian_weak_key_list" in events


async def test_br_key_2_badkeys_blocklist_missing_does_not_exit(
    badkeys_cache: Path, rsa2048: rsa.RSAPublicKey
) -> None:
    with structlog.testing.capture_logs() as logs:
        policy = KeyPolicy()
        await policy.check(rsa2048, purpose="csr")
    assert [e["event"] for e in logs].count("key_policy.badkeys_blocklist_missing") == 1


async def test_br_key_2_badkeys_blocklist_known_compromised(
    badkeys_cache: Path, rsa2048: rsa.RSAPublicKey
) -> None:
    """A locally built blocklist in badkeys' format: sorted records of sha256(n)[:15] + id."""
    compromised = _generated(2048)
    n = compromised.public_numbers().n
    record = hashlib.sha256(n.to_bytes((n.bit_length() + 7) // 8, "big")).digest()[:15]
    (badkeys_cache / "blocklist.dat").write_bytes(record + bytes([7]))
    (badkeys_cache / "badkeysdata.json").write_text(
        json.dumps({"blocklists": [{"id": 7, "name": "test-kompromat"}]})
    )
    policy = KeyPolicy()
    assert "blocklist" in policy.badkeys_checks
    assert await _reason(policy, compromised, "csr") == R.KNOWN_COMPROMISED
    assert await _reason(policy, rsa2048, "csr") is None


# ------------------------------------------------------------------------------ ACME mapping
@pytest.mark.parametrize(
    ("purpose", "problem_type"),
    [("account", "badPublicKey"), ("csr", "badCSR")],
)
async def test_acme_jws_4_and_fin_3_problem_types(
    policy: KeyPolicy, purpose: keys.Purpose, problem_type: str
) -> None:
    with pytest.raises(KeyRejected) as info:
        await policy.check(_generated(1024), purpose=purpose)
    error = info.value.to_acme_error(purpose=purpose)
    assert isinstance(error, AcmeError)
    assert error.problem.type == f"urn:ietf:params:acme:error:{problem_type}"
    assert error.problem.status == 400
    assert "1024" in error.problem.detail
