"""How many embedded SCTs a certificate needs, and from which logs (CT-7, CT-8).

The default :class:`CtPolicy` satisfies both browser policies at once:

* lifetime > 180 days: 3 SCTs, from at least 2 operators, at most 2 of them counted per
  operator (Chrome: ≥ 3 logs and ≥ 2 operators; Apple: 3 SCTs with at most 2 per operator);
* lifetime ≤ 180 days: 2 SCTs from 2 operators (Apple counts at most 1 per operator);
* at least one SCT from an RFC 6962 log (Apple still asks for it; Chrome stopped on
  2026-04-15): ``require_rfc6962``.

The lifetime is notAfter - notBefore, as Chrome computes it.  Only logs whose state is
``usable`` and whose temporal interval covers notAfter are candidates
(:meth:`~acme_ca.ca.ct.loglist.LogList.usable_for`).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from acme_ca.ca.ct.loglist import CtLog


@dataclass(frozen=True)
class Requirement:
    """What one certificate's SCTs must add up to."""

    scts: int
    min_operators: int
    max_per_operator: int
    rfc6962: bool

    def describe(self) -> str:
        text = (
            f"{self.scts} SCTs from at least {self.min_operators} log operators, "
            f"at most {self.max_per_operator} counted per operator"
        )
        return text + (", at least one from an RFC 6962 log" if self.rfc6962 else "")

    def satisfied_by(self, logs: Iterable[CtLog]) -> bool:
        """Whether SCTs from these (distinct) logs meet the requirement."""
        logs = list(logs)
        per_operator = Counter(ct_log.operator for ct_log in logs)
        counted = sum(min(n, self.max_per_operator) for n in per_operator.values())
        return (
            counted >= self.scts
            and len(per_operator) >= self.min_operators
            and (not self.rfc6962 or any(ct_log.rfc6962 for ct_log in logs))
        )

    def next_log(self, chosen: Sequence[CtLog], candidates: Sequence[CtLog]) -> CtLog | None:
        """The candidate that helps ``chosen`` (received or in flight) most: an RFC 6962 log
        while none is chosen, then an operator not yet chosen; never one whose operator is
        already at its cap.  ``candidates`` keep their order among equals."""
        per_operator = Counter(ct_log.operator for ct_log in chosen)
        need_rfc = self.rfc6962 and not any(ct_log.rfc6962 for ct_log in chosen)
        best: tuple[bool, bool] | None = None
        pick = None
        for ct_log in candidates:
            if per_operator[ct_log.operator] >= self.max_per_operator:
                continue
            score = (need_rfc and ct_log.rfc6962, ct_log.operator not in per_operator)
            if best is None or score > best:
                best, pick = score, ct_log
        return pick


@dataclass(frozen=True)
class CtPolicy:
    long_lifetime: timedelta = timedelta(days=180)
    long_scts: int = 3
    long_max_per_operator: int = 2
    short_scts: int = 2
    short_max_per_operator: int = 1
    min_operators: int = 2
    require_rfc6962: bool = True

    def requirement(self, lifetime: timedelta) -> Requirement:
        """For a certificate whose notAfter - notBefore is ``lifetime``."""
        long = lifetime > self.long_lifetime
        return Requirement(
            scts=self.long_scts if long else self.short_scts,
            min_operators=self.min_operators,
            max_per_operator=self.long_max_per_operator if long else self.short_max_per_operator,
            rfc6962=self.require_rfc6962,
        )


#: The CT policies a profile may name (``ct_policy``): both browsers' (the default, above) or
#: Chrome's alone (no RFC 6962 log required since 2026-04-15; Apple may then refuse).
CT_POLICIES: Final[Mapping[str, CtPolicy]] = {
    "chrome-apple": CtPolicy(),
    "chrome": CtPolicy(require_rfc6962=False),
}


def spread(logs: Sequence[CtLog], rng: random.Random | None = None) -> list[CtLog]:
    """``logs`` in random order, so load spreads over logs of equal standing."""
    shuffled = list(logs)
    (rng or random.SystemRandom()).shuffle(shuffled)
    return shuffled
