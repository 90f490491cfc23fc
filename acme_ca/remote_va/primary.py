"""The validator the RA gets: the primary VA alone, or wrapped for corroboration.

With remote perspectives configured, :class:`~acme_ca.va.mpic.MpicValidator` over the mutual-
TLS client; without (embedded defaults, test mode without ``--perspectives``), the plain
:class:`ValidationAuthority` -- said loudly at start-up (a ``va.mpic_disabled`` warning) and
in the directory's ``meta.corroboration``.
"""

from __future__ import annotations

import structlog

from acme_ca.clock import Clock
from acme_ca.remote_va.client import MtlsTransport
from acme_ca.va.authority import ValidationAuthority
from acme_ca.va.mpic import MpicValidator
from acme_ca.va.mtls import client_context
from acme_ca.va.perspectives import MpicConfigError, MpicSetup, load_mpic_setup
from acme_ca.va.quorum import PHASES, phase_for
from acme_ca.va.settings import VASettings
from acme_ca.va.setup import build_validation_authority

log = structlog.get_logger(component="acme_ca.remote_va.primary")

MPIC_DISABLED_NOTE = (
    "no remote network perspectives: validations are not corroborated (BR 3.2.2.9 requires "
    "corroboration for publicly-trusted issuance)"
)


def build_validator(
    settings: VASettings, clock: Clock, setup: MpicSetup | None = None
) -> ValidationAuthority | MpicValidator:
    """The RA's validator; ``setup`` defaults to :func:`load_mpic_setup` of ``settings.mpic``."""
    setup = setup if setup is not None else load_mpic_setup(settings.mpic, clock.now())
    local = build_validation_authority(settings, clock)
    if not setup.perspectives:
        if setup.local_test_perspectives:
            raise MpicConfigError("the --perspectives test VAs must be started before the CA")
        log.warning("va.mpic_disabled", detail=MPIC_DISABLED_NOTE, reason=setup.skip_reason)
        return local
    assert setup.client_cert and setup.client_key and setup.server_ca
    transport = MtlsTransport(client_context(setup.client_cert, setup.client_key, setup.server_ca))
    now = clock.now()
    phase = phase_for(now)
    upcoming = [p for p in PHASES if p.since is not None and p.since > now]
    later = min(upcoming, key=lambda p: p.since or now) if upcoming else None
    log.info(
        "va.mpic_enabled",
        source=setup.source,
        strict=setup.strict,
        perspectives=[{"id": p.id, "rir": p.rir, "url": p.url} for p in setup.perspectives],
        phase=phase.label,
        min_remotes=phase.min_remotes,
        timeout_seconds=setup.timeout_seconds,
    )
    if later is not None and setup.strict and len(setup.perspectives) < later.min_remotes:
        log.warning(
            "va.mpic_too_few_soon",
            detail=f"{len(setup.perspectives)} remote perspectives configured; BR 3.2.2.9 "
            f"requires {later.min_remotes} from {later.label}: every validation will fail then",
        )
    if not setup.strict:
        log.warning(
            "va.mpic_test_configuration",
            detail="test configuration: the date's minimum number of remote perspectives is "
            "not enforced and the perspectives are not shown to be distinct networks",
        )
    return MpicValidator(local, setup, transport, clock)
