"""The deployment shape: whether a hierarchy could be publicly trusted (docs/production.md)."""

from __future__ import annotations

import enum
from typing import Final

from cryptography import x509

from acme_ca.ca.issuers_file import GENERATED_BY_INIT, ISSUERS_FILE, IssuersFile

#: The word a development root's subject carries (``acme_ca Development Root R1``).
DEVELOPMENT_MARK: Final = "Development"


class Shape(enum.StrEnum):
    """Whether the hierarchy could be publicly trusted (production) or not (development)."""

    DEVELOPMENT = "development"
    PRODUCTION = "production"


def says_development(certificate: x509.Certificate) -> bool:
    """Whether any attribute of the subject says "Development"."""
    return any(DEVELOPMENT_MARK in str(a.value) for a in certificate.subject)


def hierarchy_shape(parsed: IssuersFile) -> tuple[Shape, str]:
    """The shape of a readable hierarchy, and why."""
    if parsed.generated_by != GENERATED_BY_INIT:
        return Shape.PRODUCTION, (
            f'{ISSUERS_FILE} does not say `generated_by = "{GENERATED_BY_INIT}"`: imported '
            "or hand-written"
        )
    roots = [("root", parsed.root)] + [
        (f"roots.{name}", entry.certificate) for name, entry in parsed.roots.items()
    ]
    other = [name for name, cert in roots if not says_development(cert)]
    if other:
        return Shape.PRODUCTION, (
            f"root(s) {', '.join(other)} do not say {DEVELOPMENT_MARK!r} in their subject"
        )
    return Shape.DEVELOPMENT, (
        f"made by {GENERATED_BY_INIT}, every root says {DEVELOPMENT_MARK!r} in its subject"
    )
