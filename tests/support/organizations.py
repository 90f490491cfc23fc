"""A vetted organization for the OV tests, as ``acme-ca org add`` records one."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from acme_ca.db.organizations import Organization, OrganizationRepository, VettedOrganization


def vetted(vetted_at: datetime, **changes: Any) -> VettedOrganization:
    """Example Trading K.K. of Chiyoda-ku, Tokyo, JP, vetted at ``vetted_at`` (``changes``
    override any field)."""
    fields: dict[str, Any] = {
        "name": "Example Trading K.K.",
        "country": "JP",
        "state": "Tokyo",
        "locality": "Chiyoda-ku",
        "evidence": "houjin-bangou 1234567890123 (NTA corporate number site)",
        "vetted_by": "vetter:alice",
        "vetted_at": vetted_at,
    }
    return VettedOrganization(**(fields | changes))


async def add_organization(
    pool: asyncpg.Pool, vetted_at: datetime, *, now: datetime, actor: str, **changes: Any
) -> Organization:
    """:func:`vetted` recorded through the repository ``acme-ca org add`` uses."""
    return await OrganizationRepository(pool).add(
        vetted(vetted_at, **changes), now=now, actor=actor
    )
