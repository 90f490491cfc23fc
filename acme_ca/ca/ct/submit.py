"""Submitting precertificates (and, afterwards, certificates) to CT logs, and keeping only
SCTs that verify.

:meth:`CertificateTransparency.collect` takes the usable logs covering the certificate's
notAfter, in random order, and submits ``add-pre-chain`` (precertificate + issuer chain):

* as many logs at once as the policy needs; while SCTs are missing, one more log every
  ``stagger`` seconds (a slow log does not hold issuance up), and a replacement at once for
  every log that fails;
* each log within ``timeout`` seconds, all its tries included; 429 and 5xx answers (and
  refused connections) are retried, honouring ``Retry-After`` when it fits the budget.  A log
  asking for more than the budget is left alone by every job until its Retry-After passes;
* each SCT is verified before it counts: the log id is the submitted log's (and in the list),
  the signature verifies over the RFC 6962 signed data with that log's key, the timestamp is
  not in the future and not older than the first submission of this precertificate (both
  within ``clock_skew``), and ``extensions`` are kept byte for byte;
* it stops as soon as the SCTs received meet the policy, cancelling what is still in flight.

If the policy cannot be met, :class:`CtPolicyNotMet` says why (every log's failure); the
signing worker retries the job later with backoff until ``ct_deadline_seconds``.

:meth:`CertificateTransparency.submit_final_later` sends the final certificate with
``add-chain`` to the logs that gave its SCTs, in the background, best effort.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, TypedDict

import aiohttp
import structlog
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from acme_ca import metrics
from acme_ca.acme.jsontypes import JsonValue
from acme_ca.ca.ct.loglist import CtLog, LogList, LogListError, LogListSource
from acme_ca.ca.ct.policy import CtPolicy, Requirement, spread
from acme_ca.ca.ct.sct import (
    LogEntry,
    SctError,
    SignedCertificateTimestamp,
    X509Entry,
    from_millis,
    precert_entry,
    to_millis,
    verify_signature,
)
from acme_ca.ca.ct.settings import CtSettings
from acme_ca.clock import Clock
from acme_ca.tasks import BackgroundTasks

log = structlog.get_logger(component="acme_ca.ca.ct")

#: Tries per log per submission (the first one included).
MAX_TRIES: Final = 3
USER_AGENT: Final = "acme-ca (certificate transparency submitter)"


class AddChain(TypedDict):
    """The body of ``add-chain``/``add-pre-chain`` (RFC 6962 §4.1): base64 DER, leaf first."""

    chain: list[str]


@dataclass(frozen=True)
class LoggedSct:
    """A verified SCT and the log it came from, as stored with the certificate."""

    sct: SignedCertificateTimestamp
    log_id: str
    log: str
    operator: str
    url: str
    api: str

    @classmethod
    def of(cls, sct: SignedCertificateTimestamp, ct_log: CtLog) -> LoggedSct:
        return cls(
            sct, ct_log.log_id_b64, ct_log.name, ct_log.operator, ct_log.submission_url, ct_log.api
        )

    @property
    def timestamp(self) -> datetime:
        return self.sct.timestamp_datetime

    def summary(self) -> dict[str, str]:
        """What the order timeline and the logs show: log, operator, timestamp."""
        return {
            "log": self.log,
            "operator": self.operator,
            "timestamp": self.timestamp.isoformat().replace("+00:00", "Z"),
        }

    def to_json(self) -> dict[str, JsonValue]:
        return {
            **self.summary(),
            "log_id": self.log_id,
            "url": self.url,
            "api": self.api,
            "timestamp_ms": self.sct.timestamp,
            "sct": base64.b64encode(self.sct.encode()).decode(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LoggedSct:
        return cls(
            SignedCertificateTimestamp.decode(base64.b64decode(data["sct"])),
            data["log_id"],
            data["log"],
            data["operator"],
            data["url"],
            data["api"],
        )


class CtPolicyNotMet(Exception):
    """Not enough verified SCTs; ``reasons`` says what each log did."""

    def __init__(self, requirement: Requirement | None, reasons: Sequence[str]) -> None:
        self.requirement = requirement
        self.reasons = list(reasons)
        wanted = requirement.describe() if requirement else "the CT policy"
        super().__init__(f"could not collect {wanted}: " + "; ".join(self.reasons))


class _LogFailed(Exception):
    """One log gave no usable SCT this time; ``status`` says how, for the metrics."""

    def __init__(self, message: str, status: str) -> None:
        super().__init__(message)
        self.status = status


def _retry_after(value: str | None, now: datetime) -> float | None:
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


@contextlib.contextmanager
def _timed(ct_log: CtLog, call: str) -> Iterator[None]:
    """Observe one submission's time and outcome in ``ct_submission_time_seconds``:
    ``success``, the :class:`_LogFailed` status, ``error``, or ``canceled`` (a hedged
    submission no longer needed)."""
    kind = "final" if call == "add-chain" else "precert"
    started = time.perf_counter()
    status = "canceled"
    try:
        yield
    except _LogFailed as e:
        status = e.status
        raise
    except Exception:
        status = "error"
        raise
    else:
        status = "success"
    finally:
        metrics.observe_ct_submission(ct_log.name, kind, status, time.perf_counter() - started)


def _b64(cert: x509.Certificate) -> str:
    return base64.b64encode(cert.public_bytes(Encoding.DER)).decode()


def _encoded(body: AddChain) -> bytes:
    """``body`` as the JSON every log of one submission is sent: encoded once, not per POST
    (issue 20: 6 encodings of the same chains per issuance)."""
    return json.dumps(body).encode()


_JSON: Final = {"Content-Type": "application/json"}


class CertificateTransparency:
    """Log selection, submission and SCT verification for one worker process."""

    def __init__(
        self,
        logs: LogListSource,
        clock: Clock,
        settings: CtSettings | None = None,
    ) -> None:
        self.logs = logs
        self.settings = settings or CtSettings()
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        #: log id → loop time before which the log is not asked again (its Retry-After).
        self._held: dict[bytes, float] = {}
        self._background = BackgroundTasks()

    # ------------------------------------------------------------------ policy

    def requirement(
        self, not_before: datetime, not_after: datetime, policy: CtPolicy | None = None
    ) -> Requirement:
        """What the SCTs of a certificate must add up to, under ``policy`` (a profile's
        ``ct_policy``) or the settings' policy."""
        return (policy or self.settings.policy).requirement(not_after - not_before)

    def _candidates(self, log_list: LogList, not_after: datetime) -> list[CtLog]:
        now = asyncio.get_running_loop().time()
        return [x for x in log_list.usable_for(not_after) if self._held.get(x.log_id, 0) <= now]

    def coverage_problem(
        self, not_before: datetime, not_after: datetime, policy: CtPolicy | None = None
    ) -> str | None:
        """Why no precertificate should be signed now (no usable logs covering notAfter can
        meet the policy), or None.  Checked before signing, so a hopeless job signs nothing."""
        try:
            log_list = self.logs.current()
        except LogListError as e:
            return str(e)
        requirement = self.requirement(not_before, not_after, policy)
        candidates = self._candidates(log_list, not_after)
        if requirement.satisfied_by(candidates):
            return None
        return (
            f"the usable CT logs whose temporal interval covers notAfter "
            f"{not_after.isoformat()} cannot give {requirement.describe()} "
            f"(candidates: {', '.join(f'{x.name} ({x.operator})' for x in candidates) or 'none'})"
        )

    # ------------------------------------------------------------------ precertificates

    async def collect(
        self,
        precert: x509.Certificate,
        chain: Sequence[x509.Certificate],
        *,
        precert_tbs: bytes,
        issuer_spki_der: bytes,
        not_before: datetime,
        not_after: datetime,
        submitted_at: datetime,
        policy: CtPolicy | None = None,
    ) -> list[LoggedSct]:
        """Submit ``precert`` (issued by ``chain[0]``) until the policy is met; return the
        verified SCTs in the order they arrived.  Raises :class:`CtPolicyNotMet`."""
        try:
            log_list = self.logs.current()
        except LogListError as e:
            raise CtPolicyNotMet(None, [str(e)]) from e
        requirement = self.requirement(not_before, not_after, policy)
        candidates = self._candidates(log_list, not_after)
        if self.settings.shuffle:
            candidates = spread(candidates)
        if not requirement.satisfied_by(candidates):
            problem = self.coverage_problem(not_before, not_after, policy) or "no usable logs"
            raise CtPolicyNotMet(requirement, [problem])
        entry = precert_entry(precert_tbs, issuer_spki_der)
        body = _encoded({"chain": [_b64(precert), *(_b64(c) for c in chain)]})

        def verify(ct_log: CtLog, sct: SignedCertificateTimestamp) -> None:
            self._verify(log_list, ct_log, sct, entry, submitted_at)

        got = await self._race(requirement, candidates, "add-pre-chain", body, verify)
        return got

    async def _race(
        self,
        requirement: Requirement,
        candidates: list[CtLog],
        call: str,
        body: bytes,
        verify: Callable[[CtLog, SignedCertificateTimestamp], None],
    ) -> list[LoggedSct]:
        loop = asyncio.get_running_loop()
        got: dict[bytes, LoggedSct] = {}
        received: list[CtLog] = []
        running: dict[asyncio.Task[SignedCertificateTimestamp], CtLog] = {}
        failures: list[str] = []
        untried = list(candidates)

        def launch() -> bool:
            ct_log = requirement.next_log([*received, *running.values()], untried)
            if ct_log is None:
                return False
            untried.remove(ct_log)
            task = asyncio.create_task(self._submit(ct_log, call, body, verify))
            running[task] = ct_log
            log.debug("ct.submitting", log=ct_log.name, operator=ct_log.operator, call=call)
            return True

        try:
            next_hedge = loop.time() + self.settings.stagger
            while not requirement.satisfied_by(received):
                while not requirement.satisfied_by([*received, *running.values()]) and launch():
                    pass
                if not running:
                    break  # nobody left to ask
                done, _ = await asyncio.wait(
                    running,
                    timeout=max(0.0, next_hedge - loop.time()),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if not done:
                    if launch():
                        log.info("ct.staggered_submission", in_flight=len(running))
                    next_hedge = loop.time() + self.settings.stagger
                    continue
                for task in done:
                    ct_log = running.pop(task)
                    try:
                        sct = task.result()
                    except _LogFailed as e:
                        failures.append(f"{ct_log.name} ({ct_log.operator}): {e}")
                        log.warning(
                            "ct.submission_failed",
                            log=ct_log.name,
                            operator=ct_log.operator,
                            call=call,
                            error=str(e),
                        )
                        continue
                    logged = LoggedSct.of(sct, ct_log)
                    got[ct_log.log_id] = logged
                    received.append(ct_log)
                    log.debug("ct.sct_received", **logged.summary(), call=call)
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        if not requirement.satisfied_by(received):
            if not failures:
                failures.append("no usable log left to try")
            raise CtPolicyNotMet(requirement, failures)
        return list(got.values())

    def _verify(
        self,
        log_list: LogList,
        ct_log: CtLog,
        sct: SignedCertificateTimestamp,
        entry: LogEntry,
        submitted_at: datetime,
    ) -> None:
        if sct.log_id != ct_log.log_id or log_list.by_id(sct.log_id) is None:
            raise SctError(
                f"SCT names log id {base64.b64encode(sct.log_id).decode()}, which is not "
                f"this log's ({ct_log.log_id_b64})"
            )
        verify_signature(sct, ct_log.public_key, entry)
        skew = self.settings.clock_skew
        now = self._clock.now()
        if sct.timestamp > to_millis(now + skew):
            raise SctError(
                f"SCT timestamp {from_millis(sct.timestamp).isoformat()} is in the "
                f"future (now {now.isoformat()})"
            )
        if sct.timestamp < to_millis(submitted_at - skew):
            raise SctError(
                f"SCT timestamp {from_millis(sct.timestamp).isoformat()} is older "
                f"than the submission ({submitted_at.isoformat()})"
            )

    # ------------------------------------------------------------------ HTTP

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers={"User-Agent": USER_AGENT})
        return self._session

    async def _submit(
        self,
        ct_log: CtLog,
        call: str,
        body: bytes,
        verify: Callable[[CtLog, SignedCertificateTimestamp], None],
    ) -> SignedCertificateTimestamp:
        """POST ``body`` (an encoded :class:`AddChain`) to one log's ``call``, retrying
        429/5xx/connection failures within the budget, recorded as
        ``ct_submission_time_seconds``."""
        with _timed(ct_log, call):
            loop = asyncio.get_running_loop()
            budget = self.settings.timeout
            budget_end = loop.time() + budget
            url = ct_log.endpoint(call)
            tries = 0
            while True:
                tries += 1
                remaining = budget_end - loop.time()
                if remaining <= 0:
                    raise _LogFailed(f"no SCT within {budget:g} s", "timeout")
                retry_after_header = None
                try:
                    async with asyncio.timeout(remaining):
                        async with self._http().post(url, data=body, headers=_JSON) as response:
                            status = response.status
                            retry_after_header = response.headers.get("Retry-After")
                            payload = await response.read()
                except TimeoutError:
                    raise _LogFailed(f"no answer within {budget:g} s", "timeout") from None
                except aiohttp.ClientError as e:
                    status, payload = 0, str(e).encode()
                if status == 200:
                    try:
                        sct = SignedCertificateTimestamp.from_json(json.loads(payload))
                        verify(ct_log, sct)
                    except (ValueError, SctError) as e:
                        raise _LogFailed(f"SCT rejected: {e}", "invalid_sct") from None
                    return sct
                what = f"HTTP {status}" if status else f"connection failed ({payload.decode()})"
                if status == 429 or status >= 500 or status == 0:
                    wait = _retry_after(retry_after_header, self._clock.now())
                    pause = self.settings.retry_pause if wait is None else wait
                    if tries >= MAX_TRIES or loop.time() + pause >= budget_end:
                        if wait is not None:
                            self._held[ct_log.log_id] = loop.time() + wait
                            what += f", Retry-After {wait:g} s"
                        raise _LogFailed(f"{what} after {tries} tries", "unavailable")
                    log.info("ct.submission_retry", log=ct_log.name, status=status, pause=pause)
                    await asyncio.sleep(pause)
                    continue
                detail = payload[:200].decode(errors="replace").strip()
                raise _LogFailed(f"{what}: {detail}" if detail else what, "rejected")

    # ------------------------------------------------------------------ final certificates

    def submit_final_later(
        self,
        certificate: x509.Certificate,
        chain: Sequence[x509.Certificate],
        scts: Sequence[LoggedSct],
    ) -> None:
        """``add-chain`` the final certificate to the logs that gave its SCTs, in the
        background; failures are logged, never raised."""
        if not self.settings.submit_final:
            return
        self._background.spawn(
            self._submit_final(certificate, chain, scts),
            name=f"ct-final-{certificate.serial_number:x}",
        )

    async def _submit_final(
        self,
        certificate: x509.Certificate,
        chain: Sequence[x509.Certificate],
        scts: Sequence[LoggedSct],
    ) -> None:
        serial = format(certificate.serial_number, "x")
        try:
            log_list = self.logs.current()
        except LogListError as e:
            log.warning("ct.final_submission_skipped", serial=serial, error=str(e))
            return
        entry = X509Entry(certificate.public_bytes(Encoding.DER))
        body = _encoded({"chain": [_b64(certificate), *(_b64(c) for c in chain)]})
        submitted_at = self._clock.now()

        def verify(ct_log: CtLog, sct: SignedCertificateTimestamp) -> None:
            self._verify(log_list, ct_log, sct, entry, submitted_at)

        async def one(ct_log: CtLog) -> None:
            try:
                sct = await self._submit(ct_log, "add-chain", body, verify)
            except _LogFailed as e:
                log.warning(
                    "ct.final_submission_failed",
                    serial=serial,
                    log=ct_log.name,
                    operator=ct_log.operator,
                    error=str(e),
                )
            else:
                log.debug(
                    "ct.final_submitted", serial=serial, **LoggedSct.of(sct, ct_log).summary()
                )

        targets = []
        for logged in scts:
            ct_log = log_list.by_id(base64.b64decode(logged.log_id))
            if ct_log is not None:
                targets.append(ct_log)
        await asyncio.gather(*(one(t) for t in targets))

    async def wait_idle(self) -> None:
        """Until the background submissions started so far have finished."""
        await self._background.wait_idle()

    async def aclose(self, grace: float = 2.0) -> None:
        """Give background submissions ``grace`` seconds, cancel the rest, close HTTP."""
        await self._background.drain(grace)
        if self._session is not None:
            with contextlib.suppress(Exception):
                await self._session.close()
            self._session = None
