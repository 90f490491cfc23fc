"""Finalize and certificate download (RFC 8555 §7.4, §7.4.2)."""

from __future__ import annotations

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from acme_ca.acme import problems
from acme_ca.acme.messages import Finalize
from acme_ca.acme.problems import AcmeError
from acme_ca.db.certificates import CertificateRecord
from acme_ca.wfe.order import order_resource, own_order, retry_after
from acme_ca.wfe.responses import acme_json
from acme_ca.wfe.services import FrontEnd, front_end
from acme_ca.wfe.verify import verify_post_reading

PEM_CHAIN = "application/pem-certificate-chain"


async def post_finalize(request: web.Request) -> web.Response:
    fe = front_end(request)
    order_id = int(request.match_info["order_id"])
    # The order and its validations (the CAA recheck's) in the nonce's round trip.
    verified, found = await verify_post_reading(
        request,
        lambda redemption: fe.order_reads.get_order_to_finalize_redeeming(order_id, redemption),
        Finalize,
    )
    account = verified.require_account()
    order = own_order(found[0] if found is not None else None, account.id)
    assert found is not None  # own_order refused it otherwise
    updated = await fe.finalize.finalize(account, order, verified.message, validations=found[1])
    status = fe.orders.current_status(updated)
    return acme_json(
        order_resource(updated, status).to_json(fe.urls),
        location=fe.urls.order(order.id),
        headers=retry_after(fe, status),
    )


async def _own_certificate(request: web.Request, fe: FrontEnd) -> CertificateRecord:
    certificate_id = int(request.match_info["certificate_id"])
    verified, record = await verify_post_reading(
        request, lambda redemption: fe.certificate_reads.get_redeeming(certificate_id, redemption)
    )
    if not verified.jws.is_post_as_get:
        raise AcmeError(problems.malformed("a certificate is fetched with POST-as-GET"))
    if record is None or record.account_id != verified.require_account().id:
        raise AcmeError(problems.not_found("no such certificate"))
    return record


def _leaf_pem(record: CertificateRecord) -> str:
    cert = x509.load_der_x509_certificate(record.der)
    return cert.public_bytes(Encoding.PEM).decode()


async def post_certificate(request: web.Request) -> web.Response:
    """The leaf and its chain, with the alternate chains linked (§7.4.2)."""
    fe = front_end(request)
    record = await _own_certificate(request, fe)
    alt = request.match_info.get("alt")
    if alt is None:
        chain = record.chain_pem
    else:
        index = int(alt)
        if not 1 <= index <= len(record.alternate_chains):
            raise AcmeError(problems.not_found("no such alternate chain"))
        chain = record.alternate_chains[index - 1]
    # Bytes, not text: aiohttp would add "; charset=utf-8", a parameter RFC 8555 §9.1 does
    # not define for this type (Boulder sends the bare type too).
    response = web.Response(body=(_leaf_pem(record) + chain).encode(), content_type=PEM_CHAIN)
    response.headers.add("Link", f'<{fe.urls.certificate_issuer(record.id)}>;rel="up"')
    for n in range(1, len(record.alternate_chains) + 1):
        if alt is None or int(alt) != n:
            response.headers.add(
                "Link", f'<{fe.urls.certificate_alternate(record.id, n)}>;rel="alternate"'
            )
    if alt is not None:
        response.headers.add("Link", f'<{fe.urls.certificate(record.id)}>;rel="alternate"')
    return response


async def post_certificate_issuer(request: web.Request) -> web.Response:
    """The issuer's certificate as application/pkix-cert, for the leaf's ``rel="up"`` link."""
    fe = front_end(request)
    record = await _own_certificate(request, fe)
    issuers = x509.load_pem_x509_certificates(record.chain_pem.encode())
    return web.Response(
        body=issuers[0].public_bytes(Encoding.DER), content_type="application/pkix-cert"
    )
