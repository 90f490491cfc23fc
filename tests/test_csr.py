"""CSR checks at finalize, one row per rule (RFC 8555 §7.4, §11.1; BR 6.1.1.3, 6.1.5)."""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from acme_ca.acme.problems import AcmeError
from acme_ca.ra import csr as csr_rules
from acme_ca.ra.csr import check_csr
from acme_ca.ra.keys import KeyPolicy, openssl_blacklist_fingerprint

NAMES = ["www.example.com", "example.com"]
ACCOUNT_KEY = ec.generate_private_key(ec.SECP256R1())
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def spki(key: object) -> bytes:
    assert hasattr(key, "public_bytes")
    out: bytes = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return out


def build(
    names: list[str] = NAMES,
    *,
    key: object = EC_KEY,
    cn: str | None = None,
    extra: list[x509.GeneralName] | None = None,
    san: bool = True,
) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else [])
    )
    if san:
        general = [x509.DNSName(n) for n in names] + (extra or [])
        builder = builder.add_extension(x509.SubjectAlternativeName(general), critical=False)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.DER)  # type: ignore[arg-type]


def tampered() -> bytes:
    der = bytearray(build())
    der[-5] ^= 0xFF  # inside the signature
    return bytes(der)


@pytest.fixture(scope="module")
def policy() -> KeyPolicy:
    return KeyPolicy()


async def run(der: bytes, policy: KeyPolicy, names: list[str] = NAMES) -> object:
    return await check_csr(
        der, names, account_spki=spki(ACCOUNT_KEY.public_key()), key_policy=policy
    )


REJECTIONS: list[tuple[str, Callable[[], bytes], str]] = [
    ("not-der", lambda: b"\x30\x03garbage", csr_rules.NOT_DER),
    ("bad-signature", tampered, csr_rules.BAD_SIGNATURE),
    ("missing-name", lambda: build(["www.example.com"]), csr_rules.NAMES_DIFFER),
    ("extra-name", lambda: build([*NAMES, "other.example.com"]), csr_rules.NAMES_DIFFER),
    ("duplicate-name", lambda: build([*NAMES, "example.com"]), csr_rules.NAMES_DIFFER),
    ("no-san", lambda: build(san=False, cn="example.com"), csr_rules.NO_SAN),
    ("cn-not-in-san", lambda: build(cn="evil.example.net"), csr_rules.CN_NOT_IN_SAN),
    (
        "ip-san",
        lambda: build(extra=[x509.IPAddress(ipaddress.ip_address("192.0.2.1"))]),
        csr_rules.OTHER_SAN_TYPES,
    ),
    (
        "email-san",
        lambda: build(extra=[x509.RFC822Name("a@example.com")]),
        csr_rules.OTHER_SAN_TYPES,
    ),
    ("account-key", lambda: build(key=ACCOUNT_KEY), csr_rules.ACCOUNT_KEY),
    ("rsa-1024", lambda: build(key=rsa.generate_private_key(65537, 1024)), csr_rules.KEY_REJECTED),
    (
        "rsa-exponent-3",
        lambda: build(key=rsa.generate_private_key(3, 2048)),
        csr_rules.KEY_REJECTED,
    ),
    ("p521", lambda: build(key=ec.generate_private_key(ec.SECP521R1())), csr_rules.KEY_REJECTED),
    ("ed25519", lambda: build(key=ed25519.Ed25519PrivateKey.generate()), csr_rules.UNSUPPORTED_KEY),
]


@pytest.mark.parametrize(
    ("make", "reason"), [(m, r) for _, m, r in REJECTIONS], ids=[i for i, _, _ in REJECTIONS]
)
async def test_acme_fin_2_csr_rejections(
    policy: KeyPolicy, make: Callable[[], bytes], reason: str
) -> None:
    with pytest.raises(AcmeError) as caught:
        await run(make(), policy)
    assert caught.value.problem.type == "urn:ietf:params:acme:error:badCSR"
    assert caught.value.problem.status == 400
    assert caught.value.problem.detail.startswith(reason)


async def test_acme_fin_2_good_csr_any_case_and_order(policy: KeyPolicy) -> None:
    checked = await run(build(["EXAMPLE.com", "www.example.com"], cn="Example.COM"), policy)
    assert checked.names == tuple(NAMES)  # type: ignore[attr-defined]


@pytest.mark.parametrize("bits", [2048, 3072, 4096], ids=["2048", "3072", "4096"])
async def test_br_key_1_rsa_sizes_accepted(policy: KeyPolicy, bits: int) -> None:
    await run(build(key=rsa.generate_private_key(65537, bits)), policy)


async def test_br_key_2_blocked_key_refused() -> None:
    blocked = rsa.generate_private_key(65537, 2048)
    blocked_id = hashlib.sha256(spki(blocked.public_key())).digest()

    async def lookup(key_id: bytes) -> bool:
        return key_id == blocked_id

    policy = KeyPolicy(blocked_key_lookup=lookup)
    with pytest.raises(AcmeError, match="blocked"):
        await run(build(key=blocked), policy)
    await run(build(key=rsa.generate_private_key(65537, 2048)), policy)


async def test_br_key_2_debian_weak_key_list(tmp_path: Path) -> None:
    weak = rsa.generate_private_key(65537, 2048)
    path = tmp_path / "blacklist.RSA-2048"
    path.write_text(
        "# test list\n" + openssl_blacklist_fingerprint(weak.public_key().public_numbers().n) + "\n"
    )
    policy = KeyPolicy(weak_key_blocklist_paths=[path])
    with pytest.raises(AcmeError) as caught:
        await run(build(key=weak), policy)
    assert caught.value.problem.detail.startswith(csr_rules.KEY_REJECTED)
