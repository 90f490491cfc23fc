"""OCSP (CP 4.9.9, 4.10, Table 7.3.2; BR 4.9.9, 4.9.10, 7.3; RFC 6960, RFC 5019): responses
pre-produced by the status updater with the issuing CAs' software keys, stored in a real
PostgreSQL, and answered by the key-less responder over GET and POST."""

from __future__ import annotations

import asyncio
import base64
import email.utils
import hashlib
import secrets
import urllib.parse
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from acme_ca.ca.der import encode_tlv, split_signed
from acme_ca.ca.signer import SIGNATURE_ALGORITHMS, verify_signature
from acme_ca.db.status import OcspResponseRecord
from acme_ca.status.crl import der_children
from acme_ca.status.ocsp import (
    MALFORMED_REQUEST,
    UNAUTHORIZED,
    CertIdHash,
    CertStatus,
    MalformedRequest,
    OcspResponder,
    _issuer_hashes,
    basic_response_of,
    decode_get_request,
    issuer_hashes,
    parse_request,
    responder_key_hash,
    sign_ocsp_response,
)
from acme_ca.status.updater import ocsp_refresh_age
from tests.support import status as status_support
from tests.support.pkilint import pkilint
from tests.support.status import ISSUERS, REPO, StatusEnv, StatusSite, spk_bits

# The shared fixtures of the status tests.
status_config = status_support.status_config
env = status_support.env
status_site = status_support.status_site

LINT_OCSP = REPO / ".venv" / "bin" / "lint_ocsp_response"
HASHES = {"sha1": hashes.SHA1(), "sha256": hashes.SHA256()}


def request_for(env: StatusEnv, issuer: str, serial: str | int, algorithm: str = "sha1") -> bytes:
    certificate = env.issuers.by_name(issuer).certificate
    name_hash = hashlib.new(algorithm, certificate.subject.public_bytes()).digest()
    key_hash = hashlib.new(algorithm, spk_bits(certificate)).digest()
    serial_int = int(serial, 16) if isinstance(serial, str) else serial
    return (
        ocsp.OCSPRequestBuilder()
        .add_certificate_by_hash(name_hash, key_hash, serial_int, HASHES[algorithm])
        .build()
        .public_bytes(Encoding.DER)
    )


async def responses_for(env: StatusEnv, issuer: str, serial: str) -> dict[str, OcspResponseRecord]:
    out = {}
    for algorithm in ("sha1", "sha256"):
        record = await env.repository.get_ocsp_response(issuer, serial, algorithm)
        assert record is not None, algorithm
        out[algorithm] = record
    return out


# ------------------------------------------------------------------ response profile


@pytest.mark.parametrize("issuer", ISSUERS)
async def test_ocsp_2_4_5_good_response_profile(env: StatusEnv, issuer: str) -> None:
    _, serial = await env.add_certificate(issuer)
    await env.updater().refresh_ocsp()
    ca = env.issuers.by_name(issuer)
    for algorithm, record in (await responses_for(env, issuer, serial)).items():
        response = ocsp.load_der_ocsp_response(record.der)
        assert response.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
        # OCSP-4: byKey, SHA-1 of the subjectPublicKey bits (= the CA's RFC 5280 SKI).
        assert response.responder_name is None
        assert response.responder_key_hash == hashlib.sha1(spk_bits(ca.certificate)).digest()
        ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        assert response.responder_key_hash == ski.value.digest
        # The issuing CA itself signs: no certs, signature by its key, BR algorithm encoding.
        assert response.certificates == []
        verify_signature(
            ca.signer.public_key, response.signature, response.tbs_response_bytes, ca.hash
        )
        _, outer, _ = split_signed(basic_response_of(record.der))
        assert outer == SIGNATURE_ALGORITHMS[(ca.key_type, ca.hash)]
        # OCSP-2/3: one SingleResponse, CertID in the stored algorithm.
        (single,) = list(response.responses)
        assert single.serial_number == int(serial, 16)
        assert single.hash_algorithm.name == algorithm
        ids = issuer_hashes(ca.certificate, algorithm)  # type: ignore[arg-type]
        assert single.issuer_name_hash == ids.name_hash
        assert single.issuer_key_hash == ids.key_hash
        assert single.certificate_status == ocsp.OCSPCertStatus.GOOD
        # OCSP-5 / BR 4.9.10: nextUpdate set, 96 h; producedAt = signing time; whole seconds.
        assert single.this_update_utc == env.clock.now()
        assert single.next_update_utc == env.clock.now() + timedelta(hours=96)
        assert response.produced_at_utc == env.clock.now()
        assert (record.this_update, record.next_update) == (
            single.this_update_utc,
            single.next_update_utc,
        )
        # No nonce, no extensions at all (pre-produced, BR-OCSP-4: no reasonCode extension).
        assert len(response.extensions) == 0 and len(response.single_extensions) == 0
        assert b"\x18\x0f" in record.der  # GeneralizedTime of 15 chars: no fractions
        assert record.status == "good"


@pytest.mark.parametrize(
    ("reason", "flag"),
    [(1, x509.ReasonFlags.key_compromise), (4, x509.ReasonFlags.superseded), (0, None)],
    ids=["keyCompromise", "superseded", "unspecified"],
)
async def test_br_ocsp_revoked_with_time_and_reason(
    env: StatusEnv, reason: int, flag: x509.ReasonFlags | None
) -> None:
    row_id, serial = await env.add_certificate("dv-rsa")
    updater = env.updater()
    await updater.refresh_ocsp()
    revoked_at = env.clock.now() - timedelta(minutes=5)
    await env.revoke(row_id, reason, revoked_at)
    await updater.refresh_certificates([("dv-rsa", serial)], trigger="test")
    for record in (await responses_for(env, "dv-rsa", serial)).values():
        response = ocsp.load_der_ocsp_response(record.der)
        assert response.certificate_status == ocsp.OCSPCertStatus.REVOKED
        assert response.revocation_time_utc == revoked_at
        assert response.revocation_reason == flag
        assert len(response.single_extensions) == 0
        assert (record.status, record.revocation_reason) == ("revoked", reason)


async def test_revoked_response_is_never_replaced_by_good(env: StatusEnv) -> None:
    row_id, serial = await env.add_certificate("dv-ecc")
    ca = env.issuers.by_name("dv-ecc")
    now = env.clock.now()

    async def record(status: CertStatus, offset: int) -> OcspResponseRecord:
        at = now + timedelta(seconds=offset)
        der = await sign_ocsp_response(
            ca.certificate,
            ca.signer,
            int(serial, 16),
            status,
            "sha1",
            this_update=at,
            next_update=at + timedelta(hours=96),
            produced_at=at,
        )
        until = at + timedelta(hours=96)
        return OcspResponseRecord(
            "dv-ecc", serial, "sha1", status.name, status.reason, der, at, until, at
        )

    revoked = await record(CertStatus(now, 1), 0)
    stale_good = await record(CertStatus(), 1)  # signed from a read before the revocation
    assert await env.repository.store_ocsp_response(revoked)
    assert not await env.repository.store_ocsp_response(stale_good)
    stored = await env.repository.get_ocsp_response("dv-ecc", serial, "sha1")
    assert stored is not None and stored.status == "revoked"
    del row_id


async def test_br_4_10_2_both_cert_id_responses_stored_in_one_statement(env: StatusEnv) -> None:
    """A certificate's SHA-1 and SHA-256 CertID responses are stored together (issue 20),
    each row under the same rule as alone: an older response than the stored one is not."""
    _, serial = await env.add_certificate("dv-ecc")
    ca = env.issuers.by_name("dv-ecc")
    now = env.clock.now().replace(microsecond=0)

    async def record(algorithm: CertIdHash, offset: int) -> OcspResponseRecord:
        at = now + timedelta(seconds=offset)
        until = at + timedelta(hours=96)
        der = await sign_ocsp_response(
            ca.certificate,
            ca.signer,
            int(serial, 16),
            CertStatus(),
            algorithm,
            this_update=at,
            next_update=until,
            produced_at=at,
        )
        return OcspResponseRecord("dv-ecc", serial, algorithm, "good", None, der, at, until, at)

    first = [await record("sha1", 10), await record("sha256", 10)]
    assert await env.repository.store_ocsp_responses(first) == {"sha1", "sha256"}
    later = [await record("sha1", 5), await record("sha256", 20)]  # sha1 older than stored
    assert await env.repository.store_ocsp_responses(later) == {"sha256"}
    for algorithm, kept in (("sha1", first[0]), ("sha256", later[1])):
        stored = await env.repository.get_ocsp_response("dv-ecc", serial, algorithm)
        assert stored is not None and stored.der == kept.der


@pytest.mark.skipif(not LINT_OCSP.exists(), reason="pkilint not installed in .venv")
async def test_lint_5_good_and_revoked_responses_lint_clean(env: StatusEnv, tmp_path: Path) -> None:
    targets = []
    for issuer in ISSUERS:
        _, good = await env.add_certificate(issuer)
        row_id, revoked = await env.add_certificate(issuer)
        await env.revoke(row_id, 1)
        targets += [(issuer, good), (issuer, revoked)]
    await env.updater().refresh_ocsp()
    for issuer, serial in targets:
        for algorithm, record in (await responses_for(env, issuer, serial)).items():
            path = tmp_path / f"{issuer}-{serial}-{algorithm}.der"
            path.write_bytes(record.der)
            result = await asyncio.to_thread(pkilint, LINT_OCSP, "lint", "-s", "ERROR", path)
            assert result.returncode == 0, f"{path.name}: {result.stdout}{result.stderr}"


# ------------------------------------------------------------------ answering requests


@pytest.mark.parametrize("algorithm", ["sha1", "sha256"])
async def test_ocsp_3_certid_sha1_and_sha256(env: StatusEnv, algorithm: str) -> None:
    _, serial = await env.add_certificate("dv-ecc")
    await env.updater().refresh_ocsp()
    responder = OcspResponder(
        env.repository, {n: env.issuers.by_name(n).certificate for n in ISSUERS}, env.clock
    )
    answer = await responder.answer(request_for(env, "dv-ecc", serial, algorithm))
    assert answer.record is not None
    response = ocsp.load_der_ocsp_response(answer.der)
    assert response.hash_algorithm.name == algorithm
    assert response.serial_number == int(serial, 16)
    assert response.certificate_status == ocsp.OCSPCertStatus.GOOD


async def test_ocsp_3_sha256_certid(env: StatusEnv) -> None:
    _, serial = await env.add_certificate("dv-rsa")
    await env.updater().refresh_ocsp()
    responder = OcspResponder(
        env.repository, {n: env.issuers.by_name(n).certificate for n in ISSUERS}, env.clock
    )
    request = request_for(env, "dv-rsa", serial, "sha256")
    assert ocsp.load_der_ocsp_request(request).hash_algorithm.name == "sha256"
    response = ocsp.load_der_ocsp_response((await responder.answer(request)).der)
    assert response.hash_algorithm.name == "sha256"
    assert response.issuer_key_hash == ocsp.load_der_ocsp_request(request).issuer_key_hash


async def test_br_ocsp_4_unknown_serial_never_good(env: StatusEnv) -> None:
    _, serial = await env.add_certificate("dv-rsa")
    await env.updater().refresh_ocsp()
    responder = OcspResponder(
        env.repository, {n: env.issuers.by_name(n).certificate for n in ISSUERS}, env.clock
    )
    never_issued = secrets.randbits(127) | 1 << 120
    cases = {
        "never issued": request_for(env, "dv-rsa", never_issued),
        "never issued, sha256": request_for(env, "dv-rsa", never_issued, "sha256"),
        "another CA's CertID": request_for(env, "dv-ecc", serial),
        "SHA-384 CertID": ocsp.OCSPRequestBuilder()
        .add_certificate_by_hash(b"\x01" * 48, b"\x02" * 48, int(serial, 16), hashes.SHA384())
        .build()
        .public_bytes(Encoding.DER),
    }
    for what, request in cases.items():
        answer = await responder.answer(request)
        assert answer.der == UNAUTHORIZED, what
        assert answer.record is None, what
        assert ocsp.load_der_ocsp_response(answer.der).response_status == (
            ocsp.OCSPResponseStatus.UNAUTHORIZED
        )
    # Issued but not produced yet: unauthorized too (RFC 5019 2.2.3), never good.
    _, fresh = await env.add_certificate("dv-rsa")
    assert (await responder.answer(request_for(env, "dv-rsa", fresh))).der == UNAUTHORIZED
    # A lapsed response is not served.
    env.clock.advance(timedelta(hours=96))
    assert (await responder.answer(request_for(env, "dv-rsa", serial))).der == UNAUTHORIZED


def _two_cert_request(env: StatusEnv) -> bytes:
    """OCSPRequest { TBSRequest { requestList } } with its one Request twice (RFC 5019 2.1.1
    allows one)."""
    (tbs_request,) = der_children(request_for(env, "dv-rsa", 5))
    (request_list,) = der_children(tbs_request)
    (request,) = der_children(request_list)
    doubled = encode_tlv(0x30, request + request)
    return encode_tlv(0x30, encode_tlv(0x30, doubled))


async def test_ocsp_7_malformed_requests_get_unsigned_malformed(env: StatusEnv) -> None:
    responder = OcspResponder(
        env.repository, {n: env.issuers.by_name(n).certificate for n in ISSUERS}, env.clock
    )
    assert bytes.fromhex("30030a0101") == MALFORMED_REQUEST
    for request in (b"", b"\x30\x03\x02\x01\x01", b"not DER", _two_cert_request(env)):
        answer = await responder.answer(request)
        assert answer.der == MALFORMED_REQUEST
        assert answer.record is None
    with pytest.raises(MalformedRequest):
        parse_request(b"\x30" * 5000)
    with pytest.raises(MalformedRequest):
        decode_get_request("not*base64")


def test_ocsp_1_get_path_decoding() -> None:
    der = bytes(range(256))
    encoded = base64.b64encode(der).decode()
    assert "/" in encoded and "+" in encoded
    assert decode_get_request(urllib.parse.quote(encoded, safe="")) == der
    assert decode_get_request(encoded) == der  # '/' and '+' left as they are
    assert decode_get_request(encoded.rstrip("=")) == der
    assert decode_get_request(base64.urlsafe_b64encode(der).decode()) == der


def _serial_with_slash_and_plus(env: StatusEnv) -> int:
    while True:
        serial = secrets.randbits(127) | 1 << 120
        encoded = base64.b64encode(request_for(env, "dv-rsa", serial)).decode()
        if "/" in encoded and "+" in encoded and "=" in encoded:
            return serial


async def test_ocsp_1_9_get_and_post_over_http_with_caching_headers(
    env: StatusEnv, status_site: StatusSite
) -> None:
    serial_int = _serial_with_slash_and_plus(env)
    _, serial = await env.add_certificate("dv-rsa", serial=serial_int)
    await env.updater().refresh_ocsp()
    record = await env.repository.get_ocsp_response("dv-rsa", serial, "sha1")
    assert record is not None
    request = request_for(env, "dv-rsa", serial)
    encoded = urllib.parse.quote(base64.b64encode(request).decode(), safe="")
    assert "%2F" in encoded and "%2B" in encoded and "%3D" in encoded
    base = status_site.base_url
    session = status_site.session

    async with session.get(f"{base}/ocsp/dv-rsa/{encoded}") as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "application/ocsp-response"
        body = await r.read()
        headers = r.headers
    assert body == record.der
    assert email.utils.parsedate_to_datetime(headers["Last-Modified"]) == record.produced_at
    assert email.utils.parsedate_to_datetime(headers["Expires"]) == record.next_update
    directives = [d.strip() for d in headers["Cache-Control"].split(",")]
    assert {"public", "no-transform", "must-revalidate"} <= set(directives)
    (max_age,) = [int(d.split("=")[1]) for d in directives if d.startswith("max-age=")]
    assert 0 < max_age <= (record.next_update - env.clock.now()).total_seconds()
    etag = headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"')

    async with session.get(f"{base}/ocsp/dv-rsa/{encoded}", headers={"If-None-Match": etag}) as r:
        assert r.status == 304
    async with session.post(
        f"{base}/ocsp/dv-rsa",
        data=request,
        headers={"Content-Type": "application/ocsp-request"},
    ) as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "application/ocsp-response"
        assert await r.read() == record.der
    # Malformed and unknown: unsigned, never cached.
    async with session.get(f"{base}/ocsp/dv-rsa/%%%") as r:
        assert await r.read() == MALFORMED_REQUEST
        assert "no-store" in r.headers["Cache-Control"]
    async with session.post(f"{base}/ocsp/dv-rsa", data=request_for(env, "dv-rsa", 7)) as r:
        assert await r.read() == UNAUTHORIZED


# ------------------------------------------------------------------ when responses are made


def test_br_ocsp_3_refresh_age() -> None:
    assert ocsp_refresh_age(timedelta(hours=96)) == timedelta(hours=48)
    assert ocsp_refresh_age(timedelta(hours=8)) == timedelta(hours=4)
    # 10-day responses: at most 4 days after thisUpdate (and so ≥ 8 h before nextUpdate).
    assert ocsp_refresh_age(timedelta(days=10)) == timedelta(days=4)


async def test_br_ocsp_3_refreshed_before_half_life(env: StatusEnv) -> None:
    _, serial = await env.add_certificate("dv-ecc", not_after=env.clock.now() + timedelta(days=9))
    updater = env.updater()
    await updater.refresh_ocsp()
    first = await responses_for(env, "dv-ecc", serial)
    env.clock.advance(timedelta(hours=47, minutes=59))
    await updater.refresh_ocsp()
    assert await responses_for(env, "dv-ecc", serial) == first
    env.clock.advance(timedelta(minutes=1))
    await updater.refresh_ocsp()
    second = await responses_for(env, "dv-ecc", serial)
    for algorithm in first:
        assert second[algorithm].this_update == first[algorithm].this_update + timedelta(hours=48)
    # An expired certificate is no longer refreshed.
    env.clock.advance(timedelta(days=9))
    assert not await env.repository.certificates_needing_ocsp(
        ISSUERS, ("sha1", "sha256"), now=env.clock.now(), fresh_after=env.clock.now()
    )


async def test_ocsp_status_change_caught_by_poll(env: StatusEnv) -> None:
    """A revocation whose NOTIFY was lost: the periodic pass sees the stale status."""
    _, serial = await env.add_certificate("dv-rsa")
    updater = env.updater()
    await updater.refresh_ocsp()
    await env.pool.execute(
        "UPDATE certificates SET revoked_at = $2, revocation_reason = 5 WHERE serial = $1",
        serial,
        env.clock.now(),
    )
    await updater.refresh_ocsp()
    for record in (await responses_for(env, "dv-rsa", serial)).values():
        assert record.status == "revoked" and record.revocation_reason == 5


def test_responder_key_hash_is_sha1_of_public_key_bits(env: StatusEnv) -> None:
    for name in ISSUERS:
        certificate = env.issuers.by_name(name).certificate
        assert responder_key_hash(certificate) == hashlib.sha1(spk_bits(certificate)).digest()


async def test_br_7_2_2_moved_revocation_time_caught_by_poll(env: StatusEnv) -> None:
    """A revocation date moved back (keyCompromise known to be older, BR 7.2.2) with the same
    status and reason: the periodic pass re-signs the responses with the new time."""
    row_id, serial = await env.add_certificate("dv-ecc")
    first = env.clock.now() - timedelta(minutes=1)
    await env.revoke(row_id, 1, first)
    updater = env.updater()
    await updater.refresh_ocsp()
    earlier = first - timedelta(hours=5)
    await env.pool.execute(
        "UPDATE certificates SET revoked_at = $2 WHERE serial = $1", serial, earlier
    )
    await updater.refresh_ocsp()
    for record in (await responses_for(env, "dv-ecc", serial)).values():
        response = ocsp.load_der_ocsp_response(record.der)
        assert response.revocation_time_utc == earlier
        assert response.revocation_reason == x509.ReasonFlags.key_compromise
        assert record.revoked_at == earlier


def test_ocsp_3_cert_id_hashes_remembered_per_issuer_and_algorithm(env: StatusEnv) -> None:
    """The CertID hashes and the ResponderID are remembered per issuer certificate (issue 20:
    computed twice per certificate issued); each issuer and algorithm keeps its own, as RFC
    6960 4.1.1 and 4.2.1 define them, after the others were asked."""
    for _ in range(2):  # the second round answers from what the first remembered
        for name in ISSUERS:
            certificate = env.issuers.by_name(name).certificate
            for algorithm in ("sha1", "sha256"):
                ids = issuer_hashes(certificate, algorithm)
                assert ids.algorithm == algorithm
                assert (
                    ids.name_hash
                    == hashlib.new(algorithm, certificate.subject.public_bytes()).digest()
                )
                assert ids.key_hash == hashlib.new(algorithm, spk_bits(certificate)).digest()
            assert responder_key_hash(certificate) == hashlib.sha1(spk_bits(certificate)).digest()
    assert _issuer_hashes.cache_info().hits >= 2 * len(ISSUERS)
