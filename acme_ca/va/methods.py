"""The BR domain-validation methods this CA offers and how each picks its Authorization Domain
Name (BR 3.2.2.4 as amended by ballot SC-101).

BR 3.2.2.4 (SC-101) gives, per method, whether it may validate a Wildcard Domain Name, whether
the CA may prune labels from the applied-for name and whether it may replace the name with
the target of a DNS CNAME lookup before using it as the ADN.  For the two ACME methods here:

========================  =========  ========  =====  =====
method                    wildcard   prune     CNAME  label
========================  =========  ========  =====  =====
3.2.2.4.7  DNS Change     yes        may       may    dns-01
3.2.2.4.19 Website - ACME no         no        no     http-01
========================  =========  ========  =====  =====

This CA never prunes and never substitutes a CNAME target for either method: RFC 8555 binds
the challenge to the authorization's identifier (§8.3 fetches from the identifier itself,
§8.4 queries ``_acme-challenge.<identifier>``), and an authorization for ``www.example.com``
proven at ``example.com`` would be an authorization for a name the applicant did not prove.
So the ADN is always the applied-for FQDN, or for a wildcard the name without ``*.``.  The
``prune``/``cname`` columns are kept as the BR states them so that a method added later
(tls-alpn-01 3.2.2.4.20, dns-persist-01 3.2.2.4.22) records what its ballot allows.

What is *not* ADN substitution: the resolver following a CNAME at ``_acme-challenge.<ADN>``
(dns-01: the BR's "record returned in a query for" the prefixed ADN, i.e. delegated
validation) or while resolving the ADN's A/AAAA records (http-01: the request still goes to
``http://<ADN>/`` with ``Host: <ADN>``).  Both are recorded (the CNAME chain, the addresses).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class DcvMethod:
    """One BR 3.2.2.4 method as offered through ACME."""

    label: str
    """The registered ACME validation method label (RFC 8555 §9.7.8)."""
    section: str
    """The BR section number (BR 5.4.1 as amended by SC-099 accepts either in a record)."""
    title: str
    wildcard: bool
    """BR 3.2.2.4 table, Wildcard column: the method may validate a Wildcard Domain Name."""
    prune: bool
    """Prune column: the BR would allow pruning labels; this CA never does."""
    cname: bool
    """CNAME column: the BR would allow the CNAME target as ADN; this CA never does."""


DCV_METHODS: Final[dict[str, DcvMethod]] = {
    "http-01": DcvMethod(
        label="http-01",
        section="3.2.2.4.19",
        title="Agreed-Upon Change to Website - ACME",
        wildcard=False,
        prune=False,
        cname=False,
    ),
    "dns-01": DcvMethod(
        label="dns-01",
        section="3.2.2.4.7",
        title="DNS Change",
        wildcard=True,
        prune=True,
        cname=True,
    ),
}
"""The methods this CA offers, by ACME label.  tls-alpn-01 and dns-persist-01 are not."""


class WildcardNotAllowed(ValueError):
    """The method's Wildcard column is empty (BR 3.2.2.4): it cannot validate ``*.`` names."""


def applied_for(identifier: str, wildcard: bool) -> str:
    """The name as it will appear in the certificate: ``*.`` + base name for a wildcard."""
    name = identifier.rstrip(".").lower()
    if wildcard and not name.startswith("*."):
        return f"*.{name}"
    return name


def authorization_domain_name(method: DcvMethod, identifier: str, wildcard: bool) -> str:
    """BR 3.2.2.4 steps 1-5 as this CA takes them: the FQDN itself, or for a wildcard the name
    without ``*.``; never pruned, never a CNAME target.  Raises :class:`WildcardNotAllowed`."""
    name = identifier.rstrip(".").lower()
    is_wildcard = wildcard or name.startswith("*.")
    if is_wildcard and not method.wildcard:
        raise WildcardNotAllowed(
            f"{method.label} (BR {method.section}) cannot validate a Wildcard Domain Name"
        )
    return name.removeprefix("*.")
