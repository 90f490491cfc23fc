"""The front end's settings: the keys wfe/ reads, built once from the Config.

:meth:`WfeSettings.from_config` is the one place wfe/ sees the
:class:`~acme_ca.config.Config` (an import-linter contract keeps the rest of wfe/ from
importing it): the directory's ``meta``, the Retry-After hints, the page size and the load
shedding bounds.
"""

from __future__ import annotations

from dataclasses import dataclass

from acme_ca.config.keys import Config


@dataclass(frozen=True)
class LoadSheddingSettings:
    """The per-process bounds of ``wfe/middleware/load_shedding.py`` (docs/operations.md,
    Load shedding)."""

    #: ``max_requests_in_flight``, or its derived default (16 per pooled connection).
    max_in_flight: int
    retry_after_seconds: int
    keepalive_timeout_seconds: int
    max_connections: int
    header_read_timeout_seconds: int

    @classmethod
    def from_config(cls, config: Config) -> LoadSheddingSettings:
        return cls(
            max_in_flight=config.requests_in_flight_limit,
            retry_after_seconds=config.overload_retry_after_seconds,
            keepalive_timeout_seconds=config.keepalive_timeout_seconds,
            max_connections=config.max_connections,
            header_read_timeout_seconds=config.header_read_timeout_seconds,
        )


@dataclass(frozen=True)
class WfeSettings:
    """What the handlers read: the directory's ``meta`` members, the Retry-After hint of
    processing resources and the orders list's page size."""

    caa_identities: tuple[str, ...]
    external_account_required: bool
    terms_of_service: str | None
    website: str | None
    #: Announced in ``meta.testMode``.
    test_mode: bool
    #: Remote perspectives configured (a file, or test mode's ``--perspectives``); without
    #: them ``meta.corroboration`` says validations are not corroborated.
    corroboration: bool
    retry_after_seconds: int
    orders_page_size: int

    @classmethod
    def from_config(cls, config: Config) -> WfeSettings:
        return cls(
            caa_identities=tuple(config.caa_identities),
            external_account_required=config.external_account_required,
            terms_of_service=config.terms_of_service,
            website=config.website,
            test_mode=config.test_mode,
            corroboration=bool(
                config.mpic_perspectives_file or (config.test_mode and config.test_perspectives)
            ),
            retry_after_seconds=config.retry_after_seconds,
            orders_page_size=config.orders_page_size,
        )
