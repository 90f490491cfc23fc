"""A BR 3.2.2.4 domain-validation method's columns and how it picks its Authorization Domain
Name (BR 3.2.2.4 as amended by ballot SC-101).

Each method module declares its :class:`DcvMethod` (``http01.METHOD``, ``dns01.METHOD``...);
the one list of methods the CA knows, each with its check and its corroboration, is
:mod:`acme_ca.va.registry`, whose docstring holds the SC-101 table.

This CA never prunes and never substitutes a CNAME target for http-01 or dns-01: RFC 8555
binds the challenge to the authorization's identifier (§8.3 fetches from the identifier
itself, §8.4 queries ``_acme-challenge.<identifier>``), and an authorization for
``www.example.com`` proven at ``example.com`` would be an authorization for a name the
applicant did not prove.  So the ADN is the applied-for FQDN, or for a wildcard the name
without ``*.``.  The ``prune``/``cname`` columns are kept as the BR states them, so a method
whose ballot allows pruning records it.

What is *not* ADN substitution: the resolver following a CNAME at ``_acme-challenge.<ADN>``
(dns-01: the BR's "record returned in a query for" the prefixed ADN, i.e. delegated
validation) or while resolving the ADN's A/AAAA records (http-01: the request still goes to
``http://<ADN>/`` with ``Host: <ADN>``).  Both are recorded (the CNAME chain, the addresses).
"""

from __future__ import annotations

from dataclasses import dataclass


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
    """Prune column: the BR allows pruning labels toward the base domain."""
    cname: bool
    """CNAME column: the BR allows the ADN to be found through a CNAME of the FQDN."""


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
