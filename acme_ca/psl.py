"""The Public Suffix List, ICANN section: one parsed copy for every room that needs it.

The identifier policy (``ra/identifiers.py``: no certificate for a public suffix, BR 3.2.2.6)
and the validation authority (``va/adn.py``: an Authorization Domain Name is never pruned
past the registrable domain, BR 3.2.2.4 with SC-101) read the same list, so both agree on
where a registrable domain begins.  It lives outside both rooms because ``va/`` never
imports ``ra/``.
"""

from __future__ import annotations

import functools

from publicsuffixlist import PublicSuffixList


@functools.cache
def icann_public_suffix_list() -> PublicSuffixList:
    """The bundled PSL, ICANN section only; parsed once because parsing costs ~10k lines."""
    return PublicSuffixList(only_icann=True)


def registrable_domain(name: str) -> str | None:
    """The public suffix plus one label (``example.co.uk`` for ``a.b.example.co.uk``); None
    when ``name`` is itself a public suffix or ends in none the ICANN section knows."""
    found: str | None = icann_public_suffix_list().privatesuffix(
        name.rstrip(".").lower(), accept_unknown=False
    )
    return found
