"""GET {renewalInfo}/{certID} (RFC 9773 §4): unauthenticated, so plain GET, and cacheable.

The certID names a certificate by its issuer's key identifier and its serial; the serial
finds the row and the stored DER must carry the same AKI keyIdentifier, so a certID made up
from one of our serials and another issuer's key identifier is unknown (404).  The window
and Retry-After come from :func:`acme_ca.acme.ari.suggested_window`.
"""

from __future__ import annotations

from fractions import Fraction

from aiohttp import web

from acme_ca.acme import ari, problems
from acme_ca.acme.problems import AcmeError
from acme_ca.acme.resources import rfc3339
from acme_ca.db.certificates import CertificateRecord
from acme_ca.wfe.responses import acme_json
from acme_ca.wfe.services import FrontEnd, front_end

#: Shared caches may keep an answer this long (ARI-4; never longer than its Retry-After).
MAX_CACHE_SECONDS = 3600


async def get_renewal_info(request: web.Request) -> web.Response:
    fe = front_end(request)
    try:
        wanted = ari.parse_cert_id(request.match_info["cert_id"])
    except ari.CertIdError as exc:
        raise AcmeError(problems.malformed(f"malformed certID: {exc}")) from None
    record = await fe.certificate_reads.get_by_serial(wanted.serial_hex)
    if record is None or not ari.matches(record.der, wanted):
        raise AcmeError(problems.not_found("no certificate with this certID was issued here"))
    window = ari.suggested_window(
        record.not_before, record.not_after, record.revoked_at, await _profile_window(fe, record)
    )
    retry_after = int(window.retry_after.total_seconds())
    return acme_json(
        {"suggestedWindow": {"start": rfc3339(window.start), "end": rfc3339(window.end)}},
        headers={
            "Retry-After": str(retry_after),
            "Cache-Control": f"public, max-age={min(retry_after, MAX_CACHE_SECONDS)}",
        },
    )


async def _profile_window(fe: FrontEnd, record: CertificateRecord) -> tuple[Fraction, Fraction]:
    """The renewal window of the profile the certificate was issued under (ARI per profile:
    ``shortlived`` windows follow its validity); the default one when its order or profile is
    gone."""
    order = None if record.order_id is None else await fe.order_reads.get_order(record.order_id)
    profile = None if order is None else fe.orders.profiles.get(order.profile)
    return ari.DEFAULT_WINDOW if profile is None else profile.renewal_window


async def any_renewal_info_base(request: web.Request) -> web.Response:
    """The directory's renewalInfo URL is a prefix, not a resource: every method there is 405
    (as for any advertised URL used the wrong way), naming the right request."""
    raise AcmeError(
        problems.method_not_allowed(
            "renewalInfo is fetched per certificate: GET {renewalInfo}/{certID} (RFC 9773 §4.1)"
        )
    )
