"""JSON from the network, parsed only once its nesting is known to be shallow.

Python's ``json`` module recurses once per nested array or object, so a 2 KB body of a
thousand ``[`` raises ``RecursionError`` (a 500, and a pageable internal error) instead of a
client error.  :func:`loads_limited` first measures the nesting with one linear pass over
the bytes outside strings and refuses anything deeper than ACME ever needs with
``malformed`` (RFC 8555 §6.7), before ``json.loads`` sees it.
"""

from __future__ import annotations

import json
import re

from acme_ca.acme import problems
from acme_ca.acme.jsontypes import JsonValue
from acme_ca.acme.problems import AcmeError

#: Deepest nesting accepted.  ACME's deepest message (newAccount with an external account
#: binding inside a JWS) nests 3 levels; 32 leaves room for extensions and stays far below
#: the interpreter's recursion limit.
MAX_JSON_DEPTH = 32

#: A complete JSON string (escapes included), or one bracket outside strings.  An
#: unterminated string does not match, so its contents count as brackets: that can only
#: overstate the depth of a text that is not JSON anyway.
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
_OPEN = frozenset(b"[{")


def json_depth_exceeds(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``raw`` nests arrays/objects deeper than ``limit``; stops at the first
    bracket past it, so a deep body costs ``limit`` steps, a wide one one step per token.
    A body with no more opening brackets than ``limit`` in all (strings included) cannot
    nest deeper: counted in C first, which is every ACME message (a JWS nests one level)."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    depth = 0
    for match in _TOKEN.finditer(raw):
        token = match.group()
        if token[0] in _OPEN:
            depth += 1
            if depth > limit:
                return True
        elif token[0] != 0x22:  # a closing bracket (0x22 is '"', a string: skipped)
            depth -= 1
    return False


def loads_limited(raw: bytes, what: str, limit: int = MAX_JSON_DEPTH) -> JsonValue:
    """``raw`` parsed as JSON; ``malformed`` naming ``what`` if it is not JSON or nests
    deeper than ``limit``."""
    if json_depth_exceeds(raw, limit):
        raise AcmeError(problems.malformed(f"{what} nests deeper than {limit} levels"))
    try:
        value: JsonValue = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise AcmeError(problems.malformed(f"{what} is not JSON")) from None
    return value
