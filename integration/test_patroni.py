"""A Patroni failover under load (issue 17 item 1, "A Patroni failover"): production shape
(``acme-ca serve`` and ``acme-ca worker`` as separate processes, keys in SoftHSM2, CT logs in a
process of their own) on a 2-node Patroni cluster with one etcd, all on loopback
(:mod:`integration.patroni`), reached through a libpq multi-host ``database_url`` with
``target_session_attrs=read-write``.

Several clients issue; the primary's Patroni and PostgreSQL (postmaster and every backend) are
SIGKILLed; Patroni promotes the synchronous standby; the same serve and worker processes go
on issuing on it. Then, on the new primary: the SQL invariants of the fault suite
(:func:`integration.fault_shape.assert_invariants`), and every certificate a client received
is there (``synchronous_mode``: nothing committed is lost). Client side, every answer that
met the outage was a 503 with ``Retry-After``, never a 500. The recovery time (kill to the
first certificate stored on the new primary) is printed and published in docs/ha.md.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from cryptography import x509

from acme_ca.db.pool import create_pool
from integration.fault_shape import Answers, Shape, assert_invariants, client_run, production_shape
from integration.patroni import (
    START_TIMEOUT,
    PatroniCluster,
    PatroniNode,
    create_app_database,
    patroni_available,
)
from integration.processes import READY_TIMEOUT
from tests.support.softhsm import softhsm_available

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not softhsm_available(), reason="SoftHSM2 is not installed"),
    pytest.mark.skipif(
        patroni_available() is not None, reason=f"no Patroni cluster: {patroni_available()}"
    ),
]

#: Clients issuing at once, and certificates each (the kill lands after KILL_AFTER of them).
CLIENTS, ORDERS_EACH, KILL_AFTER = 4, 3, 3
#: Kill to the first certificate stored on the new primary, at most (TTL 6 s, loop 1 s).
RECOVERY_WITHIN = 30.0


@dataclass
class Failover:
    cluster: PatroniCluster
    shape: Shape


@pytest.fixture(scope="module")
def failover(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Failover]:
    base = tmp_path_factory.mktemp("patroni")
    with PatroniCluster(base / "cluster-logs") as cluster:
        cluster.start()
        dsn = asyncio.run(create_app_database(cluster))
        # The replica streaming as the synchronous standby before the CA starts: a serve that
        # met the cluster while the replica was still joining exited 1 at start on a CI run
        # (the overlap saved a few seconds; the test is about the failover, not the start).
        cluster.wait_healthy(timeout=START_TIMEOUT)
        with production_shape(base, dsn) as shape:
            shape.current = shape.processes.worker("worker", env=shape.env)
            shape.current.wait_event("worker.started", timeout=3 * READY_TIMEOUT)
            yield Failover(cluster, shape)


def _serial(fullchain_pem: str) -> str:
    """The leaf's serial as the certificates table stores it (lower-case hex)."""
    leaf = x509.load_pem_x509_certificates(fullchain_pem.encode())[0]
    return format(leaf.serial_number, "x")


def _wait_promotion(cluster: PatroniCluster, dead: PatroniNode, timeout: float) -> PatroniNode:
    """The node Patroni promoted in place of ``dead``."""
    deadline = time.monotonic() + timeout
    while (leader := cluster.leader()) is None or leader is dead:
        tails = "\n".join(n.tails() for n in cluster.nodes if n is not dead)
        assert time.monotonic() < deadline, f"no promotion\n{tails}"
        time.sleep(0.1)
    return leader


async def test_patroni_failover_under_load_loses_no_certificate(failover: Failover) -> None:
    cluster, shape = failover.cluster, failover.shape
    worker = await asyncio.to_thread(shape.worker, "worker")
    answers = Answers()
    issued: dict[str, str] = {}
    names = [
        [f"ha-{n}-{i}.patroni.example.com" for i in range(ORDERS_EACH)] for n in range(CLIENTS)
    ]
    runs = [
        asyncio.create_task(
            asyncio.to_thread(
                client_run, shape, shape.serve.directory_url, names[n], issued, answers=answers
            )
        )
        for n in range(CLIENTS)
    ]
    deadline = time.monotonic() + 120
    while len(issued) < KILL_AFTER:
        assert time.monotonic() < deadline, f"{len(issued)} issued before the kill"
        for run in runs:
            if run.done():
                run.result()
        await asyncio.sleep(0.05)

    # Patroni promotes only the synchronous standby: have one at the kill.
    await asyncio.to_thread(cluster.wait_healthy, timeout=30)
    old = cluster.leader()
    assert old is not None
    killed_wall, killed = datetime.now(UTC), time.monotonic()
    old.kill()
    # A transaction that began between the two clocks and committed before the SIGKILL landed
    # is on the new primary with created_at past killed_wall (it replicated synchronously):
    # on a loaded CI machine that made "recovery" 0.1 s and left no outage in the window
    # looked at below. Only a transaction begun after the kill returned ran on the new primary.
    dead_wall = datetime.now(UTC)
    killed_at = len(issued)
    new = await asyncio.to_thread(_wait_promotion, cluster, old, 60)
    promoted = time.monotonic() - killed
    await asyncio.gather(*runs)
    print(f"{old.name} killed after {killed_at} certificates; {new.name} promoted")

    pool = await create_pool(shape.dsn, max_size=2)
    try:
        assert await pool.fetchval("SELECT NOT pg_is_in_recovery()")
        port = await pool.fetchval("SELECT current_setting('port')::int")
        assert port == new.pg_port, "the multi-host URL must land on the new primary"
        first = await pool.fetchval(
            "SELECT min(created_at) FROM certificates WHERE created_at > $1", dead_wall
        )
        assert first is not None, "nothing issued on the new primary"
        recovery = (first - killed_wall).total_seconds()
        # Nothing lost: every certificate a client received is on the new primary.
        stored = {
            r["serial"]
            for r in await pool.fetch(
                "SELECT serial FROM certificates WHERE serial = ANY($1::text[])",
                [_serial(pem) for pem in issued.values()],
            )
        }
        missing = sorted(n for n, pem in issued.items() if _serial(pem) not in stored)
        assert not missing, f"certificates issued but not on the new primary: {missing}"
        await assert_invariants(pool)
    finally:
        await pool.close()
    print(
        f"recovery: kill -> promotion {promoted:.1f} s, kill -> first certificate stored on "
        f"the new primary {recovery:.1f} s"
    )
    assert sorted(issued) == sorted(name for each in names for name in each)
    assert killed_at < CLIENTS * ORDERS_EACH, "the kill landed after the load"
    assert recovery <= RECOVERY_WITHIN

    # Client side: what met the outage was a 503 with Retry-After, never a 500.
    # The outage lasts at least until Patroni promotes the standby, however soon the first
    # certificate after it was stored.
    outage = max(promoted, recovery) + 1
    during = answers.between(killed, killed + outage)
    failed = [a for a in during if a.status >= 500]
    wrong = [a for a in failed if a.status != 503 or not a.retry_after]
    assert not wrong, f"{wrong}\n{shape.serve.tails()}"
    assert failed, (
        f"no request met the outage: {len(during)} answers within {outage:.1f} s of the "
        f"kill, {len(answers.seen)} in all"
    )
    print(
        f"during the outage: {len(failed)} x 503 with Retry-After, "
        f"{len(during) - len(failed)} other answers"
    )
    assert not [a for a in answers.seen if a.status == 500]
    assert not shape.serve.events("request.internal_error"), shape.serve.tails()
    # The same processes, reconnected: no restart.
    assert shape.serve.alive() and worker.alive() and worker is shape.current
