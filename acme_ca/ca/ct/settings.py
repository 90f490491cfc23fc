"""Certificate Transparency's settings: the one place ca/ct/ reads the Config."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from acme_ca.ca.ct.policy import CtPolicy
from acme_ca.config.keys import Config


@dataclass(frozen=True)
class CtSettings:
    """How submissions run (:mod:`acme_ca.ca.ct.submit`); :meth:`from_config` for the
    configured values."""

    #: One log's budget for one submission, all tries included (``ct_timeout_seconds``).
    timeout: float = 10.0
    #: How long a job keeps trying to meet the policy (``ct_deadline_seconds``).
    deadline: timedelta = timedelta(hours=1)
    #: While SCTs are missing, another log is tried this often (``ct_stagger_milliseconds``).
    stagger: float = 2.0
    #: Pause before retrying a 5xx / refused connection that gave no Retry-After
    #: (``ct_retry_pause_milliseconds``).
    retry_pause: float = 0.25
    #: Job backoff after a failed collection: first pause, doubling up to ``retry_max``
    #: (``ct_backoff_initial_seconds``, ``ct_backoff_max_seconds``).
    retry_initial: timedelta = timedelta(seconds=10)
    retry_max: timedelta = timedelta(minutes=5)
    #: Allowed difference between a log's clock and ours.
    clock_skew: timedelta = timedelta(seconds=5)
    #: Send final certificates to the logs afterwards (best effort); from a configuration,
    #: only to the logs of ``ct_log_list`` (see :meth:`from_config`).
    submit_final: bool = True
    #: Try logs of equal standing in random order (spreads the load); tests turn it off.
    shuffle: bool = True
    policy: CtPolicy = field(default_factory=CtPolicy)

    @classmethod
    def from_config(cls, config: Config) -> CtSettings:
        return cls(
            timeout=float(config.ct_timeout_seconds),
            deadline=timedelta(seconds=config.ct_deadline_seconds),
            stagger=config.ct_stagger_milliseconds / 1000,
            retry_pause=config.ct_retry_pause_milliseconds / 1000,
            retry_initial=timedelta(seconds=config.ct_backoff_initial_seconds),
            retry_max=timedelta(seconds=config.ct_backoff_max_seconds),
            # The in-process test logs (no ct_log_list: test mode, the embedded defaults) get
            # precertificates only: nobody reads them, and answering add-chain was about 5 ms
            # of the worker's CPU per issuance, in its own process (docs/performance.md).
            submit_final=config.ct_log_list is not None,
        )

    def backoff(self, retries: int) -> timedelta:
        """Pause before the ``retries``-th retry of a job (1-based)."""
        pause: timedelta = self.retry_initial * (2 ** max(0, retries - 1))
        return min(pause, self.retry_max)
