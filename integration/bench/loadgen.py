"""A closed-loop ACME load generator: N concurrent clients, each looping over the whole DV
flow against any directory URL, so acme_ca and Pebble are measured by the same client.

One issuance = newOrder -> POST-as-GET authz -> answer http-01 (this module serves the key
authorizations itself on ``http01_port``) -> poll authz -> finalize with a fresh P-256 CSR
-> poll order -> download the certificate.  Its latency runs from the newOrder request to the
downloaded chain.  Accounts (ES256) are registered before the measured window opens.

Polling ignores Retry-After and follows a fixed short backoff (:data:`POLL_DELAYS`), the
same for every server, so latency measures the server rather than the advice it gives.

A server that sheds load (RFC 8555 §6.6: 503, or 429 ``rateLimited``, with ``Retry-After``)
is obeyed as a real ACME client obeys it: the client waits the advised time (capped at
:data:`RETRY_AFTER_CAP`) and sends the same request again with a fresh nonce.  Each such
answer is counted in ``shed``, apart from ``errors`` and from ``timeouts``; a 503 without
``Retry-After``, or a 500, stays an error.

Every request has a timeout.  A server that answers nothing for ``stall_seconds`` while
requests are outstanding is reported as ``stopped_answering`` and the run ends there, rather
than being waited on.  Only standard ACME is spoken: nothing here knows which server it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import math
import secrets
import ssl
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from acme_ca.acme.b64 import b64url_encode
from acme_ca.acme.jwk import jwk_from_key
from tests.support.jws import make_jws

#: Seconds between polls of a processing authorization or order (the last one repeats).
POLL_DELAYS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.25)
#: badNonce is retried with the nonce it came with, as every real client does.
NONCE_RETRIES = 3
#: Pause after a failed issuance before the client starts its next one.
ERROR_PAUSE = 0.2
#: Problem documents arrive with this content type.
PROBLEM_JSON = "application/problem+json"
#: Statuses whose ``Retry-After`` asks the client to come back later (RFC 8555 §6.6).
SHED_STATUSES = (429, 503)
#: Longest ``Retry-After`` obeyed, in seconds (a client does not sleep for hours in a run).
RETRY_AFTER_CAP = 30.0


class IssuanceError(Exception):
    """One issuance failed; ``kind`` is what the report counts, ``timeout`` whether it
    was a request that got no answer in time (counted apart from errors)."""

    def __init__(self, kind: str, *, timeout: bool = False) -> None:
        super().__init__(kind)
        self.kind = kind
        self.timeout = timeout


@dataclass
class LoadResult:
    """What one run at one concurrency measured."""

    clients: int
    duration: float = 0.0
    issuances: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    #: Requests that got no answer within the request timeout, by step.
    timeouts: Counter[str] = field(default_factory=Counter)
    #: Answers that asked the client to retry later (503/429 with Retry-After), by status,
    #: problem type and step; each was obeyed and the request sent again.
    shed: Counter[str] = field(default_factory=Counter)
    #: Seconds the clients spent waiting out Retry-After.
    shed_wait_seconds: float = 0.0
    retries: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    stopped_answering: bool = False
    setup_failed: str | None = None

    @property
    def per_second(self) -> float | None:
        return self.issuances / self.duration if self.duration > 0 else None

    def percentile(self, q: float) -> float | None:
        """Nearest-rank percentile of the issuance latencies, in seconds."""
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        rank = max(1, math.ceil(q / 100 * len(ordered)))
        return ordered[rank - 1]

    @property
    def p50(self) -> float | None:
        return self.percentile(50)

    @property
    def p90(self) -> float | None:
        return self.percentile(90)

    @property
    def p99(self) -> float | None:
        return self.percentile(99)

    def as_dict(self) -> dict[str, Any]:
        return {
            "clients": self.clients,
            "duration": round(self.duration, 3),
            "issuances": self.issuances,
            "per_second": self.per_second,
            "p50": self.p50,
            "p90": self.p90,
            "p99": self.p99,
            "errors": dict(self.errors),
            "timeouts": dict(self.timeouts),
            "shed": dict(self.shed),
            "shed_wait_seconds": round(self.shed_wait_seconds, 3),
            "retries": dict(self.retries),
            "requests": self.requests,
            "stopped_answering": self.stopped_answering,
            "setup_failed": self.setup_failed,
        }


# ------------------------------------------------------------------------------------------
# CSRs


def _csr_der(name: str) -> bytes:
    """A CSR for ``name`` under a fresh P-256 key, as DER."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.DER)


# ------------------------------------------------------------------------------------------
# http-01 responder


class Http01Responder:
    """Serves ``/.well-known/acme-challenge/<token>`` for every client of the run."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.port = port
        self.host = host
        self.answers: dict[str, str] = {}
        self._runner: web.AppRunner | None = None

    async def _answer(self, request: web.Request) -> web.Response:
        answer = self.answers.get(request.match_info["token"])
        if answer is None:
            return web.Response(status=404, text="unknown token")
        return web.Response(text=answer, content_type="application/octet-stream")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/.well-known/acme-challenge/{token}", self._answer)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port, reuse_address=True).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


# ------------------------------------------------------------------------------------------
# one client


@dataclass
class _Response:
    status: int
    headers: Any
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class _Watchdog:
    """Notices a server that stops answering: the time of the last response of any client."""

    def __init__(self) -> None:
        self.last_answer = time.monotonic()
        self.outstanding = 0
        self.requests = 0

    def silent_for(self) -> float:
        return time.monotonic() - self.last_answer if self.outstanding else 0.0


class AcmeLoadClient:
    """One ACME account speaking flattened ES256 JWS over its own connection."""

    def __init__(
        self,
        directory_url: str,
        session: aiohttp.ClientSession,
        responder: Http01Responder,
        watchdog: _Watchdog,
        result: LoadResult,
        request_timeout: float,
    ) -> None:
        self._directory_url = directory_url
        self._session = session
        self._responder = responder
        self._watchdog = watchdog
        self._result = result
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._thumbprint = jwk_from_key(self._key.public_key()).thumbprint_b64()
        self._directory: dict[str, Any] = {}
        self._nonce: str | None = None
        self._kid: str | None = None

    async def _request(
        self, method: str, url: str, step: str, *, data: bytes | None = None
    ) -> _Response:
        headers = {"Content-Type": "application/jose+json"} if data is not None else None
        self._watchdog.outstanding += 1
        self._watchdog.requests += 1
        try:
            async with self._session.request(
                method, url, data=data, headers=headers, timeout=self._timeout
            ) as resp:
                body = await resp.read()
        except TimeoutError:
            raise IssuanceError(f"timeout ({step})", timeout=True) from None
        except aiohttp.ClientError as exc:
            raise IssuanceError(f"{type(exc).__name__} ({step})") from None
        finally:
            self._watchdog.outstanding -= 1
        if method == "POST":
            # Only answers to signed requests prove the server works: a server wedged on
            # its store may still hand out nonces and its directory.
            self._watchdog.last_answer = time.monotonic()
        nonce = resp.headers.get("Replay-Nonce")
        if nonce:
            self._nonce = nonce
        return _Response(resp.status, resp.headers, body)

    async def _obey_retry_after(self, resp: _Response, step: str) -> bool:
        """When ``resp`` asks to come back later (:func:`retry_after_seconds`), count it,
        wait as told and return True; False for any other answer.  There is no limit on
        how often: the run's window ends the issuance, as a client's own deadline would."""
        wait = retry_after_seconds(resp.status, resp.headers)
        if wait is None:
            return False
        self._result.shed[f"{resp.status} {_problem_kind(resp)} ({step})"] += 1
        self._result.shed_wait_seconds += wait
        await asyncio.sleep(wait)
        return True

    async def _fresh_nonce(self) -> str:
        while True:
            resp = await self._request("HEAD", self._directory["newNonce"], "newNonce")
            if self._nonce is not None:
                return self._nonce
            if not await self._obey_retry_after(resp, "newNonce"):
                break
        raise IssuanceError(f"HTTP {resp.status} without nonce (newNonce)")

    async def post(self, url: str, payload: Any, step: str) -> _Response:
        """POST a JWS (``payload`` None = POST-as-GET); badNonce is retried, and an answer
        with Retry-After (503, 429) waited out and retried, each with a fresh nonce; any
        other problem is raised as an :class:`IssuanceError` named after its type."""
        bad_nonces = 0
        while True:
            nonce = self._nonce or await self._fresh_nonce()
            self._nonce = None
            jws = make_jws(self._key, payload, url=url, nonce=nonce, kid=self._kid)
            body = json.dumps(jws).encode()
            resp = await self._request("POST", url, step, data=body)
            if resp.status < 400:
                return resp
            kind = _problem_kind(resp)
            if kind == "badNonce" and bad_nonces < NONCE_RETRIES:
                bad_nonces += 1
                self._result.retries[f"badNonce ({step})"] += 1
                continue
            if await self._obey_retry_after(resp, step):
                continue
            raise IssuanceError(f"{kind} HTTP {resp.status} ({step})")

    async def register(self) -> None:
        while True:
            resp = await self._request("GET", self._directory_url, "directory")
            if resp.status == 200 or not await self._obey_retry_after(resp, "directory"):
                break
        if resp.status != 200:
            raise IssuanceError(f"HTTP {resp.status} (directory)")
        self._directory = resp.json()
        created = await self.post(
            self._directory["newAccount"], {"termsOfServiceAgreed": True}, "newAccount"
        )
        self._kid = created.headers.get("Location")
        if not self._kid:
            raise IssuanceError("no Location (newAccount)")

    async def _poll(self, url: str, step: str, waiting: str) -> dict[str, Any]:
        """POST-as-GET ``url`` until its status leaves ``waiting`` states."""
        for attempt in range(10_000):
            resp = await self.post(url, None, step)
            obj: dict[str, Any] = resp.json()
            if obj.get("status") not in (waiting, "processing"):
                return obj
            await asyncio.sleep(POLL_DELAYS[min(attempt, len(POLL_DELAYS) - 1)])
        raise IssuanceError(f"never left {waiting} ({step})")

    async def issue(self, name: str) -> None:
        """One whole issuance for ``name``."""
        order_resp = await self.post(
            self._directory["newOrder"],
            {"identifiers": [{"type": "dns", "value": name}]},
            "newOrder",
        )
        order_url = order_resp.headers.get("Location")
        order = order_resp.json()
        if not order_url:
            raise IssuanceError("no Location (newOrder)")
        for authz_url in order["authorizations"]:
            authz = (await self.post(authz_url, None, "authz")).json()
            if authz.get("status") == "valid":
                continue
            challenge = next(
                (c for c in authz.get("challenges", []) if c.get("type") == "http-01"), None
            )
            if challenge is None:
                raise IssuanceError("no http-01 challenge (authz)")
            token = challenge["token"]
            self._responder.answers[token] = f"{token}.{self._thumbprint}"
            await self.post(challenge["url"], {}, "challenge")
            authz = await self._poll(authz_url, "poll authz", "pending")
            # Withdrawn once the validation is over; when a request raised instead (an error,
            # a timeout, the window's close cancelling the client) it stays served until the
            # run ends, as the CA's remote perspectives may still be fetching it.
            self._responder.answers.pop(token, None)
            if authz.get("status") != "valid":
                raise IssuanceError(f"authz {authz.get('status')}")
        csr = b64url_encode(_csr_der(name))
        order = (await self.post(order["finalize"], {"csr": csr}, "finalize")).json()
        if order.get("status") != "valid":
            order = await self._poll(order_url, "poll order", "ready")
        if order.get("status") != "valid":
            raise IssuanceError(f"order {order.get('status')}")
        cert = await self.post(order["certificate"], None, "certificate")
        if b"BEGIN CERTIFICATE" not in cert.body:
            raise IssuanceError("not a PEM chain (certificate)")


def retry_after_seconds(status: int, headers: Any) -> float | None:
    """How long to wait before sending a request again, when its answer is a 503 or 429
    with a ``Retry-After`` (delay-seconds or an HTTP-date, RFC 9110 §10.2.3), capped at
    :data:`RETRY_AFTER_CAP`; None for any other answer, a malformed value included."""
    if status not in SHED_STATUSES:
        return None
    value = (headers.get("Retry-After") or "").strip()
    if not value:
        return None
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), RETRY_AFTER_CAP)


def _problem_kind(resp: _Response) -> str:
    """The short problem type (``badNonce``, ``serverInternal``, ...) of an error answer."""
    if resp.headers.get("Content-Type", "").startswith(PROBLEM_JSON):
        try:
            kind = str(resp.json().get("type", "")).rsplit(":", 1)[-1]
        except ValueError:
            kind = ""
        if kind:
            return kind
    return "HTTP error"


# ------------------------------------------------------------------------------------------
# the run


def _client_ssl(cafile: Path | None) -> ssl.SSLContext | bool:
    if cafile is None:
        return True
    return ssl.create_default_context(cafile=str(cafile))


async def run_load(
    directory_url: str,
    *,
    clients: int,
    duration: float,
    http01_port: int,
    cafile: Path | None,
    request_timeout: float = 10.0,
    domain_suffix: str = "bench.example.com",
    stall_seconds: float | None = None,
    http01_host: str = "127.0.0.1",
) -> LoadResult:
    """Run ``clients`` closed-loop clients for ``duration`` seconds (after registering their
    accounts) and return what was measured; http-01 is answered on ``http01_host``."""
    result = LoadResult(clients=clients)
    stall_after = stall_seconds if stall_seconds is not None else 2 * request_timeout
    responder = Http01Responder(http01_port, http01_host)
    watchdog = _Watchdog()
    ssl_arg = _client_ssl(cafile)
    run_id = secrets.token_hex(3)
    sessions: list[aiohttp.ClientSession] = []
    tasks: list[asyncio.Task[None]] = []
    await responder.start()
    try:
        for _ in range(clients):
            connector = aiohttp.TCPConnector(ssl=ssl_arg, limit=2)
            sessions.append(aiohttp.ClientSession(connector=connector))
        load_clients = [
            AcmeLoadClient(directory_url, s, responder, watchdog, result, request_timeout)
            for s in sessions
        ]
        setup_error = await _register_all(load_clients, request_timeout)
        if setup_error is not None:
            result.setup_failed = setup_error
            return result
        watchdog.requests = 0
        start = time.monotonic()
        deadline = start + duration
        tasks.extend(
            asyncio.create_task(_client_loop(c, i, run_id, domain_suffix, deadline, result))
            for i, c in enumerate(load_clients)
        )
        stalled = await _supervise(tasks, deadline, watchdog, stall_after)
        result.duration = time.monotonic() - start if stalled else duration
        result.stopped_answering = stalled
        result.requests = watchdog.requests
        return result
    finally:
        # Cancelled from outside (Ctrl-C): stop the clients before closing their sessions.
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
        await responder.stop()


async def _register_all(load_clients: Sequence[AcmeLoadClient], timeout: float) -> str | None:
    """Register every account, a few at a time; the first failure, if any, as text."""
    limit = asyncio.Semaphore(20)

    async def one(client: AcmeLoadClient) -> None:
        async with limit:
            await client.register()

    try:
        async with asyncio.timeout(max(60.0, timeout * 6)):
            await asyncio.gather(*(one(c) for c in load_clients))
    except IssuanceError as exc:
        return f"account registration failed: {exc.kind}"
    except TimeoutError:
        return "account registration timed out"
    return None


async def _client_loop(
    client: AcmeLoadClient,
    index: int,
    run_id: str,
    suffix: str,
    deadline: float,
    result: LoadResult,
) -> None:
    """Issue again and again until the window closes; count what completes inside it."""
    n = 0
    while time.monotonic() < deadline:
        n += 1
        name = f"{run_id}-{index}-{n}.{suffix}"
        began = time.monotonic()
        try:
            await client.issue(name)
        except IssuanceError as exc:
            if time.monotonic() < deadline:
                (result.timeouts if exc.timeout else result.errors)[exc.kind] += 1
                await asyncio.sleep(ERROR_PAUSE)
            continue
        except (ValueError, KeyError, TypeError) as exc:  # a malformed answer
            if time.monotonic() < deadline:
                result.errors[f"bad response: {type(exc).__name__}"] += 1
                await asyncio.sleep(ERROR_PAUSE)
            continue
        finished = time.monotonic()
        if finished <= deadline:
            result.issuances += 1
            result.latencies.append(finished - began)


async def _supervise(
    tasks: list[asyncio.Task[None]], deadline: float, watchdog: _Watchdog, stall_after: float
) -> bool:
    """Wait for the window to close (then cancel what is still in flight) or for the
    server to go silent; True when it went silent."""
    stalled = False
    while True:
        now = time.monotonic()
        if now >= deadline:
            break
        if watchdog.silent_for() > stall_after:
            stalled = True
            break
        await asyncio.sleep(min(0.25, deadline - now))
    for task in tasks:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*tasks, return_exceptions=True)
    return stalled
