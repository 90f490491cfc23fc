"""acme_ca in production shape on a given database, and what fault tests assert against it;
shared by ``integration/test_faults.py`` (its own PostgreSQL) and
``integration/test_patroni.py`` (a Patroni cluster behind a multi-host ``database_url``).

* :func:`production_shape`: ``acme-ca serve`` and ``acme-ca worker`` as separate processes,
  keys in a SoftHSM2 token made by ``acme-ca init``, CT test logs in a process of their own
  behind a log list file, a DNS server answering the clients' dns-01 records.
* :func:`client_run`: an ACME client (certbot's ``acme``) issuing certificates and retrying
  each step as ACME clients do (lost connections, 5xx, badNonce); :class:`Answers` records
  every HTTP status and ``Retry-After`` the clients saw.
* :func:`assert_invariants`: the SQL that must hold after any fault.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import requests
from acme import challenges, client, messages
from acme import errors as acme_errors
from josepy.jwk import JWK

from integration.bench.servers import Service, start_service
from integration.challsrv_thread import ThreadedChallengeServer
from integration.clients import acme_account, csr_pem
from integration.processes import (
    READY_TIMEOUT,
    CaProcess,
    CaProcesses,
    base_env,
    describe,
    run_cli,
)
from tests.support.ports import free_port
from tests.support.softhsm import SoftHsmToken

_T = TypeVar("_T")


@dataclass
class Shape:
    env: dict[str, str]
    dsn: str
    home: Path
    token: SoftHsmToken
    processes: CaProcesses
    serve: CaProcess
    dns: ThreadedChallengeServer
    port: int
    #: The worker running now: tests share it (a worker takes seconds to start).
    current: CaProcess | None = None
    #: The CT test logs' process, and how to start it again (:meth:`restart_ct_logs`).
    ct_logs: Service | None = None
    start_ct_logs: Callable[[], Service] | None = None

    @property
    def cafile(self) -> Path:
        return self.home / "tls" / "ca.pem"

    def worker(self, name: str) -> CaProcess:
        """The running worker, or a new one called ``name`` once it has started (a start
        takes 3-5 s, more on a loaded 2-core runner: the wait allows three times the usual)."""
        if self.current is None or not self.current.alive():
            self.current = self.processes.worker(name, env=self.env)
            self.current.wait_event("worker.started", timeout=3 * READY_TIMEOUT)
        return self.current

    def client(self) -> tuple[client.ClientV2, JWK]:
        return acme_account(self.serve.directory_url, self.cafile)

    def stop_ct_logs(self) -> None:
        """Every CT log down: its process stopped, so submissions are refused."""
        assert self.ct_logs is not None
        self.ct_logs.stop()

    def restart_ct_logs(self) -> None:
        """The CT logs back, with their keys (new ports, so a new log list, which the
        worker re-reads without a restart); returns once the new list is written.

        Call it on the main thread: the process dies with the thread that started it
        (PR_SET_PDEATHSIG), and asyncio.to_thread's threads end with the test's loop."""
        assert threading.current_thread() is threading.main_thread()
        assert self.start_ct_logs is not None
        self.ct_logs = self.start_ct_logs()


@contextlib.contextmanager
def production_shape(base: Path, dsn: str, **env: str) -> Iterator[Shape]:
    """The shape on the database ``dsn`` (schema and keys made by ``acme-ca init``), with
    ``serve`` started and ready; ``env`` adds or overrides ``ACME_CA_*`` settings.  The
    worker starts on demand (:meth:`Shape.worker`)."""
    logs = base / "logs"
    logs.mkdir()
    home = base / "home"
    token = SoftHsmToken.create(base / "softhsm", label=f"acme-ca-{base.name}", activate=False)
    log_list = home / "ct" / "log_list.json"
    with contextlib.ExitStack() as stack:
        dns = stack.enter_context(ThreadedChallengeServer())
        settings = base_env(
            ACME_CA_HOME=str(home),
            ACME_CA_DATABASE_URL=dsn,
            ACME_CA_PKCS11_MODULE=token.module,
            ACME_CA_PKCS11_TOKEN_LABEL=token.label,
            ACME_CA_PKCS11_PIN=token.pin,
            ACME_CA_SERVE_WORKER="false",
            ACME_CA_CT_LOG_LIST=str(log_list),
            ACME_CA_DNS_RESOLVER=dns.resolver,
            ACME_CA_DNSSEC="off",
            ACME_CA_WORKER_POLL_SECONDS="1",
            ACME_CA_LOG_FORMAT="json",
            **token.env(),
            **env,
        )
        init = run_cli("init", env=settings, timeout=300)
        assert init.returncode == 0, describe(init)
        starts = 0

        def start_ct_logs() -> Service:
            """The CT logs' process, returned once it has written a new log list (atomic
            rename: a new inode)."""
            nonlocal starts
            starts += 1
            before = log_list.stat().st_ino if log_list.exists() else None
            ct_logs: Service = start_service(
                stack,
                f"ct-logs-{starts}",
                [sys.executable, "-m", "integration.bench.ctlogs", "--home", str(home)],
                env=base_env(),
                log_dir=logs,
            )
            deadline = time.monotonic() + READY_TIMEOUT
            while not log_list.exists() or log_list.stat().st_ino == before:
                ct_logs.check_alive()
                assert time.monotonic() < deadline, ct_logs.tails()
                time.sleep(0.05)
            return ct_logs

        ct_logs = start_ct_logs()
        processes = stack.enter_context(CaProcesses(logs))
        port = free_port()
        serve = processes.serve(
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            env=settings,
            base_url=f"https://127.0.0.1:{port}",
        )
        serve.wait_ready(cafile=home / "tls" / "ca.pem")
        yield Shape(
            settings, dsn, home, token, processes, serve, dns, port,
            ct_logs=ct_logs, start_ct_logs=start_ct_logs,
        )  # fmt: skip


# ------------------------------------------------------------------------------ invariants


async def assert_invariants(pool: asyncpg.Pool) -> None:
    """What must hold after any fault: no order valid without its certificate, no order with
    two certificates or precertificates, no serial shared, no job running past its lease,
    every order finished (valid, or invalid with a problem)."""
    valid_without = await pool.fetch(
        "SELECT o.id FROM orders o LEFT JOIN certificates c ON c.order_id = o.id "
        "WHERE o.status = 'valid' AND c.id IS NULL"
    )
    assert not valid_without, f"valid orders without a certificate: {valid_without}"
    for table in ("certificates", "precertificates"):
        doubled = await pool.fetch(
            f"SELECT order_id FROM {table} GROUP BY order_id HAVING count(*) > 1"
        )
        assert not doubled, f"orders with two {table}: {doubled}"
    shared = await pool.fetch(
        "SELECT serial FROM certificates GROUP BY serial HAVING count(*) > 1 "
        "UNION ALL SELECT serial FROM precertificates GROUP BY serial HAVING count(*) > 1"
    )
    assert not shared, f"serials used twice: {shared}"
    across = await pool.fetch(
        "SELECT p.serial FROM precertificates p JOIN certificates c ON c.serial = p.serial "
        "WHERE c.order_id <> p.order_id"
    )
    assert not across, f"a serial shared between orders: {across}"
    stuck = await pool.fetch(
        "SELECT id, locked_by FROM issuance_jobs WHERE status = 'running' "
        "AND locked_until < now() - interval '2 seconds'"
    )
    assert not stuck, f"jobs running past their lease: {stuck}"
    unfinished = await pool.fetch(
        "SELECT id, status FROM orders WHERE status IN ('processing') "
        "OR (status = 'invalid' AND error IS NULL)"
    )
    assert not unfinished, f"orders neither finished nor failed with a problem: {unfinished}"


# ------------------------------------------------------------------------------ clients


@dataclass(frozen=True)
class Answer:
    """One HTTP answer a client got (client side: what went over the wire)."""

    at: float  # time.monotonic()
    method: str
    url: str
    status: int
    retry_after: str | None


@dataclass
class Answers:
    """Every HTTP answer the watched clients got, from any thread."""

    seen: list[Answer] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def watch(self, acme: client.ClientV2) -> None:
        """Record every response of ``acme``'s HTTP session."""
        acme.net.session.hooks["response"].append(self._record)

    def _record(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        answer = Answer(
            time.monotonic(),
            response.request.method or "",
            response.url,
            response.status_code,
            response.headers.get("Retry-After"),
        )
        with self._lock:
            self.seen.append(answer)

    def between(self, start: float, end: float) -> list[Answer]:
        with self._lock:
            return [a for a in self.seen if start <= a.at <= end]


def retrying(what: str, step: Callable[[], _T], deadline: float) -> _T:
    """One client step, retried as an ACME client retries: on a lost connection, a 5xx
    (503 with Retry-After included) or badNonce."""
    while True:
        try:
            return step()
        except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError):
            pass
        except messages.Error as e:
            if e.typ not in (
                "urn:ietf:params:acme:error:serverInternal",
                "urn:ietf:params:acme:error:badNonce",
            ):
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still failing at the deadline")
        time.sleep(0.3)


def order_retrying(
    shape: Shape, acme: client.ClientV2, key: JWK, name: str, deadline: float
) -> messages.OrderResource:
    """One certificate for ``name``, each step retried (:func:`retrying`)."""
    order = retrying("newOrder", functools.partial(acme.new_order, csr_pem([name])), deadline)
    for authz in order.authorizations:
        challb = next(c for c in authz.body.challenges if isinstance(c.chall, challenges.DNS01))
        response, validation = challb.chall.response_and_validation(key)
        shape.dns.set_txt(challb.chall.validation_domain_name(name), validation)

        def answer(
            challb: messages.ChallengeBody = challb,
            response: challenges.ChallengeResponse = response,
        ) -> None:
            # A retry after a lost answer: the first POST started the validation, and a POST
            # while it runs is answered 409 (CONC-1, as Boulder does): go on polling.
            with contextlib.suppress(acme_errors.ConflictError):
                acme.answer_challenge(challb, response)

        retrying("challenge", answer, deadline)
    poll = functools.partial(
        acme.poll_authorizations, order, dt.datetime.now() + dt.timedelta(seconds=30)
    )
    ready = retrying("authorizations", poll, deadline)

    def finalize() -> messages.OrderResource:
        limit = dt.datetime.now() + dt.timedelta(seconds=60)
        try:
            return acme.finalize_order(ready, limit)
        except messages.Error as e:  # finalized already, its answer lost: poll it
            if e.typ != "urn:ietf:params:acme:error:orderNotReady":
                raise
            return acme.poll_finalization(ready, limit)

    return retrying("finalize", finalize, deadline)


def client_run(
    shape: Shape,
    directory: str,
    names: list[str],
    issued: dict[str, str],
    *,
    answers: Answers | None = None,
    seconds: float = 180,
) -> None:
    """A client issuing one certificate per name in turn, retrying each step; every
    certificate's full chain goes into ``issued`` under its name."""
    deadline = time.monotonic() + seconds
    account = functools.partial(acme_account, directory, shape.cafile)
    acme, key = retrying("account", account, deadline)
    if answers is not None:
        answers.watch(acme)
    for name in names:
        done = order_retrying(shape, acme, key, name, deadline)
        assert done.fullchain_pem
        issued[name] = done.fullchain_pem
