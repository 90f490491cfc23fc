"""Date-gated limits of the Baseline Requirements, as pure functions of the date.

BR 4.2.1 (ballot SC-081): how long domain-validation data and Subject Identity Information
may be reused; BR 6.3.2: the longest certificate validity.  Each limit applies from 00:00 UTC
of its effective date.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from acme_ca.va.dns_persist import LABEL as DNS_PERSIST_01
from acme_ca.va.dns_persist import REUSE_LIMIT as PERSISTENT_TXT_REUSE
from acme_ca.va.registry import METHODS

#: The Baseline Requirements version this code implements, recorded with every validation
#: (BR 3.2.2.4: "the CA SHALL maintain a record of which domain validation method, including
#: the relevant BR version number, was used").
BR_VERSION = "2.2.6"

#: The BR method each ACME challenge type implements (the VA's registry is the one source).
BR_METHODS = {label: method.dcv.section for label, method in METHODS.items()}

_DCV_REUSE = (
    (datetime(2029, 3, 15, tzinfo=UTC), timedelta(days=10)),
    (datetime(2027, 3, 15, tzinfo=UTC), timedelta(days=100)),
    (datetime(2026, 3, 15, tzinfo=UTC), timedelta(days=200)),
)
_DCV_REUSE_BEFORE = timedelta(days=398)

#: BR 3.2.2.4.7 / .19: a Random Value or Request Token is usable for at most 30 days.
MAX_TOKEN_LIFETIME = timedelta(days=30)


#: Methods whose validations may be reused for less than BR 4.2.1's period of the day,
#: whatever the date: BR 3.2.2.4.22 (BR-REUSE-1, PERSIST-2) caps dns-persist-01 at 10 days.
METHOD_REUSE_CAPS: dict[str, timedelta] = {DNS_PERSIST_01: PERSISTENT_TXT_REUSE}


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


def max_identity_reuse(at: datetime) -> timedelta:
    """The longest vetted Subject Identity Information (an OV organization's record) may be
    reused for issuance at ``at`` (BR 4.2.1, SC-081: 825 days, 398 days from 2026-03-15)."""
    for since, limit in _IDENTITY_REUSE:
        if at >= since:
            return limit
    return _IDENTITY_REUSE_BEFORE
