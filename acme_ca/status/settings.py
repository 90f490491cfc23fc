"""The status room's settings: the keys status/ reads, built once from the Config.

:meth:`StatusSettings.from_config` is the one place status/ sees the
:class:`~acme_ca.config.Config` (an import-linter contract keeps the rest of status/ from
importing it).  The CRL signing keys are opened through ca/'s
:class:`~acme_ca.ca.settings.IssuerSettings`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Final

from acme_ca.config.keys import Config

#: How often the updater looks for due work without being told (lost NOTIFYs).
DEFAULT_POLL_SECONDS: Final = 30.0


@dataclass(frozen=True)
class StatusSettings:
    """The status updater's periods: CRL and OCSP validity, how often a CRL is re-signed,
    how often due work is looked for, and where CRL files are written."""

    crl_validity: timedelta
    crl_interval: timedelta
    ocsp_validity: timedelta
    poll_seconds: float = DEFAULT_POLL_SECONDS
    #: Where each published CRL is also written as a file (for a CDN); None: nowhere.
    crl_dir: Path | None = None

    @classmethod
    def from_config(cls, config: Config) -> StatusSettings:
        return cls(
            crl_validity=timedelta(hours=config.crl_validity_hours),
            crl_interval=timedelta(hours=config.crl_interval_hours),
            ocsp_validity=timedelta(hours=config.ocsp_validity_hours),
            crl_dir=config.crl_publish_path,
        )
