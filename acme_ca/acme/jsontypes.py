"""The JSON value types, named once for the edges where JSON is genuinely free-form.

Fixed shapes get their own types (dataclasses, ``TypedDict``); these are for what is passed
through as JSON without being interpreted: a validation record rendered as stored, a problem
document's extension members, an audit row's details, a JSON body being built.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeAlias

#: A JSON value as :func:`json.dumps` writes it (lists may be given as tuples).
JsonValue: TypeAlias = (
    "str | int | float | bool | Sequence[JsonValue] | Mapping[str, JsonValue] | None"
)
#: A JSON object to read or pass on; build one as ``dict[str, JsonValue]``.
JsonObject: TypeAlias = "Mapping[str, JsonValue]"
