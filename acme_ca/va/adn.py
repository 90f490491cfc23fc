"""Authorization Domain Names that may be pruned but never found through a CNAME (SC-101).

BR 3.2.2.4 as amended by ballot SC-101 (in force from 2026-11-15) lets two DNS methods prune
labels from the applied-for FQDN to find the Authorization Domain Name, and forbids both to
use a CNAME target as the ADN:

========================  =========  ========  =====
method                    wildcard   prune     CNAME
========================  =========  ========  =====
3.2.2.4.21 dns-account-01 yes        may       no
3.2.2.4.22 dns-persist-01 yes        may       no
========================  =========  ========  =====

So each of them asks ``<prefix>.<ADN>`` for the FQDN itself first, then for each parent, and
never past the registrable domain (a public suffix of the whole PSL, PRIVATE section
included, plus one label, :mod:`acme_ca.psl`): a record at ``_validation-persist.co.uk``
proves nothing about ``example.co.uk``, nor one at ``github.io`` about ``b.github.io``.  A
TXT answer reached through a CNAME at ``<prefix>.<ADN>`` is refused outright rather than
skipped: the record the subscriber meant to publish is not where the BR lets us look, and the
subscriber is told so (dns-01 keeps following such a CNAME, the delegated validation RFC
8555 §8.4 allows).

This module is the walk and the records it leaves; each method says what a record must hold.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from acme_ca.acme import problems
from acme_ca.acme.problems import Problem
from acme_ca.psl import registrable_domain
from acme_ca.va.methods import DcvMethod
from acme_ca.va.records import ValidationRecord, dcv_records, dns_record
from acme_ca.va.resolver import DnsAnswer, DnsClient


def pruned_adns(fqdn: str) -> tuple[str, ...]:
    """The candidate ADNs, closest first: ``fqdn``, then each parent down to and including
    its registrable domain.  A name with no registrable domain (a public suffix, an unknown
    TLD; the identifier policy refuses both) gets only itself."""
    name = fqdn.rstrip(".").lower().removeprefix("*.")
    base = registrable_domain(name)
    if base is None or not (name == base or name.endswith("." + base)):
        return (name,)
    labels = name.split(".")
    depth = len(labels) - len(base.split("."))
    return tuple(".".join(labels[i:]) for i in range(depth + 1))


@dataclass(frozen=True)
class AdnLookup:
    """One TXT lookup at ``<prefix>.<adn>`` and the record it left."""

    adn: str
    name: str
    answer: DnsAnswer
    record: ValidationRecord


def cname_refusal(lookup: AdnLookup, method: DcvMethod) -> Problem | None:
    """SC-101: the answer came through a CNAME at ``<prefix>.<ADN>``, so it is refused."""
    if not lookup.answer.chain:
        return None
    return problems.unauthorized(
        f"{lookup.name} is a CNAME (to {' -> '.join(lookup.answer.chain)}); "
        f"{method.label} (BR {method.section}) may prune the Authorization Domain Name but "
        "not find it through a CNAME (BR 3.2.2.4, SC-101). Publish the TXT record at "
        f"{lookup.name} itself"
    )


def lookup_failure(lookup: AdnLookup) -> Problem | None:
    """A lookup that failed (SERVFAIL, timeout, DNSSEC) is a ``dns`` problem, never a pass;
    the walk stops there rather than trying a parent, so a broken zone fails closed."""
    answer = lookup.answer
    if answer.ok:
        return None
    detail = f"DNS problem: {answer.failure} looking up TXT for {lookup.name}"
    if answer.error:
        detail += f": {answer.error}"
    return problems.dns(detail)


class AdnWalker:
    """Asks ``<prefix>.<ADN>`` TXT for each candidate ADN, recording every question."""

    def __init__(
        self,
        dns: DnsClient,
        method: DcvMethod,
        *,
        perspective: str,
        now: Callable[[], datetime],
    ) -> None:
        self._dns = dns
        self._method = method
        self._perspective = perspective
        self._now = now

    async def lookup(self, prefix: str, adn: str) -> AdnLookup:
        name = f"{prefix}.{adn}"
        at = self._now()
        answer = await self._dns.query(name, "TXT")
        record = dns_record(
            answer, method=self._method.label, hostname=adn, at=at, perspective=self._perspective
        )
        return AdnLookup(adn=adn, name=name, answer=answer, record=record)

    async def walk(
        self, prefix: str, fqdn: str, accept: Callable[[AdnLookup], bool]
    ) -> tuple[list[AdnLookup], Problem | None]:
        """Look up each candidate ADN, closest first, until ``accept`` takes one.

        Returns the lookups made and the problem that stopped the walk -- a failed lookup or
        a CNAME at ``<prefix>.<ADN>`` -- or None when it ended on an accepted lookup or ran
        out of candidates (the caller tells those apart by ``accept``'s last verdict).
        """
        lookups: list[AdnLookup] = []
        for adn in pruned_adns(fqdn):
            lookup = await self.lookup(prefix, adn)
            lookups.append(lookup)
            stop = lookup_failure(lookup) or cname_refusal(lookup, self._method)
            if stop is not None:
                return lookups, stop
            if accept(lookup):
                break
        return lookups, None


def adn_records(
    lookups: Sequence[AdnLookup],
    *,
    method: DcvMethod,
    identifier: str,
    value: str,
    ok: bool,
) -> tuple[ValidationRecord, ...]:
    """Each lookup's record naming what was validated, how, and at which ADN it looked (BR
    5.4.1 with SC-099); the last one, which decided, carries the result."""
    return dcv_records(
        (replace(lookup.record, adn=lookup.adn) for lookup in lookups),
        method=method,
        identifier=identifier,
        adn=None,
        value=value,
        ok=ok,
    )
