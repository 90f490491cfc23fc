"""The one registry of the domain-validation methods this CA knows (BR 3.2.2.4, BR 3.2.2.9).

Each :class:`ValidationMethod` carries everything the CA does with a method, so a method
cannot be added without all of it:

* its BR columns (:class:`~acme_ca.va.methods.DcvMethod`: ACME label, BR section, and the
  SC-101 Wildcard / Prune / CNAME columns);
* its local check, built from the VA's shared parts (:class:`CheckEnv`) into a
  :class:`MethodCheck` that takes a :class:`~acme_ca.va.records.ChallengeRequest`;
* its corroboration (:class:`Corroboration`): remote perspectives repeat the very same check
  (the remote VA builds it from this registry) and must agree with the primary on the value
  the check observed.  :class:`~acme_ca.va.mpic.MpicValidator` judges every remote reply
  through it, so no method can skip multi-perspective corroboration.

Which methods are offered is configuration (``challenge_types``, :func:`enabled_methods`):
the RA offers the enabled methods whose Wildcard column allows the name
(:meth:`EnabledMethods.offered`), the VA builds checks for them only, and a remote
perspective can repeat every method of the registry (the primary decides what is offered).

BR 3.2.2.4 as amended by SC-101 (in force from 2026-11-15), for the methods here:

==========================  ========  =====  =====  ===========
method                      wildcard  prune  CNAME  ACME label
==========================  ========  =====  =====  ===========
3.2.2.4.7  DNS Change       yes       may    may    dns-01
3.2.2.4.19 Website - ACME   no        no     no     http-01
3.2.2.4.20 TLS Using ALPN   no        no     no     tls-alpn-01
3.2.2.4.21 DNS Account ID   yes       may    no     dns-account-01
3.2.2.4.22 Persistent TXT   yes       may    no     dns-persist-01
==========================  ========  =====  =====  ===========

dns-persist-01 and dns-account-01 do prune (toward the registrable domain) and refuse a CNAME
at the prefixed ADN (:mod:`acme_ca.va.adn`).

To add a method: a module with its ``METHOD`` (the DcvMethod) and a check class with
``async validate(request) -> CheckResult``, then one entry in :data:`METHODS` below.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from acme_ca.clock import Clock
from acme_ca.config.base import DEFAULT_CHALLENGE_TYPES, ConfigError
from acme_ca.va.addresses import AddressPolicy
from acme_ca.va.dns01 import METHOD as DNS01
from acme_ca.va.dns01 import Dns01Validator
from acme_ca.va.dns_account import METHOD as DNS_ACCOUNT01
from acme_ca.va.dns_account import DnsAccountValidator
from acme_ca.va.dns_persist import METHOD as DNS_PERSIST01
from acme_ca.va.dns_persist import DnsPersistValidator
from acme_ca.va.http01 import METHOD as HTTP01
from acme_ca.va.http01 import Http01Validator
from acme_ca.va.methods import DcvMethod
from acme_ca.va.records import ChallengeRequest, CheckResult
from acme_ca.va.resolver import DnsClient
from acme_ca.va.tlsalpn01 import METHOD as TLSALPN01
from acme_ca.va.tlsalpn01 import TlsAlpn01Validator


class MethodCheck(Protocol):
    """One method's check, as built for one perspective."""

    async def validate(self, request: ChallengeRequest) -> CheckResult:
        """Never raises for what the network answered: every failure is a problem."""
        ...


@dataclass(frozen=True)
class CheckEnv:
    """The shared parts a check is built from, for one perspective (primary or remote)."""

    dns: DnsClient
    clock: Clock
    perspective: str
    address_policy: AddressPolicy
    """Which resolved addresses a check may connect to (http-01 and its redirects,
    tls-alpn-01)."""
    http01_port: int
    caa_identities: tuple[str, ...]
    """The CA's issuer domain names (CAA, and the methods whose records name the CA)."""
    tlsalpn01_port: int = 443
    """The port tls-alpn-01 connects to (``tlsalpn01_port``: 443; test mode 5001)."""
    https01_port: int = 443
    """The port an http-01 redirect to an https URL connects to (443; test mode moves it)."""


def same_observed(primary: str | None, remote: str | None) -> bool:
    """The usual agreement: the remote observed exactly what the primary did."""
    return primary is not None and remote == primary


@dataclass(frozen=True)
class Corroboration:
    """BR 3.2.2.9 for one method: what a remote perspective repeats and must agree on.

    A remote always runs the method's full check (built from the same registry entry);
    ``agree`` compares the ``observed`` value of its passing result with the primary's.
    ``repeats`` and ``agrees_on`` say it in words, for the records and docs/validation.md.
    """

    repeats: str
    agrees_on: str
    agree: Callable[[str | None, str | None], bool] = same_observed


@dataclass(frozen=True)
class ValidationMethod:
    """A registry entry: the BR columns, the local check and the corroboration."""

    dcv: DcvMethod
    build: Callable[[CheckEnv], MethodCheck]
    corroboration: Corroboration

    @property
    def label(self) -> str:
        return self.dcv.label


def _registry(*entries: ValidationMethod) -> Mapping[str, ValidationMethod]:
    table: dict[str, ValidationMethod] = {}
    for entry in entries:
        if entry.label in table:
            raise ValueError(f"validation method {entry.label!r} registered twice")
        table[entry.label] = entry
    return table


METHODS: Final[Mapping[str, ValidationMethod]] = _registry(
    ValidationMethod(
        dcv=HTTP01,
        build=lambda env: Http01Validator(
            env.dns,
            port=env.http01_port,
            https_port=env.https01_port,
            address_policy=env.address_policy,
            perspective=env.perspective,
            clock=env.clock,
        ),
        corroboration=Corroboration(
            repeats="the fetch of http://<FQDN>/.well-known/acme-challenge/<token>, redirects "
            "included, through the perspective's own resolver",
            agrees_on="the key authorization served",
        ),
    ),
    ValidationMethod(
        dcv=DNS01,
        build=lambda env: Dns01Validator(env.dns, perspective=env.perspective, clock=env.clock),
        corroboration=Corroboration(
            repeats="the TXT lookup at _acme-challenge.<ADN> through the perspective's own "
            "resolver",
            agrees_on="the TXT value (base64url SHA-256 of the key authorization)",
        ),
    ),
    ValidationMethod(
        dcv=TLSALPN01,
        build=lambda env: TlsAlpn01Validator(
            env.dns,
            port=env.tlsalpn01_port,
            address_policy=env.address_policy,
            perspective=env.perspective,
            clock=env.clock,
        ),
        corroboration=Corroboration(
            repeats="the TLS handshake with the FQDN's addresses on the tls-alpn-01 port "
            "(ALPN acme-tls/1, SNI the FQDN), through the perspective's own resolver, and the "
            "full certificate check",
            agrees_on="the acmeIdentifier digest (SHA-256 of the key authorization) of the "
            "self-signed certificate presented",
        ),
    ),
    ValidationMethod(
        dcv=DNS_PERSIST01,
        build=lambda env: DnsPersistValidator(
            env.dns, env.caa_identities, perspective=env.perspective, clock=env.clock
        ),
        corroboration=Corroboration(
            repeats="the TXT lookups at _validation-persist.<ADN>, the FQDN first, then each "
            "parent down to the registrable domain, through the perspective's own resolver "
            "(a CNAME at the prefixed ADN refused)",
            agrees_on="the record for this CA (issuer domain name, accounturi, policy) and the "
            "name it was found at: the same accounturi at the same ADN",
        ),
    ),
    ValidationMethod(
        dcv=DNS_ACCOUNT01,
        build=lambda env: DnsAccountValidator(
            env.dns, perspective=env.perspective, clock=env.clock
        ),
        corroboration=Corroboration(
            repeats="the TXT lookups at _<account label>._acme-challenge.<ADN>, the FQDN "
            "first, then each parent down to the registrable domain, through the "
            "perspective's own resolver (a CNAME at the prefixed ADN refused)",
            agrees_on="the TXT value (base64url SHA-256 of the key authorization) and the "
            "name it was found at",
        ),
    ),
)
"""Every method the CA knows, by ACME label, in the order challenges are offered."""


#: The BR method (section) each ACME challenge type implements: recorded with every
#: validation (BR 3.2.2.4) and the challenge types a profile may offer.
BR_METHODS: Final[Mapping[str, str]] = {label: m.dcv.section for label, m in METHODS.items()}


class UnknownMethod(ConfigError):
    """A challenge type that is not in the registry."""


def validation_method(label: str) -> ValidationMethod:
    """The registry entry of ``label``; :class:`UnknownMethod` if there is none."""
    try:
        return METHODS[label]
    except KeyError:
        raise UnknownMethod(
            f"unknown challenge type {label!r}; known: {', '.join(METHODS)}"
        ) from None


@dataclass(frozen=True)
class EnabledMethods:
    """The methods configuration switched on, in registry order."""

    labels: tuple[str, ...]

    def offered(self, wildcard: bool) -> tuple[str, ...]:
        """The challenge types an authorization gets: for a wildcard only the methods whose
        BR Wildcard column allows it (the DNS-based ones, SC-101)."""
        return tuple(label for label in self.labels if not wildcard or METHODS[label].dcv.wildcard)

    def __contains__(self, label: object) -> bool:
        return label in self.labels


def enabled_methods(labels: Iterable[str]) -> EnabledMethods:
    """``challenge_types`` checked against the registry: at least one method, known labels,
    none twice.  Raises :class:`UnknownMethod` / :class:`ConfigError` naming the key."""
    wanted = [label.strip() for label in labels]
    if not wanted:
        raise ConfigError("challenge_types must enable at least one validation method")
    for label in wanted:
        if label not in METHODS:
            raise UnknownMethod(
                f"challenge_types: unknown challenge type {label!r}; known: {', '.join(METHODS)}"
            )
    if len(set(wanted)) != len(wanted):
        raise ConfigError("challenge_types lists a challenge type twice")
    return EnabledMethods(tuple(label for label in METHODS if label in wanted))


ALL_METHODS: Final = EnabledMethods(tuple(METHODS))
DEFAULT_METHODS: Final = enabled_methods(DEFAULT_CHALLENGE_TYPES)
"""``challenge_types``' default (checked against the registry at import)."""


def build_checks(env: CheckEnv, methods: EnabledMethods) -> dict[str, MethodCheck]:
    """One check per enabled method, built for ``env``'s perspective."""
    return {label: METHODS[label].build(env) for label in methods.labels}
