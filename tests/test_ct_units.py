"""Certificate Transparency pieces on their own: SCT encoding, signed data and TBS surgery
(checked against cryptography and pyasn1), the v3 log list, the policy, and the test log's
acceptance rules (RFC 6962 §4.1-4.3) and chain-link cache."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID
from multidict import CIMultiDictProxy

from acme_ca.ca.ct.loglist import (
    FileLogList,
    LogListError,
    openssl_ctlog_config,
    parse_log_list,
)
from acme_ca.ca.ct.policy import CtPolicy
from acme_ca.ca.ct.sct import (
    SctError,
    SignedCertificateTimestamp,
    X509Entry,
    decode_sct_list,
    embedded_scts,
    encode_sct_list,
    final_tbs,
    log_id_of,
    precert_entry,
    remove_poison,
    sct_list_extension_value,
    signed_data,
    verify_signature,
)
from acme_ca.ca.ct.submit import _b64, _encoded, _retry_after
from acme_ca.ca.der import assemble_signed, tbs_signature_algorithm
from acme_ca.testsrv import ct_log as ct_log_module
from acme_ca.testsrv.ct_log import TestCtLog, TestLogSpec, _without_poison
from acme_ca.testsrv.ct_log_set import TestCtLogs
from tests.support.ct import pyasn1_without_poison

NOW = datetime.now(UTC).replace(microsecond=0)


# --------------------------------------------------------------------------- a small PKI


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class Pki:
    def __init__(self) -> None:
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.root = (
            x509.CertificateBuilder()
            .subject_name(_name("Root"))
            .issuer_name(_name("Root"))
            .public_key(self.root_key.public_key())
            .serial_number(1)
            .not_valid_before(NOW - timedelta(days=1))
            .not_valid_after(NOW + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.root_key, hashes.SHA256())
        )
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca = (
            x509.CertificateBuilder()
            .subject_name(_name("Issuing CA"))
            .issuer_name(_name("Root"))
            .public_key(self.ca_key.public_key())
            .serial_number(2)
            .not_valid_before(NOW - timedelta(days=1))
            .not_valid_after(NOW + timedelta(days=3000))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(self.root_key, hashes.SHA256())
        )
        self.subscriber_key = ec.generate_private_key(ec.SECP256R1())

    def leaf(
        self,
        *,
        poison: bool = True,
        critical_poison: bool = True,
        eku: list[x509.ObjectIdentifier] | None = None,
        days: int = 90,
        key: ec.EllipticCurvePrivateKey | None = None,
        serial: int = 0x1234567890ABCDEF,
        extra: Sequence[x509.ExtensionType] = (),
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name("leaf.example.com"))
            .issuer_name(self.ca.subject)
            .public_key(self.subscriber_key.public_key())
            .serial_number(serial)
            .not_valid_before(NOW)
            .not_valid_after(NOW + timedelta(days=days))
            .add_extension(
                x509.ExtendedKeyUsage(eku or [ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
            .add_extension(
                x509.SubjectAlternativeName([x509.DNSName("leaf.example.com")]), critical=False
            )
        )
        if poison:
            builder = builder.add_extension(x509.PrecertPoison(), critical=critical_poison)
        for extension in extra:
            builder = builder.add_extension(extension, critical=False)
        return builder.sign(key or self.ca_key, hashes.SHA256())

    def spki(self) -> bytes:
        return self.ca.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


def _sign_like_a_log(
    key: ec.EllipticCurvePrivateKey, entry: Any, ext: bytes = b"", ts: int = 1_700_000_000_000
) -> SignedCertificateTimestamp:
    unsigned = SignedCertificateTimestamp(0, log_id_of(_spki(key)), ts, ext, 4, 3, b"")
    signature = key.sign(signed_data(unsigned, entry), ec.ECDSA(hashes.SHA256()))
    return SignedCertificateTimestamp(0, unsigned.log_id, ts, ext, 4, 3, signature)


def _spki(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


# --------------------------------------------------------------------------- SCTs and TBS


def test_sct_tls_encoding_round_trips_and_keeps_extensions() -> None:
    sct = SignedCertificateTimestamp(
        0, os.urandom(32), 1_795_000_000_123, b"\x00\x00\x05\x00\x00\x00\x01\x02", 4, 3, b"sig" * 24
    )
    raw = sct.encode()
    assert raw[0] == 0 and raw[1:33] == sct.log_id
    assert int.from_bytes(raw[33:41], "big") == sct.timestamp
    assert raw[41:43] == b"\x00\x08" and raw[43:51] == sct.extensions
    assert SignedCertificateTimestamp.decode(raw) == sct
    listed = encode_sct_list([sct, sct])
    assert int.from_bytes(listed[:2], "big") == len(listed) - 2
    assert decode_sct_list(listed) == [sct, sct]
    assert sct_list_extension_value([sct])[0] == 0x04  # OCTET STRING wrapping the TLS list
    with pytest.raises(SctError):
        SignedCertificateTimestamp.decode(raw + b"\x00")
    with pytest.raises(SctError):
        decode_sct_list(b"\x00\x00")
    body = {
        "sct_version": 0,
        "id": base64.b64encode(sct.log_id).decode(),
        "timestamp": sct.timestamp,
        "extensions": base64.b64encode(sct.extensions).decode(),
        "signature": base64.b64encode(sct.digitally_signed()).decode(),
    }
    assert SignedCertificateTimestamp.from_json(body) == sct
    with pytest.raises(SctError):
        SignedCertificateTimestamp.from_json({**body, "signature": "!!"})


def test_poison_removal_matches_pyasn1_and_final_tbs_matches_cryptography(pki: Pki) -> None:
    precert = pki.leaf()
    plain = pki.leaf(poison=False)  # same fields, no poison (ECDSA: TBS is deterministic)
    assert remove_poison(precert.tbs_certificate_bytes) == plain.tbs_certificate_bytes
    assert _without_poison(precert) == plain.tbs_certificate_bytes
    log_key = ec.generate_private_key(ec.SECP256R1())
    entry = precert_entry(precert.tbs_certificate_bytes, pki.spki())
    scts = [_sign_like_a_log(log_key, entry, ext) for ext in (b"", b"\x00\x00\x05" + bytes(5))]
    tbs = final_tbs(precert.tbs_certificate_bytes, scts)
    signature = pki.ca_key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    final = x509.load_der_x509_certificate(
        assemble_signed(tbs, tbs_signature_algorithm(tbs), signature)
    )
    final.verify_directly_issued_by(pki.ca)
    # cryptography strips the SCT list: what remains is exactly what the logs signed.
    assert final.tbs_precertificate_bytes == entry.tbs_certificate
    ext = final.extensions.get_extension_for_class(x509.PrecertificateSignedCertificateTimestamps)
    assert not ext.critical and list(final.extensions)[-1].oid == ext.oid
    assert [s.extension_bytes for s in ext.value] == [s.extensions for s in scts]
    assert embedded_scts(tbs) == scts
    for sct in scts:
        verify_signature(sct, log_key.public_key(), entry)
    with pytest.raises(SctError, match="poison"):
        final_tbs(plain.tbs_certificate_bytes, scts)


def test_test_log_poison_removal_is_pyasn1s_and_rfc6962s(pki: Pki) -> None:
    """The test log removes the poison with cryptography's tbs_precertificate_bytes (which by
    itself drops only an SCT list, and refuses a TBS without one): the bytes are pyasn1's."""
    with pytest.raises(ValueError, match="SCT list"):
        pki.leaf().tbs_precertificate_bytes  # noqa: B018 - why _without_poison renames
    poison_der = ct_log_module._POISON_EXTENSION
    assert poison_der in pki.leaf().tbs_certificate_bytes  # the constant is the real DER
    hidden = x509.UnrecognizedExtension(
        x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x04\x15" + poison_der
    )
    precerts = {
        "poison last": (pki.leaf(), pki.leaf(poison=False)),
        # The poison's bytes once more inside another extension: still the right one goes.
        "poison DER in another field": (
            pki.leaf(extra=[hidden]),
            pki.leaf(poison=False, extra=[hidden]),
        ),
    }
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name("mid.example"))
        .issuer_name(pki.ca.subject)
        .public_key(pki.subscriber_key.public_key())
        .serial_number(77)
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=30))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )
    san = x509.SubjectAlternativeName([x509.DNSName("mid.example")])
    precerts["poison in the middle"] = (
        builder.add_extension(x509.PrecertPoison(), critical=True)
        .add_extension(san, critical=False)
        .sign(pki.ca_key, hashes.SHA256()),
        builder.add_extension(san, critical=False).sign(pki.ca_key, hashes.SHA256()),
    )
    for why, (precert, plain) in precerts.items():
        tbs = precert.tbs_certificate_bytes
        assert _without_poison(precert) == pyasn1_without_poison(tbs), why
        assert _without_poison(precert) == plain.tbs_certificate_bytes, why
    # The CA's own byte-level code agrees where it applies (it wants the poison last).
    precert = precerts["poison last"][0]
    assert _without_poison(precert) == remove_poison(precert.tbs_certificate_bytes)
    assert precerts["poison DER in another field"][0].tbs_certificate_bytes.count(poison_der) == 2


def test_test_log_verifies_chain_links_once_and_keeps_at_most_a_few(
    pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ct_log_module, "LINK_CACHE_SIZE", 2)
    ct_log = TestCtLog(TestLogSpec.generate("cache", "A"), [pki.root])

    def ca(n: int, key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
        return (
            x509.CertificateBuilder()
            .subject_name(_name(f"CA {n}"))
            .issuer_name(pki.root.subject)
            .public_key(pki.ca_key.public_key())
            .serial_number(n)
            .not_valid_before(NOW)
            .not_valid_after(NOW + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256())
        )

    cas = [ca(n, pki.root_key) for n in (1, 2, 3)]
    for cert in cas:
        ct_log._signed_by(cert, pki.root, leaf=False)
    assert list(ct_log._verified_links) == [(_der(c), _der(pki.root)) for c in cas[1:]]
    forged = ca(4, ec.generate_private_key(ec.SECP256R1()))
    for _ in range(2):  # a failure is never remembered
        with pytest.raises(InvalidSignature):
            ct_log._signed_by(forged, pki.root, leaf=False)
    assert (_der(forged), _der(pki.root)) not in ct_log._verified_links
    # A remembered link is not verified again (the cache is what the log trusts), a leaf is.
    ct_log._verified_links[(_der(forged), _der(pki.root))] = None
    ct_log._signed_by(forged, pki.root, leaf=False)
    with pytest.raises(InvalidSignature):
        ct_log._signed_by(forged, pki.root, leaf=True)
    assert not TestCtLog(TestLogSpec.generate("other", "B"), [pki.root])._verified_links


def test_signature_checks_reject_tampering(pki: Pki) -> None:
    log_key = ec.generate_private_key(ec.SECP256R1())
    entry = precert_entry(pki.leaf().tbs_certificate_bytes, pki.spki())
    sct = _sign_like_a_log(log_key, entry)
    verify_signature(sct, log_key.public_key(), entry)
    for bad in (
        SignedCertificateTimestamp(0, sct.log_id, sct.timestamp + 1, b"", 4, 3, sct.signature),
        SignedCertificateTimestamp(0, sct.log_id, sct.timestamp, b"\x00", 4, 3, sct.signature),
        SignedCertificateTimestamp(0, sct.log_id, sct.timestamp, b"", 4, 1, sct.signature),
        SignedCertificateTimestamp(0, sct.log_id, sct.timestamp, b"", 2, 3, sct.signature),
    ):
        with pytest.raises(SctError):
            verify_signature(bad, log_key.public_key(), entry)
    with pytest.raises(SctError):
        verify_signature(sct, ec.generate_private_key(ec.SECP256R1()).public_key(), entry)
    with pytest.raises(SctError):
        verify_signature(sct, log_key.public_key(), X509Entry(b"\x30\x00"))
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(SctError, match="RSA"):
        verify_signature(sct, rsa_key.public_key(), entry)


def test_ct_1_add_chain_body_is_rfc6962_json_encoded_once(pki: Pki) -> None:
    """RFC 6962 4.1: ``{"chain": [base64 DER, ...]}``, leaf first; encoded once per
    submission and the same bytes sent to every log (issue 20)."""
    body = _encoded({"chain": [_b64(pki.root), _b64(pki.root)]})
    assert isinstance(body, bytes)
    decoded = json.loads(body)
    assert list(decoded) == ["chain"]
    assert [base64.b64decode(c) for c in decoded["chain"]] == [
        pki.root.public_bytes(serialization.Encoding.DER)
    ] * 2


def test_retry_after_header() -> None:
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    assert _retry_after("7", now) == 7.0
    assert _retry_after("Mon, 23 Nov 2026 12:00:30 GMT", now) == 30.0
    assert _retry_after(None, now) is None and _retry_after("soon", now) is None


# --------------------------------------------------------------------------- log list


def _log_entry(key: ec.EllipticCurvePrivateKey, **extra: Any) -> dict[str, Any]:
    der = _spki(key)
    return {
        "description": extra.pop("description", "a log"),
        "log_id": base64.b64encode(log_id_of(der)).decode(),
        "key": base64.b64encode(der).decode(),
        "mmd": 86400,
        "state": {"usable": {"timestamp": "2025-01-01T00:00:00Z"}},
        **extra,
    }


def test_v3_log_list_with_logs_and_tiled_logs() -> None:
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(5)]
    doc = {
        "version": "42",
        "log_list_timestamp": "2026-11-01T00:00:00Z",
        "operators": [
            {
                "name": "Op 1",
                "email": [],
                "logs": [
                    _log_entry(
                        keys[0],
                        url="https://ct.example/2027h1",
                        temporal_interval={
                            "start_inclusive": "2027-01-01T00:00:00Z",
                            "end_exclusive": "2027-07-01T00:00:00Z",
                        },
                    ),
                    _log_entry(
                        keys[1],
                        url="https://ct.example/ro/",
                        state={
                            "readonly": {"timestamp": "2025-01-01T00:00:00Z", "final_tree_head": {}}
                        },
                    ),
                ],
                "tiled_logs": [
                    _log_entry(
                        keys[2],
                        submission_url="https://tiled.example/",
                        monitoring_url="https://tiles.example/",
                    ),
                ],
            },
            {
                "name": "Op 2",
                "logs": [
                    {
                        **_log_entry(keys[3], url="https://bad.example/"),
                        "log_id": base64.b64encode(b"x" * 32).decode(),
                    },  # not the key's hash
                    _log_entry(keys[4], url="https://ok.example/"),
                ],
            },
        ],
    }
    parsed = parse_log_list(json.dumps(doc))
    assert parsed.version == "42"
    assert [(x.operator, x.api, x.state, x.submission_url) for x in parsed.logs] == [
        ("Op 1", "rfc6962", "usable", "https://ct.example/2027h1/"),
        ("Op 1", "rfc6962", "readonly", "https://ct.example/ro/"),
        ("Op 1", "static-ct-api", "usable", "https://tiled.example/"),
        ("Op 2", "rfc6962", "usable", "https://ok.example/"),
    ]
    sharded = parsed.logs[0]
    assert sharded.endpoint("add-pre-chain") == "https://ct.example/2027h1/ct/v1/add-pre-chain"
    assert sharded.covers(datetime(2027, 1, 1, tzinfo=UTC))
    assert not sharded.covers(datetime(2027, 7, 1, tzinfo=UTC))
    assert not sharded.covers(datetime(2026, 12, 31, tzinfo=UTC))
    usable = parsed.usable_for(datetime(2027, 3, 1, tzinfo=UTC))
    assert [x.submission_url for x in usable] == [
        "https://ct.example/2027h1/",
        "https://tiled.example/",
        "https://ok.example/",
    ]
    assert [x.submission_url for x in parsed.usable_for(datetime(2028, 1, 1, tzinfo=UTC))] == [
        "https://tiled.example/",
        "https://ok.example/",
    ]
    conf = openssl_ctlog_config(parsed)
    assert conf.startswith("enabled_logs = log0,log1,log2,log3\n")
    assert f"key = {base64.b64encode(_spki(keys[4])).decode()}" in conf
    with pytest.raises(LogListError):
        parse_log_list("{}")
    with pytest.raises(LogListError):
        parse_log_list("not json")


def test_file_log_list_reloads_and_keeps_the_last_good_list(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "list.json"
    source = FileLogList(path)
    with pytest.raises(LogListError):
        source.current()
    path.write_text(
        json.dumps(
            {"operators": [{"name": "A", "logs": [_log_entry(key, url="https://a.example/")]}]}
        )
    )
    assert [x.operator for x in source.current().logs] == ["A"]
    path.write_text(
        json.dumps(
            {
                "operators": [
                    {
                        "name": "B",
                        "logs": [
                            _log_entry(
                                key, url="https://b.example/", description="longer description"
                            )
                        ],
                    }
                ]
            }
        )
    )
    assert [x.operator for x in source.current().logs] == ["B"]
    path.write_text("{ broken")
    assert [x.operator for x in source.current().logs] == ["B"]


# --------------------------------------------------------------------------- policy


def test_policy_counts_operators_and_rfc6962_logs() -> None:
    logs = parse_log_list(
        {
            "operators": [
                {
                    "name": op,
                    "logs" if api == "rfc6962" else "tiled_logs": [
                        _log_entry(
                            ec.generate_private_key(ec.SECP256R1()),
                            description=name,
                            **(
                                {"url": f"https://{name}/"}
                                if api == "rfc6962"
                                else {
                                    "submission_url": f"https://{name}/",
                                    "monitoring_url": f"https://{name}/",
                                }
                            ),
                        )
                    ],
                }
                for name, op, api in [
                    ("a1", "A", "rfc6962"),
                    ("a2", "A", "static"),
                    ("a3", "A", "rfc6962"),
                    ("b1", "B", "static"),
                    ("c1", "C", "static"),
                ]
            ]
        }
    ).logs
    a1, a2, a3, b1, c1 = logs
    long = CtPolicy().requirement(timedelta(days=200) - timedelta(seconds=1))
    short = CtPolicy().requirement(timedelta(days=180) - timedelta(seconds=1))
    assert (long.scts, long.max_per_operator, short.scts, short.max_per_operator) == (3, 2, 2, 1)
    assert CtPolicy().requirement(timedelta(days=180)).scts == 2
    assert CtPolicy().requirement(timedelta(days=180, seconds=1)).scts == 3
    assert long.satisfied_by([a1, a2, b1])
    assert not long.satisfied_by([a1, a2, a3])  # one operator
    assert long.satisfied_by([a2, a3, b1])
    assert not long.satisfied_by([a2, b1, c1])  # no RFC 6962 log
    assert not CtPolicy(require_rfc6962=False).requirement(timedelta(days=1)).satisfied_by([a2])
    assert CtPolicy(require_rfc6962=False).requirement(timedelta(days=1)).satisfied_by([a2, b1])
    assert short.satisfied_by([a1, b1]) and not short.satisfied_by([a1, a2])
    assert not long.satisfied_by([a1, b1])
    # Choosing: an RFC 6962 log first, then new operators, never past an operator's cap.
    assert long.next_log([], [b1, c1, a2, a1]) is a1
    assert long.next_log([a1], [a2, b1, c1]) is b1
    assert short.next_log([a1], [a2, a3]) is None
    assert long.next_log([a1, a2], [a3, c1]) is c1


# --------------------------------------------------------------------------- the test log


async def _post(
    session: aiohttp.ClientSession, url: str, chain: list[x509.Certificate]
) -> tuple[int, Any, CIMultiDictProxy[str]]:
    body = {
        "chain": [
            base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode() for c in chain
        ]
    }
    async with session.post(url, json=body) as response:
        text = await response.text()
        data = json.loads(text) if response.status == 200 else text
        return response.status, data, response.headers


async def test_test_log_accepts_what_rfc6962_allows_and_nothing_else(pki: Pki) -> None:
    specs = [
        TestLogSpec.generate("plain", "A", start=NOW, end=NOW + timedelta(days=365)),
        TestLogSpec.generate("tiled", "B", mode="static-ct-api"),
    ]
    other_root = Pki()
    async with TestCtLogs(specs, [pki.root]) as logs, aiohttp.ClientSession() as http:
        plain, tiled = logs["plain"], logs["tiled"]
        async with http.get(plain.url + "ct/v1/get-roots") as response:
            roots = (await response.json())["certificates"]
        assert roots == [
            base64.b64encode(pki.root.public_bytes(serialization.Encoding.DER)).decode()
        ]
        async with http.get(plain.url + "log_list.json") as response:
            listed = parse_log_list(await response.json())
        assert [(x.name, x.api) for x in listed.logs] == [
            ("plain", "rfc6962"),
            ("tiled", "static-ct-api"),
        ]

        precert = pki.leaf()
        pre = plain.url + "ct/v1/add-pre-chain"
        status, first, _ = await _post(http, pre, [precert, pki.ca])
        assert status == 200, first
        sct = SignedCertificateTimestamp.from_json(first)
        assert sct.log_id == plain.log_id and sct.extensions == b""
        entry = precert_entry(precert.tbs_certificate_bytes, pki.spki())
        verify_signature(sct, listed.logs[0].public_key, entry)
        # The same entry again: the same SCT (the chain may even end at the root itself).
        assert (await _post(http, pre, [precert, pki.ca, pki.root]))[1] == first

        rejected = {
            "non-critical poison": [pki.leaf(critical_poison=False), pki.ca],
            "no poison": [pki.leaf(poison=False), pki.ca],
            "no serverAuth": [pki.leaf(eku=[ExtendedKeyUsageOID.CLIENT_AUTH]), pki.ca],
            "notAfter outside the interval": [pki.leaf(days=400), pki.ca],
            "unknown root": [other_root.leaf(), other_root.ca],
            "bad signature": [pki.leaf(key=ec.generate_private_key(ec.SECP256R1())), pki.ca],
            "no issuer": [precert],
        }
        for why, chain in rejected.items():
            status, text, _ = await _post(http, pre, chain)
            assert status == 400, (why, text)
        status, text, _ = await _post(http, plain.url + "ct/v1/add-chain", [precert, pki.ca])
        assert status == 400 and "precertificate" in text
        final = pki.leaf(poison=False)
        status, body, _ = await _post(http, plain.url + "ct/v1/add-chain", [final, pki.ca])
        assert status == 200
        x509_sct = SignedCertificateTimestamp.from_json(body)
        verify_signature(
            x509_sct,
            listed.logs[0].public_key,
            X509Entry(final.public_bytes(serialization.Encoding.DER)),
        )

        # static-ct-api: leaf_index extension, one more per new entry.
        indexes = []
        for serial in (101, 102):
            status, body, _ = await _post(
                http, tiled.url + "ct/v1/add-pre-chain", [pki.leaf(serial=serial), pki.ca]
            )
            ext = base64.b64decode(body["extensions"])
            assert ext[:3] == b"\x00\x00\x05" and len(ext) == 8
            indexes.append(int.from_bytes(ext[3:], "big"))
        assert indexes == [0, 1]

        # Fault knobs.
        tiled.faults.retry_after = 9
        status, _, headers = await _post(http, tiled.url + "ct/v1/add-pre-chain", [precert, pki.ca])
        assert status == 429 and headers["Retry-After"] == "9"
        tiled.faults.clear()
        tiled.faults.unavailable = True
        assert (await _post(http, tiled.url + "ct/v1/add-pre-chain", [precert, pki.ca]))[0] == 503
        tiled.faults.clear()
        tiled.faults.future_timestamp = True
        status, body, _ = await _post(http, tiled.url + "ct/v1/add-pre-chain", [precert, pki.ca])
        assert body["timestamp"] > (datetime.now(UTC) + timedelta(minutes=50)).timestamp() * 1000


async def test_test_log_checks_every_leaf_after_its_issuer_was_remembered(pki: Pki) -> None:
    """A cached issuer -> root link never vouches for a leaf: a leaf its issuer did not sign
    is refused after a good submission through the same issuer; a failed link is not kept."""
    other = Pki()  # same names ("Issuing CA" under "Root"), other keys
    forger = ec.generate_private_key(ec.SECP256R1())
    root_leaf = (
        x509.CertificateBuilder()
        .subject_name(_name("direct.example.com"))
        .issuer_name(pki.root.subject)
        .public_key(pki.subscriber_key.public_key())
        .serial_number(404)
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=30))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )
    async with (
        TestCtLogs([TestLogSpec.generate("cache", "A")], [pki.root]) as logs,
        aiohttp.ClientSession() as http,
    ):
        ct_log = logs["cache"]
        pre, add = ct_log.url + "ct/v1/add-pre-chain", ct_log.url + "ct/v1/add-chain"
        for _ in range(2):
            status, text, _ = await _post(http, pre, [other.leaf(serial=301), other.ca])
            assert status == 400 and "accepted root" in text, text
        assert not ct_log._verified_links

        assert (await _post(http, pre, [pki.leaf(serial=302), pki.ca]))[0] == 200
        ca_link = (_der(pki.ca), _der(pki.root))
        assert list(ct_log._verified_links) == [ca_link]
        for url, chain in (
            (pre, [pki.leaf(serial=303, key=forger), pki.ca]),
            (pre, [pki.leaf(serial=303, key=forger), pki.ca, pki.root]),
            (add, [pki.leaf(serial=303, poison=False, key=forger), pki.ca]),
        ):
            status, text, _ = await _post(http, url, chain)
            assert status == 400 and "is not signed by" in text, text
        assert (await _post(http, add, [pki.leaf(serial=302, poison=False), pki.ca]))[0] == 200
        assert list(ct_log._verified_links) == [ca_link] and ct_log.entries == 2

        # A certificate issued by the root itself is the leaf: verified every time, not kept.
        assert (await _post(http, add, [root_leaf.sign(pki.root_key, hashes.SHA256())]))[0] == 200
        status, text, _ = await _post(http, add, [root_leaf.sign(forger, hashes.SHA256())])
        assert status == 400 and "accepted root" in text, text
        assert list(ct_log._verified_links) == [ca_link]

        # Precertificates the poison removal cannot serve are refused, not answered with 500.
        sct = _sign_like_a_log(forger, X509Entry(b"\x30\x00"))
        with_scts = x509.UnrecognizedExtension(
            ExtensionOID.PRECERT_SIGNED_CERTIFICATE_TIMESTAMPS, sct_list_extension_value([sct])
        )
        status, text, _ = await _post(http, pre, [pki.leaf(serial=305, extra=[with_scts]), pki.ca])
        assert status == 400 and "SCT list" in text, text
        not_null = x509.UnrecognizedExtension(ExtensionOID.PRECERT_POISON, b"\x04\x00")
        status, text, _ = await _post(
            http, pre, [pki.leaf(serial=306, poison=False, extra=[not_null]), pki.ca]
        )
        assert status == 400 and "malformed extensions" in text, text
