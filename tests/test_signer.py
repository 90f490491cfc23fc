"""Signers against a real SoftHSM2 token and in software: certificates, CRLs, pool, event loop."""

from __future__ import annotations

import asyncio
import os
import stat
import uuid
from collections.abc import AsyncIterator, Awaitable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pkcs11
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from structlog.testing import capture_logs

from acme_ca.ca.der import (
    THROWAWAY_CURVE,
    THROWAWAY_RSA_BITS,
    assemble_signed,
    encode_length,
    sign_tbs_certificate,
    sign_tbs_crl,
    split_signed,
    tbs_signature_algorithm,
    throwaway_for,
    throwaway_key,
    throwaway_signed_certificate,
    throwaway_signed_crl,
)
from acme_ca.ca.pkcs11_signer import Pkcs11Signer, generate_pkcs11_key, resolve_pin
from acme_ca.ca.signer import (
    CaPrivateKey,
    HashName,
    KeySpec,
    Signer,
    SignerError,
    SoftwareSigner,
    verify_signature,
)
from tests.support.softhsm import SoftHsmToken, shared_token, softhsm_available

requires_softhsm = pytest.mark.skipif(not softhsm_available(), reason="SoftHSM2 not installed")

#: CA/B Forum BR 7.1.3.2 encodings, written out independently of the code under test.
BR_ALGORITHMS = {
    ("rsa", "sha256"): "300d06092a864886f70d01010b0500",
    ("rsa", "sha384"): "300d06092a864886f70d01010c0500",
    ("ec", "sha256"): "300a06082a8648ce3d040302",
    ("ec", "sha384"): "300a06082a8648ce3d040303",
}

KEY_CASES: list[tuple[KeySpec, HashName]] = [
    ("rsa2048", "sha256"),
    ("rsa2048", "sha384"),
    ("ec-p256", "sha256"),
    ("ec-p384", "sha384"),
]
#: (signer, hash) rows for ``indirect=["signer"]``: every key case, in software and in SoftHSM2.
SIGNER_CASES = [
    pytest.param((kind, spec), hash, id=f"{kind}-{spec}-{hash}", marks=marks)
    for kind, marks in (("software", ()), ("pkcs11", (requires_softhsm,)))
    for spec, hash in KEY_CASES
]
each_signer = pytest.mark.parametrize(("signer", "hash"), SIGNER_CASES, indirect=["signer"])
NOW = datetime(2026, 1, 1, tzinfo=UTC)
T = TypeVar("T")


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def token(tmp_path_factory: pytest.TempPathFactory) -> SoftHsmToken:
    return shared_token(tmp_path_factory.getbasetemp() / "softhsm")


@pytest.fixture(scope="module")
def hsm_keys(token: SoftHsmToken) -> dict[KeySpec, str]:
    """One key per spec in the token, generated once; labels are unique per run."""
    labels: dict[KeySpec, str] = {
        spec: f"test-signer-{spec}-{uuid.uuid4().hex[:8]}" for spec, _ in KEY_CASES
    }

    async def generate() -> None:
        for spec, label in labels.items():
            await generate_pkcs11_key(token.module, token.label, token.pin, label, spec)

    # A thread of its own: this fixture may be requested from inside a running event loop.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, generate()).result()
    return labels


@pytest.fixture(scope="module")
def software_keys() -> dict[KeySpec, CaPrivateKey]:
    return {
        "rsa2048": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ec-p256": ec.generate_private_key(ec.SECP256R1()),
        "ec-p384": ec.generate_private_key(ec.SECP384R1()),
    }


async def open_signer(
    kind: str,
    spec: KeySpec,
    request: pytest.FixtureRequest,
    software_keys: dict[KeySpec, CaPrivateKey],
    pool_size: int = 2,
) -> Signer:
    if kind == "software":
        return SoftwareSigner(software_keys[spec])
    token: SoftHsmToken = request.getfixturevalue("token")
    labels: dict[KeySpec, str] = request.getfixturevalue("hsm_keys")
    return await Pkcs11Signer.open(
        token.module, token.label, labels[spec], token.pin, pool_size=pool_size
    )


@pytest.fixture
async def signer(
    request: pytest.FixtureRequest, software_keys: dict[KeySpec, CaPrivateKey]
) -> AsyncIterator[Signer]:
    kind, spec = request.param
    s = await open_signer(kind, spec, request, software_keys)
    yield s
    await s.aclose()


def name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def ca_builder(signer: Signer) -> x509.CertificateBuilder:
    public_key = signer.public_key
    return (
        x509.CertificateBuilder()
        .subject_name(name("acme_ca test root"))
        .issuer_name(name("acme_ca test root"))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


async def issue(
    builder: x509.CertificateBuilder, signer: Signer, hash: HashName
) -> x509.Certificate:
    lint_copy = throwaway_signed_certificate(builder, signer, hash)
    cert = await sign_tbs_certificate(lint_copy.tbs_certificate_bytes, signer, hash)
    assert cert.tbs_certificate_bytes == lint_copy.tbs_certificate_bytes
    return cert


def assert_br_algorithm(der: bytes, inner_tbs: bytes, signer: Signer, hash: HashName) -> None:
    expected = BR_ALGORITHMS[(signer.key_type, hash)]
    _, outer, _ = split_signed(der)
    assert outer.hex() == expected
    assert tbs_signature_algorithm(inner_tbs).hex() == expected
    assert signer.signature_algorithm_der(hash).hex() == expected


# ----------------------------------------------------------------------------- DER


@pytest.mark.parametrize(
    ("length", "encoded"),
    [
        (0, "00"),
        (127, "7f"),
        (128, "8180"),
        (255, "81ff"),
        (256, "820100"),
        (65535, "82ffff"),
        (65536, "83010000"),
    ],
    ids=str,
)
def test_encode_length(length: int, encoded: str) -> None:
    assert encode_length(length).hex() == encoded


def test_assemble_signed_round_trips_a_real_certificate() -> None:
    key = throwaway_key("rsa")
    builder = (
        x509.CertificateBuilder()
        .subject_name(name("x"))
        .issuer_name(name("x"))
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=1))
    )
    der = builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    tbs, alg, sig = split_signed(der)
    assert der[1] == 0x82  # an RSA-2048 certificate needs a two-byte long-form length
    assert assemble_signed(tbs, alg, sig) == der


@pytest.mark.parametrize(
    ("spec", "hash"), [("rsa2048", "sha256"), ("ec-p256", "sha256"), ("ec-p384", "sha384")]
)
def test_throwaway_key_is_the_cheapest_and_reaches_no_tbs_byte(
    software_keys: dict[KeySpec, CaPrivateKey], spec: KeySpec, hash: HashName
) -> None:
    """The throwaway key is RSA-1024 or P-256 whatever the CA key's size or curve (issue 20):
    the TBS it makes is byte for byte the one a key of the CA's own size or curve makes."""
    signer = SoftwareSigner(software_keys[spec])
    key = throwaway_for(signer.key_type)
    if isinstance(key, rsa.RSAPrivateKey):
        assert key.key_size == THROWAWAY_RSA_BITS == 1024
    else:
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert key.curve.name == THROWAWAY_CURVE == "secp256r1"
    builder = ca_builder(signer)
    cheap = throwaway_signed_certificate(builder, signer, hash)
    digest = hashes.SHA256() if hash == "sha256" else hashes.SHA384()
    same_size = builder.sign(software_keys[spec], digest)
    assert cheap.tbs_certificate_bytes == same_size.tbs_certificate_bytes
    assert cheap.signature_algorithm_oid == same_size.signature_algorithm_oid


# ------------------------------------------------------------------ certificates and CRLs


@each_signer
async def test_self_issued_certificate_verifies(signer: Signer, hash: HashName) -> None:
    cert = await issue(ca_builder(signer), signer, hash)
    cert.verify_directly_issued_by(cert)
    assert cert.public_key() == signer.public_key
    assert_br_algorithm(
        cert.public_bytes(serialization.Encoding.DER), cert.tbs_certificate_bytes, signer, hash
    )


@each_signer
async def test_leaf_under_ca_verifies(signer: Signer, hash: HashName) -> None:
    ca = await issue(ca_builder(signer), signer, hash)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=90))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("example.com")]), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key), critical=False
        )
    )
    leaf = await issue(builder, signer, hash)
    leaf.verify_directly_issued_by(ca)
    assert_br_algorithm(
        leaf.public_bytes(serialization.Encoding.DER), leaf.tbs_certificate_bytes, signer, hash
    )


@each_signer
async def test_crl_verifies(signer: Signer, hash: HashName) -> None:
    revoked = (
        x509.RevokedCertificateBuilder()
        .serial_number(0x1234)
        .revocation_date(NOW)
        .add_extension(x509.CRLReason(x509.ReasonFlags.key_compromise), critical=False)
        .build()
    )
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(name("acme_ca test root"))
        .last_update(NOW)
        .next_update(NOW + timedelta(days=7))
        .add_revoked_certificate(revoked)
        .add_extension(x509.CRLNumber(7), critical=False)
    )
    lint_copy = throwaway_signed_crl(builder, signer, hash)
    crl = await sign_tbs_crl(lint_copy.tbs_certlist_bytes, signer, hash)
    assert crl.is_signature_valid(signer.public_key)
    assert crl.get_revoked_certificate_by_serial_number(0x1234) is not None
    assert_br_algorithm(
        crl.public_bytes(serialization.Encoding.DER), crl.tbs_certlist_bytes, signer, hash
    )


@pytest.mark.parametrize("signer", [("software", "rsa2048")], indirect=True)
async def test_tbs_with_another_hash_is_refused(signer: Signer) -> None:
    lint_copy = throwaway_signed_certificate(ca_builder(signer), signer, "sha384")
    with pytest.raises(ValueError, match="signature algorithm"):
        await sign_tbs_certificate(lint_copy.tbs_certificate_bytes, signer, "sha256")


@pytest.mark.parametrize(
    ("signer", "hash"),
    [
        pytest.param(("software", "ec-p256"), "sha384", id="software-p256-sha384"),
        pytest.param(("software", "ec-p384"), "sha256", id="software-p384-sha256"),
        pytest.param(
            ("pkcs11", "ec-p256"), "sha384", id="pkcs11-p256-sha384", marks=requires_softhsm
        ),
    ],
    indirect=["signer"],
)
async def test_curve_hash_pairing_is_enforced(signer: Signer, hash: HashName) -> None:
    with pytest.raises(ValueError, match="must sign with"):
        signer.signature_algorithm_der(hash)
    with pytest.raises(ValueError, match="must sign with"):
        await signer.sign(b"data", hash)


# ----------------------------------------------------------------------------- concurrency


@each_signer
async def test_concurrent_signatures(signer: Signer, hash: HashName) -> None:
    messages = [f"message {i}".encode() for i in range(20)]
    signatures = await asyncio.gather(*(signer.sign(m, hash) for m in messages))
    for message, signature in zip(messages, signatures, strict=True):
        verify_signature(signer.public_key, signature, message, hash)
    if isinstance(signer, Pkcs11Signer):
        assert signer.pool_size == 2


class Heartbeat:
    """A task that ticks every few milliseconds while the event loop is free to run it."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.ticks = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.ticks += 1
            await asyncio.sleep(self.interval)

    async def __aenter__(self) -> Heartbeat:
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()

    async def ticks_during(self, work: Awaitable[T]) -> tuple[T, int]:
        """Await ``work``; also say how often the heartbeat ran meanwhile (0 if it blocked)."""
        before = self.ticks
        result = await work
        return result, self.ticks - before


@pytest.mark.parametrize("kind", ["software", pytest.param("pkcs11", marks=requires_softhsm)])
async def test_event_loop_keeps_running(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # Each step below takes tens to hundreds of milliseconds of CPU.  Run on the event loop,
    # it would let the heartbeat tick at most once; run in a thread, the heartbeat keeps going.
    # Counting ticks rather than timing gaps keeps the test steady on a loaded machine.
    payload = bytes(64 << 20)  # hashing 64 MiB (twice: sign, then verify) is slow anywhere
    token: SoftHsmToken | None = request.getfixturevalue("token") if kind == "pkcs11" else None
    label = f"heartbeat-{uuid.uuid4().hex[:8]}"
    async with Heartbeat() as heartbeat:
        signer: Signer
        if token is None:
            signer, ticks = await heartbeat.ticks_during(
                SoftwareSigner.generate("rsa3072", tmp_path / "ca.pem")
            )
        else:
            _, ticks = await heartbeat.ticks_during(
                generate_pkcs11_key(token.module, token.label, token.pin, label, "rsa3072")
            )
            signer = await Pkcs11Signer.open(token.module, token.label, label, token.pin)
        assert ticks >= 2, "key generation blocked the event loop"
        try:
            _, ticks = await heartbeat.ticks_during(signer.sign(payload, "sha256"))
            assert ticks >= 2, "signing blocked the event loop"
            await asyncio.gather(*(signer.sign(b"x" * 4096, "sha256") for _ in range(40)))
        finally:
            await signer.aclose()


@requires_softhsm
async def test_cancelled_signatures_give_their_session_back(
    request: pytest.FixtureRequest, software_keys: dict[KeySpec, CaPrivateKey]
) -> None:
    signer = await open_signer("pkcs11", "rsa2048", request, software_keys)
    assert isinstance(signer, Pkcs11Signer)
    async with asyncio.timeout(10):  # a lost session shows up as a hang
        for _ in range(10):
            tasks = [asyncio.create_task(signer.sign(b"data", "sha256")) for _ in range(6)]
            await asyncio.sleep(0)  # two jobs are queued in the executor, four wait for a session
            for t in tasks[::2]:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        assert len(await asyncio.gather(*(signer.sign(b"more", "sha256") for _ in range(4)))) == 4
        await signer.aclose()  # needs every session back
    with pytest.raises(SignerError, match="closed"):
        await signer.sign(b"data", "sha256")


# ------------------------------------------------------------------ PKCS#11 errors and keys


@requires_softhsm
async def test_wrong_pin_is_a_clear_error(
    token: SoftHsmToken, hsm_keys: dict[KeySpec, str]
) -> None:
    with pytest.raises(SignerError, match="incorrect PIN"):
        await Pkcs11Signer.open(token.module, token.label, hsm_keys["ec-p256"], "0000")
    # The token is not left half-logged-in: the right PIN still works.
    async with await Pkcs11Signer.open(
        token.module, token.label, hsm_keys["ec-p256"], token.pin
    ) as signer:
        # And a second signer with another PIN cannot ride on the first one's login.
        with pytest.raises(SignerError, match="another PIN"):
            await Pkcs11Signer.open(token.module, token.label, hsm_keys["ec-p384"], "0000")
        await signer.sign(b"still works", "sha256")


@requires_softhsm
async def test_two_signers_share_one_login(
    token: SoftHsmToken, hsm_keys: dict[KeySpec, str]
) -> None:
    first = await Pkcs11Signer.open(token.module, token.label, hsm_keys["rsa2048"], token.pin)
    second = await Pkcs11Signer.open(token.module, token.label, hsm_keys["ec-p384"], token.pin)
    await first.aclose()  # must not log the second one out
    signature = await second.sign(b"after the first closed", "sha384")
    verify_signature(second.public_key, signature, b"after the first closed", "sha384")
    await second.aclose()


@requires_softhsm
@pytest.mark.parametrize(
    ("token_label", "key_label", "message"),
    [
        ("no-such-token", "k", "no token labelled 'no-such-token'"),
        (None, "no-such-key", "no private key labelled 'no-such-key'"),
    ],
    ids=["token", "key"],
)
async def test_missing_token_or_key(
    token: SoftHsmToken, token_label: str | None, key_label: str, message: str
) -> None:
    with pytest.raises(SignerError, match=message):
        await Pkcs11Signer.open(token.module, token_label or token.label, key_label, token.pin)


@requires_softhsm
async def test_generated_key_stays_in_the_token(
    token: SoftHsmToken, hsm_keys: dict[KeySpec, str]
) -> None:
    def attributes() -> dict[str, bool]:
        tok = pkcs11.lib(token.module).get_token(token_label=token.label)
        with tok.open(user_pin=token.pin) as session:
            key = session.get_key(pkcs11.ObjectClass.PRIVATE_KEY, label=hsm_keys["ec-p256"])
            return {
                "sensitive": key[pkcs11.Attribute.SENSITIVE],
                "extractable": key[pkcs11.Attribute.EXTRACTABLE],
                "token": key[pkcs11.Attribute.TOKEN],
                "sign": key[pkcs11.Attribute.SIGN],
                "decrypt": key[pkcs11.Attribute.DECRYPT],
            }

    attrs = await asyncio.to_thread(attributes)
    assert attrs == {
        "sensitive": True,
        "extractable": False,
        "token": True,
        "sign": True,
        "decrypt": False,
    }


@requires_softhsm
async def test_generate_refuses_a_used_label(
    token: SoftHsmToken, hsm_keys: dict[KeySpec, str]
) -> None:
    with pytest.raises(SignerError, match="already exists"):
        await generate_pkcs11_key(
            token.module, token.label, token.pin, hsm_keys["ec-p256"], "ec-p256"
        )


@requires_softhsm
async def test_generated_public_key_matches_signer(token: SoftHsmToken) -> None:
    label = f"match-{uuid.uuid4().hex[:8]}"
    public_key = await generate_pkcs11_key(token.module, token.label, token.pin, label, "ec-p384")
    async with await Pkcs11Signer.open(token.module, token.label, label, token.pin) as signer:
        assert signer.public_key == public_key
        assert signer.key_type == "ec"


# ----------------------------------------------------------------------------- software signer


async def test_software_signer_warns_loudly() -> None:
    with capture_logs() as logs:
        SoftwareSigner(ec.generate_private_key(ec.SECP256R1()))
    [event] = [e for e in logs if e["event"] == "signer.key_not_in_hsm"]
    assert event["log_level"] == "warning"
    assert "NOT in an HSM" in event["detail"]


async def test_software_key_file_is_private_and_reloads(tmp_path: Path) -> None:
    path = tmp_path / "ca-key.pem"
    signer = await SoftwareSigner.generate("ec-p256", path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = await SoftwareSigner.load(path)
    assert loaded.public_key == signer.public_key
    with pytest.raises(FileExistsError):
        await SoftwareSigner.generate("ec-p256", path)


# ----------------------------------------------------------------------------- PIN resolution


ENV = "ACME_CA_TEST_HSM_PIN"


def test_resolve_pin_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    assert resolve_pin("1234", None, ENV) == "1234"
    pin_file = tmp_path / "pin"
    pin_file.write_text("5678\n")
    os.chmod(pin_file, 0o600)
    assert resolve_pin(None, pin_file, ENV) == "5678"
    monkeypatch.setenv(ENV, "9012")
    assert resolve_pin(None, None, ENV) == "9012"


@pytest.mark.parametrize(
    ("pin", "use_file", "env", "message"),
    [
        (None, False, None, "no HSM PIN"),
        ("1234", False, "5678", "more than once"),
        ("1234", True, None, "more than once"),
        ("", False, None, "empty"),
    ],
    ids=["none", "pin-and-env", "pin-and-file", "empty"],
)
def test_resolve_pin_refuses(
    pin: str | None,
    use_file: bool,
    env: str | None,
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(ENV, raising=False)
    if env is not None:
        monkeypatch.setenv(ENV, env)
    pin_file = tmp_path / "pin"
    pin_file.write_text("1234")
    with pytest.raises(SignerError, match=message):
        resolve_pin(pin, pin_file if use_file else None, ENV)
