"""What the Baseline Requirements fix as pure data: date-gated limits and policy OIDs.

BR 4.2.1 (ballot SC-081): how long domain-validation data and Subject Identity Information
may be reused; BR 3.2.2.4.7 / .19: how long a token is usable; BR 3.2.2.4.22: the
dns-persist-01 cap; BR 7.1.6.1: the CA/Browser Forum reserved policy OIDs.  Each date limit
applies from 00:00 UTC of its effective date.

A bottom-layer module (no room, no I/O, no clock): the RA applies these limits at newOrder and
finalize, the signing worker (``ca/recheck.py``) again with the signing time, and neither
reaches into the other for them.  Which BR method each ACME challenge type implements is the
VA's registry (``va/registry.BR_METHODS``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

from acme_ca.acme.resources import DNS_PERSIST_01

#: The Baseline Requirements version this code implements, recorded with every validation
#: (BR 3.2.2.4: "the CA SHALL maintain a record of which domain validation method, including
#: the relevant BR version number, was used").
BR_VERSION: Final = "2.2.6"

#: BR 7.1.6.1: the reserved policy identifier of a Domain Validated certificate.
DV_POLICY_OID: Final = "2.23.140.1.2.1"
#: BR 7.1.6.1: the reserved policy identifier of an Organization Validated certificate.
OV_POLICY_OID: Final = "2.23.140.1.2.2"

_DCV_REUSE = (
    (datetime(2029, 3, 15, tzinfo=UTC), timedelta(days=10)),
    (datetime(2027, 3, 15, tzinfo=UTC), timedelta(days=100)),
    (datetime(2026, 3, 15, tzinfo=UTC), timedelta(days=200)),
)
_DCV_REUSE_BEFORE = timedelta(days=398)

#: BR 3.2.2.4.7 / .19: a Random Value or Request Token is usable for at most 30 days.
MAX_TOKEN_LIFETIME: Final = timedelta(days=30)

#: BR 3.2.2.4.22 (and BR 4.2.1's table): dns-persist-01 validations are reused at most 10
#: days, whatever the general reuse period of the day.
PERSISTENT_TXT_REUSE: Final = timedelta(days=10)

#: Methods whose validations may be reused for less than BR 4.2.1's period of the day,
#: whatever the date: BR 3.2.2.4.22 (BR-REUSE-1, PERSIST-2) caps dns-persist-01 at 10 days.
METHOD_REUSE_CAPS: Final[dict[str, timedelta]] = {DNS_PERSIST_01: PERSISTENT_TXT_REUSE}


def max_dcv_reuse(at: datetime, method: str | None = None) -> timedelta:
    """The longest a validation may be reused for issuance at ``at`` (BR 4.2.1); for a
    validation made by ``method`` (its ACME label), never more than that method's cap."""
    limit = _DCV_REUSE_BEFORE
    for since, period in _DCV_REUSE:
        if at >= since:
            limit = period
            break
    cap = METHOD_REUSE_CAPS.get(method) if method is not None else None
    return limit if cap is None else min(limit, cap)


_IDENTITY_REUSE = ((datetime(2026, 3, 15, tzinfo=UTC), timedelta(days=398)),)
_IDENTITY_REUSE_BEFORE = timedelta(days=825)

RULE_ORGANIZATION: Final = "CP 3.2.2.1 / BR 4.2.1 organization"
"""The rule an OV refusal names: the problem's detail at newOrder and finalize
(``ra/organizations.py``) and the signing worker's refusal (``ca/recheck.py``)."""


def max_identity_reuse(at: datetime) -> timedelta:
    """The longest vetted Subject Identity Information (an OV organization's record) may be
    reused for issuance at ``at`` (BR 4.2.1, SC-081: 825 days, 398 days from 2026-03-15)."""
    for since, limit in _IDENTITY_REUSE:
        if at >= since:
            return limit
    return _IDENTITY_REUSE_BEFORE
