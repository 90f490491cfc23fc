"""Identifier policy: which names this CA will put in a certificate (pure, no I/O).

Every way a name can be refused has its own reason constant, so tests and logs say *which*
rule fired (the habit of Boulder's ``policy/pa.go``).  The rules follow RFC 8555 §7.1.3/§7.1.4,
BR §3.2.2.6 (no wildcard directly on a public suffix) and BR §4.2.2 (no Internal Names,
reserved IPs or reverse-DNS names); checklist items ACME-AUTHZ-2, BR-DCV-5 and BR-DCV-6.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Sequence
from typing import Final

import idna
from publicsuffixlist import PublicSuffixList

from acme_ca.acme.problems import (
    AcmeError,
    Identifier,
    Problem,
    compound,
    malformed,
    rejected_identifier,
    unsupported_identifier,
)
from acme_ca.psl import icann_public_suffix_list

#: The only identifier type this CA issues for (RFC 8555 §9.7.7).
DNS_TYPE: Final = "dns"
#: Default cap on identifiers per order; Boulder uses the same 100.
DEFAULT_MAX_NAMES: Final = 100
MAX_NAME_OCTETS: Final = 253
MAX_LABEL_OCTETS: Final = 63
WILDCARD_PREFIX: Final = "*."
ACE_PREFIX: Final = "xn--"

# Reason constants: one per rule, worded for the subproblem detail.
REASON_UNSUPPORTED_TYPE: Final = "identifier type is not supported; only dns is issued"
REASON_EMPTY_NAME: Final = "name is empty"
REASON_NON_ASCII: Final = "name contains non-ASCII characters; send IDNs as A-labels (xn--)"
REASON_NAME_TOO_LONG: Final = f"name is longer than {MAX_NAME_OCTETS} octets"
REASON_TRAILING_DOT: Final = "name ends in a dot"
REASON_IP_ADDRESS: Final = "name looks like an IP address; IP identifiers are not issued"
REASON_BAD_WILDCARD: Final = "a wildcard must be exactly one '*' label at the far left"
REASON_EMPTY_LABEL: Final = "name contains an empty label"
REASON_LABEL_TOO_LONG: Final = f"name contains a label longer than {MAX_LABEL_OCTETS} octets"
REASON_INVALID_CHARACTER: Final = "name contains a character outside a-z, 0-9 and '-'"
REASON_HYPHEN_EDGE: Final = "a label starts or ends with a hyphen"
REASON_RESERVED_HYPHENS: Final = "a label has '--' in positions 3-4 but is not an xn-- A-label"
REASON_INVALID_IDN: Final = "an xn-- label is not a valid IDNA2008 A-label"
REASON_TOO_FEW_LABELS: Final = "name has fewer than two labels"
REASON_REVERSE_DNS: Final = "reverse-DNS names (in-addr.arpa, ip6.arpa) are not issued"
REASON_ONION: Final = ".onion names are not issued under this DV policy"
REASON_INTERNAL_NAME: Final = "name is an Internal Name under a special-use or reserved domain"
REASON_NOT_ICANN_SUFFIX: Final = "name does not end in a public suffix from the PSL ICANN section"
REASON_IS_PUBLIC_SUFFIX: Final = "name is itself a public suffix"
REASON_WILDCARD_ON_PUBLIC_SUFFIX: Final = "a wildcard may not sit directly on a public suffix"
REASON_BLOCKED: Final = "name is blocked by CA policy"

#: Suffixes for reverse mapping: never a subscriber's name (BR §4.2.2).
REVERSE_DNS_SUFFIXES: Final = frozenset({"in-addr.arpa", "ip6.arpa"})
#: Special-use and reserved names (IANA special-use registry, RFC 6761, RFC 6762, RFC 8375,
#: RFC 9476, ICANN's .internal).  Most are absent from the PSL already; listing them keeps the
#: rule explicit and gives a precise reason.  ``onion`` IS in the PSL ICANN section, so it
#: needs its own rule.
INTERNAL_SUFFIXES: Final = frozenset(
    {
        "alt",
        "example",
        "home.arpa",
        "internal",
        "invalid",
        "local",
        "localhost",
        "test",
        "6tisch.arpa",
        "ipv4only.arpa",
        "resolver.arpa",
        "service.arpa",
    }
)
ONION_SUFFIX: Final = "onion"
#: Test mode only (``special_use_names``): the RFC 6761 names CI suites use.  A name under
#: one of these, or a single label that is not an ICANN TLD (``localhost``), is accepted
#: there; the rest of :data:`INTERNAL_SUFFIXES` stays refused.
TEST_MODE_SUFFIXES: Final = frozenset({"test", "example", "localhost", "invalid"})

_LDH: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


def is_wildcard(name: str) -> bool:
    """True for a ``*.`` name; the authorization then covers the base name (RFC 8555 §7.1.3)."""
    return name.startswith(WILDCARD_PREFIX)


def base_domain(name: str) -> str:
    """The name an authorization is for: a wildcard without its ``*.`` (RFC 8555 §7.1.3)."""
    return name.removeprefix(WILDCARD_PREFIX)


def _has_suffix(name: str, suffix: str) -> bool:
    return name == suffix or name.endswith("." + suffix)


def _parents(name: str) -> Iterable[str]:
    """The name and each parent down to the TLD: what a suffix rule must test."""
    labels = name.split(".")
    for i in range(len(labels)):
        yield ".".join(labels[i:])


def _looks_like_ip(name: str) -> bool:
    """IP literals, bracketed IPv6, or a numeric last label (no TLD is all digits)."""
    candidate = name.removeprefix("[").removesuffix("]")
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        pass
    else:
        return True
    return ":" not in name and name.rsplit(".", 1)[-1].isdigit()


def _valid_a_label(label: str) -> bool:
    """IDNA2008 check of an ``xn--`` label plus the round trip back to the same A-label.

    Uses the ``idna`` package (IDNA2008), not the stdlib codec (IDNA2003), which would accept
    labels such as ``xn--n3h`` (a snowman) that IDNA2008 disallows.
    """
    try:
        u_label = idna.ulabel(label)
        return idna.alabel(u_label).decode("ascii") == label
    except UnicodeError:  # idna.IDNAError and punycode errors both derive from it
        return False


def _starts_or_ends_with_hyphen(label: str) -> bool:
    return label.startswith("-") or label.endswith("-")


def _reserved_hyphens(label: str) -> bool:
    """RFC 5891 §4.2.3.1: '--' in positions 3-4 is reserved for A-labels."""
    return label[2:4] == "--" and not label.startswith(ACE_PREFIX)


def _invalid_a_label(label: str) -> bool:
    return label.startswith(ACE_PREFIX) and not _valid_a_label(label)


# Each table is checked in order and the first rule broken is the reason reported.
_RAW_RULES: Final[tuple[tuple[str, Callable[[str], bool]], ...]] = (
    (REASON_EMPTY_NAME, lambda v: not v),
    # Before lower(): str.lower() maps e.g. KELVIN SIGN (U+212A) onto ASCII "k".
    (REASON_NON_ASCII, lambda v: not v.isascii()),
)
_NAME_RULES: Final[tuple[tuple[str, Callable[[str], bool]], ...]] = (
    (REASON_NAME_TOO_LONG, lambda n: len(n) > MAX_NAME_OCTETS),
    (REASON_TRAILING_DOT, lambda n: n.endswith(".")),
    (REASON_IP_ADDRESS, _looks_like_ip),
    (REASON_BAD_WILDCARD, lambda n: "*" in base_domain(n)),
)
_LABEL_RULES: Final[tuple[tuple[str, Callable[[str], bool]], ...]] = (
    (REASON_EMPTY_LABEL, lambda label: not label),
    (REASON_LABEL_TOO_LONG, lambda label: len(label) > MAX_LABEL_OCTETS),
    (REASON_INVALID_CHARACTER, lambda label: not _LDH.issuperset(label)),
    (REASON_HYPHEN_EDGE, _starts_or_ends_with_hyphen),
    (REASON_RESERVED_HYPHENS, _reserved_hyphens),
    (REASON_INVALID_IDN, _invalid_a_label),
)


def _syntax_reason(value: str) -> str | None:
    """Rules that need only the text of the name, not where it sits in the DNS."""
    for reason, broken in _RAW_RULES:
        if broken(value):
            return reason
    name = value.lower()
    for reason, broken in _NAME_RULES:
        if broken(name):
            return reason
    labels = base_domain(name).split(".")
    for label in labels:
        for reason, broken in _LABEL_RULES:
            if broken(label):
                return reason
    # "*.com" passes here and gets the more precise wildcard-on-public-suffix reason later.
    if len(labels) < 2 and not is_wildcard(name):
        return REASON_TOO_FEW_LABELS
    return None


class IdentifierPolicy:
    """Decides whether an order's identifiers may be issued for; built once from config."""

    def __init__(
        self,
        max_names: int = DEFAULT_MAX_NAMES,
        blocked_names: Iterable[str] = frozenset(),
        psl: PublicSuffixList | None = None,
        *,
        special_use_names: bool = False,
    ) -> None:
        """``special_use_names`` (test mode only, as Pebble issues for any valid name):
        accept :meth:`is_special_use` names; every other rule still applies."""
        if max_names < 1:
            raise ValueError("max_names must be at least 1")
        self.max_names = max_names
        self.special_use_names = special_use_names
        self.blocked_names = frozenset(n.lower().rstrip(".") for n in blocked_names)
        self._given_psl = psl

    @property
    def _psl(self) -> PublicSuffixList:
        # The shared list is parsed on first use, not here: serve parses it off the event
        # loop (acme_ca.psl.parse_public_suffix_lists), in test mode after ready.
        return self._given_psl if self._given_psl is not None else icann_public_suffix_list()

    def rejection_reason(self, identifier: Identifier) -> str | None:
        """The first rule ``identifier`` breaks (a ``REASON_*`` constant), or None if it is fine."""
        if identifier.type != DNS_TYPE:
            return REASON_UNSUPPORTED_TYPE
        reason = _syntax_reason(identifier.value)
        name = identifier.value.lower()
        if reason == REASON_TOO_FEW_LABELS and self.special_use_names:
            reason = None if self.is_special_use(name) else reason
        if reason is None:
            reason = self._namespace_reason(base_domain(name), wildcard=is_wildcard(name))
        return reason

    def is_special_use(self, name: str) -> bool:
        """A test-mode special-use name: under .test, .example, .localhost or .invalid, or a
        single label that is not an ICANN TLD (``localhost``, ``myhost``)."""
        base = base_domain(name.lower().rstrip("."))
        if "." not in base:
            return bool(base) and self._psl.publicsuffix(base, accept_unknown=False) is None
        return base.rsplit(".", 1)[1] in TEST_MODE_SUFFIXES

    def _namespace_reason(self, base: str, *, wildcard: bool) -> str | None:
        """Rules about where in the DNS tree a syntactically valid name sits."""
        reserved: tuple[tuple[Iterable[str], str], ...] = (
            (REVERSE_DNS_SUFFIXES, REASON_REVERSE_DNS),
            ((ONION_SUFFIX,), REASON_ONION),
            (INTERNAL_SUFFIXES, REASON_INTERNAL_NAME),
        )
        if self.special_use_names and self.is_special_use(base):
            if wildcard and "." not in base:  # "*.test": a wildcard on the special-use TLD
                return REASON_WILDCARD_ON_PUBLIC_SUFFIX
            blocked = any(parent in self.blocked_names for parent in _parents(base))
            return REASON_BLOCKED if blocked else None
        for suffixes, reason in reserved:
            if any(_has_suffix(base, s) for s in suffixes):
                return reason
        suffix = self._psl.publicsuffix(base, accept_unknown=False)
        if suffix is None:
            return REASON_NOT_ICANN_SUFFIX
        if suffix == base:
            return REASON_WILDCARD_ON_PUBLIC_SUFFIX if wildcard else REASON_IS_PUBLIC_SUFFIX
        if any(parent in self.blocked_names for parent in _parents(base)):
            return REASON_BLOCKED
        return None

    def check_order(self, identifiers: Sequence[Identifier]) -> tuple[Identifier, ...]:
        """Normalise a newOrder's identifiers, or raise one problem naming every bad one.

        Returns lower-cased ``dns`` identifiers, duplicates removed, first occurrence kept.
        Subproblems carry the identifier exactly as the client sent it, so it can match them.
        """
        unique: dict[tuple[str, str], Identifier] = {}
        for ident in identifiers:
            key = (ident.type, ident.value.lower() if ident.value.isascii() else ident.value)
            unique.setdefault(key, ident)
        if not unique:
            raise AcmeError(malformed("order contains no identifiers"))
        if len(unique) > self.max_names:
            raise AcmeError(
                malformed(
                    f"order contains {len(unique)} identifiers; at most {self.max_names} allowed"
                )
            )
        subproblems = tuple(
            _subproblem(ident, reason)
            for ident in unique.values()
            if (reason := self.rejection_reason(ident)) is not None
        )
        if subproblems:
            raise AcmeError(_top_problem(subproblems))
        return tuple(Identifier(DNS_TYPE, value) for _, value in unique)


def _subproblem(identifier: Identifier, reason: str) -> Problem:
    factory = unsupported_identifier if reason == REASON_UNSUPPORTED_TYPE else rejected_identifier
    problem: Problem = factory(
        f'cannot issue for "{identifier.value}": {reason}', identifier=identifier
    )
    return problem


def _top_problem(subproblems: tuple[Problem, ...]) -> Problem:
    """One subproblem per bad identifier; the top type is theirs if shared, else compound."""
    types = {p.type for p in subproblems}
    if len(subproblems) == 1:
        detail = subproblems[0].detail
    else:
        detail = f"cannot issue for {len(subproblems)} identifiers; see subproblems"
    if len(types) > 1:
        factory = compound
    elif subproblems[0].short_type == "unsupportedIdentifier":
        factory = unsupported_identifier
    else:
        factory = rejected_identifier
    problem: Problem = factory(detail, subproblems=subproblems)
    return problem
