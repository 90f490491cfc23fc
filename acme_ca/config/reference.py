"""``acme-ca config-doc``: the Markdown reference of every key (docs/configuration.md), from
the key declarations and the profile table's fields."""

from __future__ import annotations

from dataclasses import fields

from acme_ca.config.keys import ENV_PREFIX, Config
from acme_ca.config.load import field_types
from acme_ca.profiles import SHIPPED, ProfileSpec


def config_reference() -> str:
    """Markdown table of every key, its default and its doc, for docs/configuration.md."""
    hints = field_types()
    rows = ["| key | env | type | default | what it does |", "|---|---|---|---|---|"]
    defaults = Config()
    for f in fields(Config):
        type_name = str(hints[f.name]).replace("typing.", "").replace("pathlib.", "")
        type_name = type_name.replace("<class '", "").replace("'>", "")
        type_name = type_name.replace("acme_ca.profiles.", "")
        default = getattr(defaults, f.name)
        rows.append(
            f"| `{f.name}` | `{ENV_PREFIX}{f.name.upper()}` | {type_name} | `{default!s}` "
            f"| {f.metadata['doc']} |"
        )
    return "\n".join(rows) + "\n" + _profile_reference()


def _profile_reference() -> str:
    """The keys of a ``[profiles.<name>]`` table and the shipped profiles' values."""
    spec_fields = [f for f in fields(ProfileSpec) if f.name != "name"]
    rows = [
        "",
        "## Profile tables (`[profiles.<name>]`)",
        "",
        "Each key a table leaves out keeps the shipped profile's value (for a new name, the "
        "default below); `-` inherits the top-level key named in the description. "
        "See docs/profiles.md.",
        "",
        "| key | " + " | ".join(f"`{name}`" for name in SHIPPED) + " | default | what it does |",
        "|---|" + "---|" * (len(SHIPPED) + 2),
    ]
    blank = ProfileSpec()

    def show(value: object) -> str:
        if isinstance(value, bool):
            return f"`{str(value).lower()}`"
        if isinstance(value, list):  # as TOML writes it
            return (
                "`[" + ", ".join(f'"{v}"' if isinstance(v, str) else str(v) for v in value) + "]`"
            )
        return "-" if value is None else f"`{value}`"

    for f in spec_fields:
        shipped = " | ".join(show(getattr(spec, f.name)) for spec in SHIPPED.values())
        rows.append(
            f"| `{f.name}` | {shipped} | {show(getattr(blank, f.name))} | {f.metadata['doc']} |"
        )
    return "\n".join(rows) + "\n"
