"""Issuance leases and HSM loss in the signing worker (issue 17 item 4): the lease is renewed
while a job is in flight (a slow signer, slow CT logs), a worker takes over at once the jobs
of a dead holder on its own host, and a failing signer sends the job back to the queue with
backoff (the order waits, up to ``hsm_deadline``) instead of parking it until its lease lapses.

Real PostgreSQL, a real development hierarchy, the real linter and in-process CT test logs;
the signer is the real one, wrapped so a test can stall it or make it fail
(:class:`tests.support.worker.WrappedSigner`).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

import asyncpg
import pytest

from acme_ca.ca.ct.loglist import StaticLogList, parse_log_list
from acme_ca.ca.ct.submit import CertificateTransparency
from acme_ca.ca.issuers import IssuerSet
from acme_ca.ca.lint import CertificateLinter
from acme_ca.ca.signer import HashName, SignerError
from acme_ca.ca.worker import SigningWorker
from acme_ca.clock import SystemClock
from acme_ca.config import Config
from acme_ca.db.issuance import IssuanceRepository
from acme_ca.liveness import host_prefix
from acme_ca.testsrv.ct_log_set import TestCtLogs
from acme_ca.testsrv.ct_logs_runner import accepted_roots
from tests.support.worker import (
    FAST,
    WrappedSigner,
    build_csr,
    ct_log_specs,
    insert_ready_order,
    job_of,
    make_pki_config,
    order_of,
    signing_worker,
    wrap_issuers,
)

HOST = socket.gethostname()


@pytest.fixture(scope="module")
def pki_config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    return make_pki_config(tmp_path_factory.mktemp("lease-pki"))


@pytest.fixture
async def ct(pki_config: Config) -> AsyncIterator[CertificateTransparency]:
    async with TestCtLogs(ct_log_specs(), accepted_roots(pki_config)) as logs:
        transparency = CertificateTransparency(
            StaticLogList(parse_log_list(logs.log_list())), SystemClock(), FAST
        )
        try:
            yield transparency
        finally:
            await transparency.aclose()


def _worker(
    pool: asyncpg.Pool,
    issuers: IssuerSet,
    linter: CertificateLinter,
    ct: CertificateTransparency,
    config: Config,
    worker_id: str,
    **kwargs: Any,
) -> SigningWorker:
    return signing_worker(pool, issuers, linter, ct, config, worker_id=worker_id, **kwargs)


async def _queue(pool: asyncpg.Pool, config: Config, i: int) -> int:
    names = [f"lease-{i}.example.com"]
    account_id, order_id = await insert_ready_order(pool, names)
    assert await IssuanceRepository(pool).enqueue(
        order_id=order_id,
        account_id=account_id,
        csr_der=build_csr(names, "ec"),
        names=names,
        issuer=config.ecdsa_issuer,
        now=datetime.now(UTC),
    )
    return order_id


class TokenGone(WrappedSigner):
    """The real signer, failing as the PKCS#11 signer does while its token is absent."""

    absent = True

    async def sign(self, data: bytes, hash: HashName) -> bytes:
        if self.absent:
            self.calls += 1
            raise SignerError("PKCS#11 signing with key 'dv-ecc' failed: TokenNotPresent")
        return await super().sign(data, hash)


class _Renewals(IssuanceRepository):
    """The real repository, counting the lease renewals that held (the job was still the
    worker's); :meth:`reached` waits for the n-th.  A test waits on renewals, not on
    wall-clock time: a loaded machine delays them, never skips them."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self.count = 0
        self._held = asyncio.Event()

    async def renew_lease(
        self, job_id: int, worker_id: str, *, now: datetime, lease: timedelta
    ) -> bool:
        held = await super().renew_lease(job_id, worker_id, now=now, lease=lease)
        if held:
            self.count += 1
            self._held.set()
        return held

    async def reached(self, n: int, *, timeout: float = 30) -> None:
        """Until ``n`` renewals have held (a generous deadline: they come every third of a
        lease)."""
        async with asyncio.timeout(timeout):
            while self.count < n:
                self._held.clear()
                await self._held.wait()


def _with_signer(issuers: IssuerSet, name: str, signer: WrappedSigner) -> IssuerSet:
    """The same issuers, ``name`` signing through ``signer``."""
    changed = {**issuers.issuers, name: replace(issuers.issuers[name], signer=signer)}
    return replace(issuers, issuers=MappingProxyType(changed))


async def test_lease_is_renewed_while_a_slow_signer_holds_the_job(
    pool: asyncpg.Pool,
    pki_config: Config,
    issuers: IssuerSet,
    linter: CertificateLinter,
    ct: CertificateTransparency,
) -> None:
    """The signer stalls until released: the job's lease is renewed every third of it, so
    past its first lease the job is still its worker's and another worker finds nothing."""
    order_id = await _queue(pool, pki_config, 1)
    slow, signers = wrap_issuers(issuers)
    signer = signers[pki_config.ecdsa_issuer]
    signer.gate = asyncio.Event()
    lease = timedelta(seconds=3)
    renewals = _Renewals(pool)
    worker = _worker(pool, slow, linter, ct, pki_config, "slow", lease=lease, jobs=renewals)
    stalled = asyncio.create_task(worker.run_once())
    try:
        await asyncio.wait_for(signer.entered.wait(), timeout=20)
        # Three renewals, each a third of a lease after the last: the lease taken with the
        # claim has lapsed, only the renewals keep the job.
        await renewals.reached(3)
        job = await job_of(pool, order_id)
        assert job["status"] == "running" and job["locked_by"] == "slow"
        assert job["locked_until"] > datetime.now(UTC)
        other = _worker(pool, issuers, linter, ct, pki_config, "other", lease=lease)
        assert not await other.run_once(), "a renewed lease must not be taken over"
    finally:
        signer.gate.set()
    assert await asyncio.wait_for(stalled, timeout=20)
    job = await job_of(pool, order_id)
    assert job["status"] == "done" and job["attempts"] == 1
    assert (await order_of(pool, order_id))["status"] == "valid"


async def test_lease_is_renewed_while_the_ct_logs_are_slow(
    pool: asyncpg.Pool,
    pki_config: Config,
    issuers: IssuerSet,
    linter: CertificateLinter,
) -> None:
    """Every CT log answers after 6 s (within the CT timeout), leases of 2 s: while the
    submissions are held the lease is renewed, the job stays its worker's past its first
    lease and another worker finds nothing to take; the job then finishes once, with its
    SCTs."""
    # Three times what the renewals waited for below take (2 s, a lease): the SCTs cannot
    # come back before the check, even on a loaded machine.
    delay = 6.0
    async with TestCtLogs(ct_log_specs(), accepted_roots(pki_config)) as logs:
        slow_ct = CertificateTransparency(
            StaticLogList(parse_log_list(logs.log_list())),
            SystemClock(),
            replace(FAST, timeout=delay + 9),
        )
        order_id = await _queue(pool, pki_config, 40)
        lease = timedelta(seconds=2)
        for ct_log in logs.logs:
            ct_log.faults.delay = delay
        renewals = _Renewals(pool)
        worker = _worker(
            pool, issuers, linter, slow_ct, pki_config, "ct-slow", lease=lease, jobs=renewals
        )
        waiting = asyncio.create_task(worker.run_once())
        try:
            async with asyncio.timeout(20):
                while not sum(x.requests["add-pre-chain"] for x in logs.logs):
                    await asyncio.sleep(0.02)
            # Two renewals while the logs hold the submissions, and three in all: the lease
            # taken with the claim has lapsed, only the renewals keep the job.
            await renewals.reached(max(3, renewals.count + 2))
            job = await job_of(pool, order_id)
            assert job["status"] == "running" and job["locked_by"] == "ct-slow", dict(job)
            assert job["step"] == "precert_signed", "the SCTs came back before the check"
            assert job["locked_until"] > datetime.now(UTC)
            other = _worker(pool, issuers, linter, slow_ct, pki_config, "other", lease=lease)
            assert not await other.run_once(), "a renewed lease must not be taken over"
            assert await asyncio.wait_for(waiting, timeout=60)
        finally:
            logs.clear_faults()
            await slow_ct.aclose()
    job = await job_of(pool, order_id)
    assert job["status"] == "done" and job["attempts"] == 1
    assert (await order_of(pool, order_id))["status"] == "valid"


async def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    await asyncio.to_thread(proc.wait)
    return proc.pid


async def test_jobs_of_a_dead_holder_on_this_host_are_taken_over_at_once(
    pool: asyncpg.Pool,
    pki_config: Config,
    issuers: IssuerSet,
    linter: CertificateLinter,
    ct: CertificateTransparency,
) -> None:
    """Three running jobs with 10-minute leases: the holder on this host whose process is
    gone loses its job at once; a live holder on this host and one elsewhere keep theirs."""
    dead, alive, elsewhere = (
        f"{HOST}:{await _dead_pid()}",
        f"{HOST}:{os.getppid()}",
        f"other-host.invalid:{os.getpid()}",
    )
    orders = {
        holder: await _queue(pool, pki_config, i)
        for i, holder in enumerate([dead, alive, elsewhere], 10)
    }
    for holder, order_id in orders.items():
        await pool.execute(
            "UPDATE issuance_jobs SET status = 'running', attempts = 1, locked_by = $2, "
            "locked_until = now() + interval '10 minutes' WHERE order_id = $1",
            order_id,
            holder,
        )
    worker = _worker(pool, issuers, linter, ct, pki_config, f"{HOST}:{os.getpid()}")
    taken = await worker.take_over_dead_holders()
    assert taken == [(await job_of(pool, orders[dead]))["id"]]
    assert await worker.run_once()
    assert not await worker.run_once(), "live holders' jobs must stay theirs"
    assert (await order_of(pool, orders[dead]))["status"] == "valid"
    for holder in (alive, elsewhere):
        assert (await job_of(pool, orders[holder]))["locked_by"] == holder


async def test_absent_token_defers_the_job_and_it_resumes_when_the_token_returns(
    pool: asyncpg.Pool,
    pki_config: Config,
    issuers: IssuerSet,
    linter: CertificateLinter,
    ct: CertificateTransparency,
) -> None:
    order_id = await _queue(pool, pki_config, 20)
    gone = TokenGone(issuers.by_name(pki_config.ecdsa_issuer).signer)
    flaky = _with_signer(issuers, pki_config.ecdsa_issuer, gone)
    worker = _worker(pool, flaky, linter, ct, pki_config, "w")
    assert await worker.run_once()
    job = await job_of(pool, order_id)
    assert job["status"] == "queued" and job["deferrals"] == 1 and job["locked_by"] is None
    assert job["serial"] is not None and job["precert_der"] is None, "nothing was signed"
    assert job["retry_at"] > datetime.now(UTC)
    assert (await order_of(pool, order_id))["status"] == "processing"
    events = await pool.fetch(
        "SELECT details FROM audit_events WHERE event = 'hsm.deferred' AND order_id = $1",
        order_id,
    )
    assert len(events) == 1 and "TokenNotPresent" in events[0]["details"]["error"]

    gone.absent = False  # the token is back
    await pool.execute("UPDATE issuance_jobs SET retry_at = now() WHERE order_id = $1", order_id)
    assert await worker.run_once()
    done = await job_of(pool, order_id)
    assert done["status"] == "done" and done["serial"] == job["serial"]
    assert (await order_of(pool, order_id))["status"] == "valid"


async def test_token_absent_past_the_deadline_fails_the_order(
    pool: asyncpg.Pool,
    pki_config: Config,
    issuers: IssuerSet,
    linter: CertificateLinter,
    ct: CertificateTransparency,
) -> None:
    order_id = await _queue(pool, pki_config, 30)
    gone = TokenGone(issuers.by_name(pki_config.ecdsa_issuer).signer)
    flaky = _with_signer(issuers, pki_config.ecdsa_issuer, gone)
    worker = _worker(pool, flaky, linter, ct, pki_config, "w", hsm_deadline=timedelta(0))
    assert await worker.run_once()
    order = await order_of(pool, order_id)
    assert order["status"] == "invalid"
    assert order["error"]["type"] == "urn:ietf:params:acme:error:serverInternal"
    assert (await job_of(pool, order_id))["status"] == "failed"


async def test_dead_holders_are_checked_at_start_and_once_per_poll_not_per_job(
    pool: asyncpg.Pool,
    pki_config: Config,
    issuers: IssuerSet,
    linter: CertificateLinter,
    ct: CertificateTransparency,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A dead predecessor's job (10-minute lease) is taken over as the worker starts; the jobs
    that NOTIFY it afterwards are claimed without asking again who holds leases (issue 20: that
    query ran on every wake-up, about once per issuance), until the next poll interval."""
    order_dead = await _queue(pool, pki_config, 50)
    await pool.execute(
        "UPDATE issuance_jobs SET status = 'running', attempts = 1, locked_by = $2, "
        "locked_until = now() + interval '10 minutes' WHERE order_id = $1",
        order_dead,
        f"{HOST}:{await _dead_pid()}",
    )
    worker = _worker(pool, issuers, linter, ct, pki_config, f"{HOST}:{os.getpid()}")
    worker._poll = 30.0
    asked: list[str] = []
    real = worker._jobs.lease_holders

    async def counted(prefix: str, *, now: datetime) -> list[str]:
        asked.append(prefix)
        return await real(prefix, now=now)

    monkeypatch.setattr(worker._jobs, "lease_holders", counted)

    async def valid(order_id: int) -> None:
        while (await order_of(pool, order_id))["status"] != "valid":
            await asyncio.sleep(0.05)

    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await asyncio.wait_for(valid(order_dead), timeout=30)
        for i in (51, 52, 53):
            await asyncio.wait_for(valid(await _queue(pool, pki_config, i)), timeout=30)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)
    assert asked == [host_prefix(worker.worker_id)]
    assert (await job_of(pool, order_dead))["attempts"] == 2  # the dead holder's, then ours
