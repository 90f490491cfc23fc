"""The Public Suffix List, ICANN section: one parsed copy for every room that needs it.

The identifier policy (``ra/identifiers.py``: no certificate for a public suffix, BR 3.2.2.6)
reads the ICANN section; the validation authority (``va/adn.py``: an Authorization Domain
Name is never pruned past the registrable domain, BR 3.2.2.4 with SC-101) reads the whole
list, PRIVATE section included, so it stops sooner: ``b.github.io`` belongs to its own
registrant, and a record at ``github.io`` proves nothing about it.  Pruning is a "may", so
the stricter floor is always allowed.  The lists live outside both rooms because ``va/``
never imports ``ra/``.
"""

from __future__ import annotations

import functools

from publicsuffixlist import PublicSuffixList


@functools.cache
def icann_public_suffix_list() -> PublicSuffixList:
    """The bundled PSL, ICANN section only; parsed once because parsing costs ~10k lines."""
    return PublicSuffixList(only_icann=True)


@functools.cache
def public_suffix_list() -> PublicSuffixList:
    """The bundled PSL, ICANN and PRIVATE sections."""
    return PublicSuffixList()


def registrable_domain(name: str) -> str | None:
    """The public suffix plus one label by the whole list (``example.co.uk`` for
    ``a.b.example.co.uk``, ``b.github.io`` for ``a.b.github.io``); None when ``name`` is
    itself a public suffix or ends in none the list knows."""
    found: str | None = public_suffix_list().privatesuffix(
        name.rstrip(".").lower(), accept_unknown=False
    )
    return found


def parse_public_suffix_lists() -> None:
    """Parse both lists now (blocking, ~0.1 s of CPU): ``serve`` calls it in a thread, before
    the listener opens outside test mode and just after it in test mode (issue 21 item 8), so
    neither the start nor a validation parses on the event loop."""
    icann_public_suffix_list()
    public_suffix_list()
