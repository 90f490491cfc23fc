"""``acme-ca serve`` and ``acme-ca worker``: database, schema, PKI, front end and/or signing
worker, until SIGTERM or SIGINT.  Every resource is entered on one exit stack, so whatever
started is stopped, in reverse order, however the process ends."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import structlog

from acme_ca.ca.hierarchy import KeySupply, init_hierarchy
from acme_ca.ca.issuers_file import ISSUERS_FILE
from acme_ca.ca.settings import HierarchySettings
from acme_ca.clock import Clock, SystemClock
from acme_ca.config import Config
from acme_ca.db.database import database_dsn, ephemeral_database, migrate
from acme_ca.db.settings import DatabaseSettings
from acme_ca.deployment import Assessment, deployment_gate, signing_guard
from acme_ca.main.app import create_app
from acme_ca.main.early_cluster import EarlyCluster, EarlyKeys
from acme_ca.main.metrics import metrics_listener
from acme_ca.main.status import start_status_server
from acme_ca.psl import parse_public_suffix_lists
from acme_ca.remote_va.primary import build_validator
from acme_ca.tls import ensure_local_tls, server_ssl_context
from acme_ca.va.perspectives import MpicSetup, load_mpic_setup
from acme_ca.va.settings import VASettings
from acme_ca.wfe import urls
from acme_ca.wfe.middleware.load_shedding import GuardedRunner, close_listener, listen

if TYPE_CHECKING:
    from acme_ca.testsrv.ephemeral_spare import ClaimedSpare

log = structlog.get_logger(component="acme_ca.serve")


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def ensure_hierarchy(config: Config, supplied: KeySupply | None = None) -> None:
    """On the embedded defaults (no ``pki_dir`` configured), create the development
    hierarchy on first start; a configured ``pki_dir`` must already hold issuers.toml.  In
    test mode an existing one must have the chains ``alternate_roots``/``chain_length`` ask
    for (Pebble's variables)."""
    if config.pki_dir is None and not (config.pki_path / ISSUERS_FILE).exists():
        path = await init_hierarchy(HierarchySettings.from_config(config), supplied=supplied)
        log.warning(
            "pki.development_hierarchy_created",
            issuers=str(path),
            root=str((config.pki_path / "root.pem").resolve()),
        )
    elif config.test_mode:
        from acme_ca.ca.hierarchy_chains import check_chain_shape

        await asyncio.to_thread(check_chain_shape, HierarchySettings.from_config(config))


async def serve(
    config: Config,
    *,
    stop: asyncio.Event | None = None,
    clock: Clock | None = None,
    early_cluster: EarlyCluster | None = None,
    early_keys: EarlyKeys | None = None,
    spare: ClaimedSpare | None = None,
) -> None:
    """Run the CA (:func:`_serve`); with ``ephemeral`` (``serve --test --ephemeral``) in a
    throwaway home made for this run and removed after it, as Pebble forgets everything.
    Only the HTTPS listener's certificate stays in ``home/tls`` (made once, like Pebble's
    fixed one), so clients keep trusting ``$ACME_CA_HOME/tls/ca.pem``.  ``early_cluster``:
    the ephemeral runs' PostgreSQL, already starting, and ``early_keys`` the new hierarchy's
    RSA keys, being made (the CLI's, :mod:`.early_cluster`); or ``spare``: the hierarchy
    the previous run made for this one, taken by the CLI.  Once ready, the run makes the
    next run's spare (:mod:`acme_ca.testsrv.ephemeral_spare`)."""
    if not config.ephemeral:
        await _serve(config, stop=stop, clock=clock)
        return
    from acme_ca.testsrv.ephemeral import ephemeral_home

    tls_cert, tls_key = config.tls_cert, config.tls_key
    if not config.plain_http and tls_cert is None:
        tls_cert, tls_key, _ = await asyncio.to_thread(ensure_local_tls, config.home / "tls")
    async with ephemeral_home() as home, contextlib.AsyncExitStack() as stack:
        run = replace(config, home=home, tls_cert=tls_cert, tls_key=tls_key)
        # The two slow first steps overlap: the run's new database (a copy of a migrated
        # template in $ACME_CA_HOME/pg-ephemeral) and the new hierarchy (key generation, or
        # the spare moved in).
        started = early_cluster.claim() if early_cluster is not None else None
        database = asyncio.create_task(
            stack.enter_async_context(
                ephemeral_database(
                    DatabaseSettings.from_config(config).ephemeral_data_root, started=started
                )
            )
        )
        try:
            if spare is not None:
                await asyncio.to_thread(spare.move_into, home)
                log.info("testmode.ephemeral_spare_used", home=str(home))
            await ensure_hierarchy(run, early_keys.take if early_keys is not None else None)
        finally:
            dsn = await database
        # Once ready, the next run's hierarchy is made in a low-priority child; at the end
        # the run waits for it (bounded), so even a quick start and stop leaves a spare.
        from acme_ca.testsrv.ephemeral_spare import finish_next_spare, make_next_spare

        ready = asyncio.Event()
        settings = HierarchySettings.from_config(run)
        making = asyncio.create_task(make_next_spare(ready, config.home, settings))
        stack.push_async_callback(finish_next_spare, ready, making)
        await _serve(replace(run, database_url=dsn), stop=stop, clock=clock, ready=ready)


async def _serve(
    config: Config,
    *,
    stop: asyncio.Event | None = None,
    clock: Clock | None = None,
    ready: asyncio.Event | None = None,
) -> None:
    """Run the CA until ``stop`` is set or the process is asked to terminate.

    Before anything starts: the development hierarchy of the embedded defaults is made, the
    deployment is assessed (:func:`~acme_ca.deployment.deployment_gate`: a production
    hierarchy with a failing invariant raises :class:`~acme_ca.deployment.DeploymentRefused`),
    and the multi-perspective configuration is checked (a refusal raises
    :class:`~acme_ca.va.perspectives.MpicConfigError`).  Started in order and stopped in
    reverse: the metrics listener (``metrics_listen``), database, schema, in test mode the
    challenge test server (and the ``--perspectives`` remote VAs), the status listener, the
    signing worker (``serve_worker``: a child process, :mod:`.worker_process`, or with
    ``serve_worker_in_process`` a task here; with its CT test logs when ``ct_log_list`` is
    unset, test mode and embedded defaults), then the ACME listener.  Outside test mode the
    worker starts before the listener, in test mode just after it; at stop it is stopped
    first.  ``ready`` is set once all of that has started.
    """
    clock = clock or SystemClock()
    await ensure_hierarchy(config)
    # A configuration the BRs do not allow never starts anything.
    assessment = await deployment_gate(config, clock.now(), process="serve")
    va = VASettings.from_config(config)
    mpic = load_mpic_setup(va.mpic, clock.now())
    stop = stop or asyncio.Event()
    _stop_on_signals(stop)
    database = DatabaseSettings.from_config(config)
    if database.url is None:
        log.info("database.embedded", home=str(config.home.resolve()))
    async with contextlib.AsyncExitStack() as stack:
        # First: a metrics port already taken stops the start before anything else runs.
        await stack.enter_async_context(metrics_listener(config, "serve"))
        dsn = await stack.enter_async_context(database_dsn(database))
        applied = await migrate(dsn)
        log.info("database.migrated", applied=applied)
        if config.test_mode:
            from acme_ca.testsrv.testmode import challenge_test_server

            await stack.enter_async_context(challenge_test_server(config, dsn))
            if mpic.local_test_perspectives:
                from acme_ca.remote_va.local import local_remote_vas

                mpic = await stack.enter_async_context(local_remote_vas(va, config.home))
        if config.status_listen != "off":
            try:
                status = await start_status_server(config, dsn)
            except OSError:
                log.exception("status.listen_failed", listen=config.status_listen)
                raise
            stack.push_async_callback(status.aclose)
            log.info(
                "status.ready",
                url=status.url,
                listen=config.status_listen,
                status_base_url=config.status_base_url,
            )
        worker: asyncio.Task[None] | None = None
        stop_worker: Callable[[], Awaitable[None]] | None = None
        launch = _WorkerStart(config, dsn, clock, assessment, mpic)

        # Outside test mode the worker starts first, as it always has; test mode starts it once
        # the listener is up, so its keys, linter and CT set-up are off the path to ready
        # (issue 21 item 8: ready within 1.5 s; a finalize just waits for it).
        if config.serve_worker and not config.test_mode:
            worker, stop_worker = await launch.start(stack)
        await _parse_public_suffix_lists(config, ready=False)
        ssl_context = await asyncio.to_thread(server_ssl_context, config)
        validator = build_validator(va, clock, mpic)
        stack.push_async_callback(validator.aclose)
        app = create_app(
            config,
            dsn,
            clock=clock,
            validator=validator,
            debian_weak_rsa_sizes=assessment.debian_weak_rsa_sizes
            if assessment.production
            else None,
        )
        # Connections counted, idle and slow-header ones closed (load shedding).
        runner = GuardedRunner(app, access_log=None, handle_signals=False)
        # Before setup: a resource failing to start still has the ones before it torn down.
        stack.push_async_callback(runner.cleanup)
        await runner.setup()
        # Not aiohttp's TCPSite: a TLS handshake gets the header-read timeout too.
        listener = await listen(
            runner,
            config.listen_host,
            config.listen_port,
            ssl_context,
            handshake_timeout=float(config.header_read_timeout_seconds),
        )
        stack.push_async_callback(close_listener, listener)
        log.info(
            "server.ready",
            directory=config.external_base_url + urls.DIRECTORY,
            shape=str(assessment.shape),
            relaxed=[f.invariant.id for f in assessment.failures],
            listen=config.listen,
            tls="off (plain_http)" if ssl_context is None else "on",
            tls_ca=None
            if ssl_context is None or config.tls_cert
            else str((config.home / "tls" / "ca.pem").resolve()),
            worker=_worker_shape(config),
            test_mode=config.test_mode,
            corroboration=f"{len(mpic.perspectives)} remote perspective(s)"
            if mpic.perspectives
            else "off",
        )
        await _parse_public_suffix_lists(config, ready=True)
        if config.serve_worker and worker is None:
            worker, stop_worker = await launch.start(stack)
        if ready is not None:  # serve --test --ephemeral: its spare for the next run
            ready.set()
        waiters: list[asyncio.Task[Any]] = [asyncio.create_task(stop.wait())]
        if worker is not None:
            waiters.append(worker)
        done, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            if task is not worker:
                task.cancel()
        if worker is not None and worker in done:
            worker.result()  # a worker that died takes the server down: surface why
        log.info("server.stopping")
        if stop_worker is not None:  # the worker first: its jobs in flight finish
            await stop_worker()


async def _parse_public_suffix_lists(config: Config, *, ready: bool) -> None:
    """Parse the Public Suffix List (identifier policy, ADN walk) in a thread, never on the
    event loop: before the listener opens outside test mode, just after it in test mode, so
    ``serve --test`` is ready sooner (issue 21 item 8)."""
    if ready == config.test_mode:
        await asyncio.to_thread(parse_public_suffix_lists)


@dataclass(frozen=True)
class _WorkerStart:
    """serve's signing worker (``serve_worker``): what it is started with."""

    config: Config
    dsn: str
    clock: Clock
    assessment: Assessment
    mpic: MpicSetup

    async def start(
        self, stack: contextlib.AsyncExitStack
    ) -> tuple[asyncio.Task[None], Callable[[], Awaitable[None]]]:
        """Start it, its stop on ``stack``; a task that ends when the worker does (raising
        why, if it was not stopped), and how to stop it."""
        config = self.config
        if not config.serve_worker_in_process:
            from acme_ca.main.worker_process import WorkerLaunch, child_config, worker_process

            launch = WorkerLaunch(child_config(config, self.dsn), self.assessment, self.mpic)
            child = await stack.enter_async_context(worker_process(launch))
            return asyncio.create_task(child.exited(), name="signing-worker-process"), child.stop
        from acme_ca.main.worker import run_worker
        from acme_ca.testsrv.ct_logs_runner import ct_test_logs  # None: ct_log_list is set

        ct_logs = await stack.enter_async_context(ct_test_logs(config))
        worker_stop = asyncio.Event()
        task = asyncio.create_task(
            run_worker(
                config,
                self.dsn,
                worker_stop,
                self.clock,
                ct_logs=ct_logs,
                production=self.assessment.production,
                signing_guard=signing_guard(self.assessment),
                account_uri=urls.Urls(config.external_base_url).account,
                mpic=self.mpic,
            ),
            name="signing-worker",
        )
        stop = functools.partial(_stop_worker, task, worker_stop)
        stack.push_async_callback(stop)
        return task, stop


def _worker_shape(config: Config) -> str:
    if not config.serve_worker:
        return "external"
    return "in-process" if config.serve_worker_in_process else "child process"


async def _stop_worker(worker: asyncio.Task[None], worker_stop: asyncio.Event) -> None:
    worker_stop.set()
    if not worker.done():
        with contextlib.suppress(asyncio.CancelledError):
            await worker


async def work(
    config: Config, *, stop: asyncio.Event | None = None, clock: Clock | None = None
) -> None:
    """``acme-ca worker``: a signing worker process on the configured database (with its own
    in-process CT test logs when ``ct_log_list`` is unset), after the same deployment
    assessment as ``serve`` (a production hierarchy with a failing invariant never signs)."""
    clock = clock or SystemClock()
    assessment = await deployment_gate(config, clock.now(), process="worker")
    stop = stop or asyncio.Event()
    _stop_on_signals(stop)
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(metrics_listener(config, "worker"))
        dsn = await stack.enter_async_context(database_dsn(DatabaseSettings.from_config(config)))
        await migrate(dsn)
        ct_logs = None
        if config.ct_log_list is None:  # embedded defaults: in-process CT test logs
            from acme_ca.testsrv.ct_logs_runner import ct_test_logs

            ct_logs = await stack.enter_async_context(ct_test_logs(config))
        from acme_ca.main.worker import run_worker  # lazy: off serve --test's path to ready

        await run_worker(
            config,
            dsn,
            stop,
            clock,
            ct_logs=ct_logs,
            production=assessment.production,
            signing_guard=signing_guard(assessment),
            account_uri=urls.Urls(config.external_base_url).account,
        )
