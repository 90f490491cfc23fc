"""Issuer Domain Names as dns-persist-01 puts them on the wire (draft-ietf-acme-dns-persist).

The challenge object lists the CA's Issuer Domain Names (``issuer-domain-names``; ours are the
``caa_identities``) and the subscriber's TXT record names one of them.  The draft fixes one
normal form for both sides so they compare byte for byte: lower case, A-labels (no Unicode
look-alikes), no trailing dot, at most 253 octets; and at most 10 names per challenge.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import idna

MAX_ISSUER_DOMAIN_NAMES: Final = 10
MAX_ISSUER_DOMAIN_NAME_OCTETS: Final = 253
_WSP: Final = " \t"


def normalize_issuer_domain_name(name: str) -> str:
    """The draft's normal form of one name; ValueError when it is not a domain name."""
    text = name.strip(_WSP).lower().removesuffix(".")
    if not text:
        raise ValueError("empty issuer-domain-name")
    try:
        ascii_name = idna.encode(text, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise ValueError(f"issuer-domain-name {name!r} is not a domain name: {exc}") from None
    if len(ascii_name) > MAX_ISSUER_DOMAIN_NAME_OCTETS:
        raise ValueError(f"issuer-domain-name exceeds {MAX_ISSUER_DOMAIN_NAME_OCTETS} octets")
    return ascii_name


def issuer_domain_names(names: Iterable[str]) -> tuple[str, ...]:
    """A challenge's ``issuer-domain-names``: normalised, duplicates dropped, order kept;
    ValueError for none or more than :data:`MAX_ISSUER_DOMAIN_NAMES`."""
    out = tuple(dict.fromkeys(normalize_issuer_domain_name(n) for n in names))
    if not out:
        raise ValueError("dns-persist-01 needs at least one issuer domain name")
    if len(out) > MAX_ISSUER_DOMAIN_NAMES:
        raise ValueError(
            f"dns-persist-01 offers at most {MAX_ISSUER_DOMAIN_NAMES} issuer domain names"
        )
    return out
