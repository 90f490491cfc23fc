"""``acme-ca serve --test``: the CA, its signing worker and the Pebble-compatible challenge
test server from one command, exercised as a client project's CI would use it.

* start-up on the embedded defaults (fresh PostgreSQL cluster, PKI and TLS): the figure is
  printed, not asserted (the target is < 5 s on a warm venv; timings belong in benchmarks);
* test mode is loud: a WARNING ``testmode.ready`` log line with the banner, and
  ``meta.testMode`` in the directory;
* the management API (pebble-challtestsrv paths) against the running server: TXT, A,
  default IPv4, AAAA, CNAME, CAA, http-01 responses, request history, ``/roots/0`` and
  ``/intermediates/0``; a certificate issued through dns-01 records set over the API verifies
  against the root served at ``/roots/0``; a CAA record set over the API is enforced;
* ``--challsrv-http01 off``: the http-01 verbs are gone and certbot ``--standalone`` binds the
  validation port itself;
* Pebble's knobs by their Pebble names: ``PEBBLE_VA_ALWAYS_VALID``, ``PEBBLE_AUTHZREUSE``,
  ``PEBBLE_VA_NOSLEEP``, ``PEBBLE_WFE_NONCEREJECT`` (and the config-key spelling);
* refusals: test mode with an HSM, and the knobs without test mode.

The helpers (:func:`start_test_mode`, :class:`RunningTestCa`, :func:`mgmt_post`) live in
``integration/testmode_server.py``, shared with the other test-mode suites.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import dns.message
import dns.query
import dns.rdatatype
import pytest
from acme import challenges, messages
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from acme_ca.config import Config, load_config
from acme_ca.config.pebble import PEBBLE_MAX_VALIDATION_SLEEP
from integration.clients import (
    NAMES,
    acme_account,
    answer_dns01,
    blocking_findings,
    certbot_certonly,
    certbot_failure,
    csr_pem,
    openssl_verify,
)
from integration.processes import (
    CaProcesses,
    base_env,
    describe,
    run_cli,
)
from integration.testmode_server import (
    PEM_CHAIN,
    QuietProcesses,
    RunningTestCa,
    http_get,
    mgmt_post,
    start_test_mode,
    write_pem,
)
from tests.support.jws import JwsClient

pytestmark = pytest.mark.integration

STARTUP_TARGET_SECONDS = 5.0
BAD_NONCE = "urn:ietf:params:acme:error:badNonce"
PROBLEM_JSON = "application/problem+json"
HSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"


# ------------------------------------------------------------------------------------------
# shared helpers: one `acme-ca serve --test` subprocess on free ports


def directory(ca: RunningTestCa) -> dict[str, Any]:
    context = ssl.create_default_context(cafile=str(ca.cafile))
    status, _, body = http_get(ca.directory_url, context)
    assert status == 200
    result: dict[str, Any] = json.loads(body)
    return result


def dns_answers(ca: RunningTestCa, name: str, rdtype: str) -> list[str]:
    """The answer section's records of ``rdtype`` from the challenge server's DNS."""
    query = dns.message.make_query(name, rdtype)
    reply = dns.query.udp(query, "127.0.0.1", port=ca.dns_port, timeout=3)
    wanted = dns.rdatatype.from_text(rdtype)
    return sorted(rr.to_text() for rrset in reply.answer if rrset.rdtype == wanted for rr in rrset)


# ------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture
def processes(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[CaProcesses]:
    with QuietProcesses(tmp_path / "logs", request.session) as procs:
        yield procs


def _stop_leftover_postmaster(cluster: Path) -> None:
    """Teardown only: an embedded postmaster a killed server left behind."""
    try:
        pid = int((cluster / "postmaster.pid").read_text().splitlines()[0])
        os.kill(pid, signal.SIGQUIT)  # immediate shutdown
    except (OSError, ValueError, IndexError):
        return
    deadline = time.monotonic() + 10
    while (cluster / "postmaster.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.1)


# ------------------------------------------------------------------------------------------
# 1. one command, embedded defaults, fast; loud about being a test CA


def test_contract_default_ports_are_pebbles() -> None:
    defaults = Config()
    assert defaults.challsrv_dns == "127.0.0.1:8053"
    assert defaults.challsrv_management == "127.0.0.1:8055"
    assert defaults.challsrv_http01 == "127.0.0.1:5002"
    config = load_config(env={}, overrides={"test_mode": True})
    assert config.dns_resolver == "127.0.0.1:8053"
    assert config.http01_port == 5002
    assert config.dnssec == "off"
    assert config.allow_loopback_validation


def test_serve_test_starts_on_embedded_defaults_quickly_and_loudly(
    tmp_path: Path, processes: CaProcesses
) -> None:
    home = tmp_path / "ca-home"
    cluster_link = home / "pg" / "cluster"
    real_cluster: Path | None = None
    try:
        ca = start_test_mode(processes, "serve-test", home)
        real_cluster = cluster_link.resolve()
        figure = ca.startup_seconds
        print(
            f"serve --test startup (embedded PostgreSQL initdb, PKI, TLS, challenge server): "
            f"{figure:.2f} s (target < {STARTUP_TARGET_SECONDS:.0f} s)"
        )

        # Loud: a WARNING line with the banner, and test_mode on the ready line.
        ready = ca.proc.wait_event("testmode.ready")
        assert ready["level"] == "warning"
        assert "TEST MODE" in ready["banner"]
        assert ready["management"] == ca.management_url
        assert ready["dns"] == ca.resolver
        assert ready["http01"] == ca.challsrv_http01
        server_ready = ca.proc.wait_event("server.ready")
        assert server_ready["test_mode"] is True
        assert server_ready["worker"] == "child process"
        assert ca.proc.events("database.embedded"), "not on the embedded database"

        meta = directory(ca)["meta"]
        assert "TEST MODE" in meta["testMode"], meta

        # All three parts of the challenge server answer.
        assert dns_answers(ca, "anything.example.org", "A") == ["127.0.0.1"]
        status, ctype, body = http_get(ca.management_url + "/roots/0")
        assert (status, ctype) == (200, PEM_CHAIN)
        assert x509.load_pem_x509_certificates(body)
        status, _, _ = http_get(f"http://{ca.challsrv_http01}/.well-known/acme-challenge/none")
        assert status == 200  # an unknown token: 200, empty, as pebble-challtestsrv
        # Pebble's management interface on its own HTTPS listener (managementListenAddress),
        # with the ACME listener's certificate, serving what the challenge server's API does
        pebble_management = "https://" + ca.env["ACME_CA_MANAGEMENT_LISTEN"]
        assert ready["pebble_management"] == pebble_management
        context = ssl.create_default_context(cafile=str(ca.cafile))
        status, ctype, own = http_get(pebble_management + "/roots/0", context)
        assert (status, ctype, own) == (200, PEM_CHAIN, body)

        ca.stop()
        assert not (cluster_link / "postmaster.pid").exists()
        assert ca.proc.events("embedded_postgres.stopped"), ca.proc.tails()
    finally:
        if real_cluster is not None:
            _stop_leftover_postmaster(real_cluster)
            # As root the cluster lives outside tmp_path (/var/lib/acme-ca/pg-<hash>).
            if not real_cluster.is_relative_to(tmp_path):
                shutil.rmtree(real_cluster, ignore_errors=True)


# ------------------------------------------------------------------------------------------
# 2. the management API against the running server, and a chain that verifies to /roots/0


def test_management_api_endpoints_and_roots_verify_the_issued_chain(
    dsn: str, tmp_path: Path, processes: CaProcesses
) -> None:
    ca = start_test_mode(
        processes,
        "serve-mgmt",
        tmp_path / "ca-home",
        dsn=dsn,
        env={"ACME_CA_RETRY_AFTER_SECONDS": "1"},
    )

    # TXT: set-txt appends (several dns-01 values on one name), clear-txt removes all.
    txt_host = "_acme-challenge.mgmt.example.com."
    ca.mgmt("/set-txt", {"host": txt_host, "value": "first"})
    ca.mgmt("/set-txt", {"host": txt_host, "value": "second"})
    assert dns_answers(ca, txt_host, "TXT") == ['"first"', '"second"']
    ca.mgmt("/clear-txt", {"host": txt_host})
    assert dns_answers(ca, txt_host, "TXT") == []

    # A: the default answers every name; add-a overrides one name; set-default-ipv4 moves
    # the default; "" turns it off, as in Pebble.
    assert dns_answers(ca, "random-1.example.net", "A") == ["127.0.0.1"]
    ca.mgmt("/add-a", {"host": "a.mgmt.example.com", "addresses": ["10.0.0.7"]})
    assert dns_answers(ca, "a.mgmt.example.com", "A") == ["10.0.0.7"]
    ca.mgmt("/set-default-ipv4", {"ip": "10.9.8.7"})
    assert dns_answers(ca, "random-2.example.net", "A") == ["10.9.8.7"]
    assert dns_answers(ca, "a.mgmt.example.com", "A") == ["10.0.0.7"]
    ca.mgmt("/set-default-ipv4", {"ip": ""})
    assert dns_answers(ca, "random-3.example.net", "A") == []
    ca.mgmt("/set-default-ipv4", {"ip": "127.0.0.1"})
    assert dns_answers(ca, "random-4.example.net", "A") == ["127.0.0.1"]
    ca.mgmt("/clear-a", {"host": "a.mgmt.example.com"})
    assert dns_answers(ca, "a.mgmt.example.com", "A") == ["127.0.0.1"]

    # AAAA, CNAME, CAA
    ca.mgmt("/add-aaaa", {"host": "v6.mgmt.example.com", "addresses": ["2001:db8::1"]})
    assert dns_answers(ca, "v6.mgmt.example.com", "AAAA") == ["2001:db8::1"]
    ca.mgmt("/set-cname", {"host": "alias.mgmt.example.com", "target": "real.mgmt.example.com"})
    assert dns_answers(ca, "alias.mgmt.example.com", "CNAME") == ["real.mgmt.example.com."]
    ca.mgmt(
        "/add-caa",
        {"host": "caa.mgmt.example.com", "policies": [{"tag": "issue", "value": "jprs.jp"}]},
    )
    assert dns_answers(ca, "caa.mgmt.example.com", "CAA") == ['0 issue "jprs.jp"']

    # http-01 responses on the challenge server's own listener, and the request history.
    http01 = f"http://{ca.challsrv_http01}/.well-known/acme-challenge/"
    ca.mgmt("/add-http01", {"token": "tok-123", "content": "tok-123.thumbprint"})
    assert http_get(http01 + "tok-123")[::2] == (200, b"tok-123.thumbprint")
    ca.mgmt("/del-http01", {"token": "tok-123"})
    assert http_get(http01 + "tok-123")[::2] == (200, b"")  # unknown: 200 empty, as Pebble
    status, history = mgmt_post(ca.management_url + "/http-request-history", {"host": "127.0.0.1"})
    assert status == 200
    assert [e["URL"] for e in json.loads(history)] == [
        "/.well-known/acme-challenge/tok-123",
        "/.well-known/acme-challenge/tok-123",
    ]

    # Bad bodies are 400, as Pebble's.
    assert mgmt_post(ca.management_url + "/set-txt", b"not json")[0] == 400
    assert (
        mgmt_post(ca.management_url + "/add-a", {"host": "x.example", "addresses": ["::1"]})[0]
        == 400
    )

    # The CA's certificates: /roots/0 (primary root), /roots/1 (Root X1), /intermediates/0.
    roots_dir = tmp_path / "roots"
    root0 = ca.root_pem(roots_dir)
    root_cert = x509.load_pem_x509_certificate(root0.read_bytes())
    assert root_cert.subject == root_cert.issuer
    status, ctype, body = http_get(ca.management_url + "/intermediates/0")
    assert (status, ctype) == (200, PEM_CHAIN)
    intermediates = x509.load_pem_x509_certificates(body)
    assert len(intermediates) >= 2  # dv-rsa and dv-ecc
    assert http_get(ca.management_url + "/roots/1")[0] == 200
    assert http_get(ca.management_url + "/roots/99")[0] == 404

    # Issue through dns-01 records set over the API (and a CAA record naming this CA):
    # the chain verifies to the root the API serves and lints clean.
    names = ["caa.mgmt.example.com", "issued.mgmt.example.com"]
    acme, key = acme_account(ca.directory_url, ca.cafile)
    order = acme.new_order(csr_pem(names))
    answer_dns01(acme, key, order, ca.set_txt)
    done = acme.poll_and_finalize(order, dt.datetime.now() + dt.timedelta(seconds=30))
    chain = x509.load_pem_x509_certificates(done.fullchain_pem.encode())
    leaf = write_pem(tmp_path / "leaf.pem", chain[:1])
    openssl_verify(root0, write_pem(tmp_path / "chain.pem", chain[1:]), leaf)
    openssl_verify(root0, write_pem(tmp_path / "intermediates.pem", intermediates), leaf)
    assert not blocking_findings(leaf)

    # A CAA record naming another CA, set over the API, makes validation fail.
    ca.mgmt(
        "/add-caa",
        {"host": "denied.mgmt.example.com", "policies": [{"tag": "issue", "value": "ca.invalid"}]},
    )
    order = acme.new_order(csr_pem(["denied.mgmt.example.com"]))
    (authz,) = order.authorizations
    challb = next(c for c in authz.body.challenges if isinstance(c.chall, challenges.DNS01))
    _, validation = challb.chall.response_and_validation(key)
    ca.mgmt("/set-txt", {"host": "_acme-challenge.denied.mgmt.example.com.", "value": validation})
    acme.answer_challenge(challb, challb.chall.response(key))
    deadline = time.monotonic() + 20
    while True:
        body = acme.poll(authz)[0].body
        if body.status != messages.STATUS_PENDING or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert body.status == messages.STATUS_INVALID, body
    errors = [c.error for c in body.challenges if c.error is not None]
    assert errors and errors[0].typ == "urn:ietf:params:acme:error:caa", errors
    print("testmode management API: ok")


# ------------------------------------------------------------------------------------------
# 3. --challsrv-http01 off: a standalone client binds the validation port itself


def test_challsrv_http01_off_lets_certbot_standalone_bind_the_port(
    dsn: str, tmp_path: Path, processes: CaProcesses
) -> None:
    ca = start_test_mode(
        processes,
        "serve-off",
        tmp_path / "ca-home",
        dsn=dsn,
        challsrv_http01="off",
        # The https-01 listener serves the same http-01 answers over TLS: off too, or the
        # http-01 verbs stay (they would feed it).
        env={"ACME_CA_CHALLSRV_HTTPS01": "off"},
    )
    assert ca.proc.wait_event("testmode.ready")["http01"] == "off"
    # Like Pebble: a disabled part's verbs are absent, not silently accepted.
    assert mgmt_post(ca.management_url + "/add-http01", {"token": "t", "content": "c"})[0] == 404
    ca.mgmt("/set-txt", {"host": "still-there.example.com.", "value": "dns verbs stay"})

    run, certbot_dir = certbot_certonly(tmp_path, ca.proc, ca.cafile, "rsa", ca.http01_port)
    assert run.returncode == 0, certbot_failure(run, certbot_dir, ca.proc)
    live = certbot_dir / "config" / "live" / NAMES[0]
    openssl_verify(ca.root_pem(tmp_path), live / "chain.pem", live / "cert.pem")
    assert not blocking_findings(live / "cert.pem")


# ------------------------------------------------------------------------------------------
# 4. Pebble's knobs, by Pebble's variable names


def _first_http01(authz: messages.AuthorizationResource) -> messages.ChallengeBody:
    return next(c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01))


def test_pebble_va_always_valid_passes_without_any_response(
    dsn: str, tmp_path: Path, processes: CaProcesses
) -> None:
    ca = start_test_mode(
        processes,
        "serve-always-valid",
        tmp_path / "ca-home",
        dsn=dsn,
        env={"PEBBLE_VA_ALWAYS_VALID": "1", "ACME_CA_RETRY_AFTER_SECONDS": "1"},
    )
    assert ca.proc.wait_event("testmode.ready")["always_valid"] is True
    assert ca.proc.events("va.always_valid"), "always_valid is not announced"

    name = "nothing-served.example.com"
    acme, key = acme_account(ca.directory_url, ca.cafile)
    order = acme.new_order(csr_pem([name]))
    (authz,) = order.authorizations
    challb = _first_http01(authz)
    acme.answer_challenge(challb, challb.chall.response(key))  # nothing provisioned anywhere
    order = acme.poll_authorizations(order, dt.datetime.now() + dt.timedelta(seconds=20))
    assert [a.body.status for a in order.authorizations] == [messages.STATUS_VALID]
    # The CA never asked the challenge server.
    status, history = mgmt_post(ca.management_url + "/http-request-history", {"host": name})
    assert (status, json.loads(history)) == (200, [])
    done = acme.finalize_order(order, dt.datetime.now() + dt.timedelta(seconds=30))
    assert done.fullchain_pem


@pytest.mark.parametrize(
    "authzreuse", [pytest.param(None, id="PEBBLE_AUTHZREUSE-unset"), pytest.param("0", id="0")]
)
def test_pebble_authzreuse(
    authzreuse: str | None, dsn: str, tmp_path: Path, processes: CaProcesses
) -> None:
    extra = {} if authzreuse is None else {"PEBBLE_AUTHZREUSE": authzreuse}
    ca = start_test_mode(processes, "serve-authzreuse", tmp_path / "ca-home", dsn=dsn, env=extra)
    assert ca.proc.wait_event("testmode.ready")["authz_reuse_percent"] == (
        100 if authzreuse is None else 0
    )
    acme, _ = acme_account(ca.directory_url, ca.cafile)
    csr = csr_pem(["reuse.example.com"])
    first = [a.uri for a in acme.new_order(csr).authorizations]
    second = [a.uri for a in acme.new_order(csr).authorizations]
    third = [a.uri for a in acme.new_order(csr).authorizations]
    if authzreuse is None:
        assert first == second == third, "the pending authorization is reused by default"
    else:
        assert len({*first, *second, *third}) == 3, "PEBBLE_AUTHZREUSE=0: fresh every order"


@pytest.mark.parametrize(
    ("nosleep", "expected_delay"),
    [
        pytest.param("1", 0, id="PEBBLE_VA_NOSLEEP=1"),
        pytest.param(None, 0, id="PEBBLE_VA_NOSLEEP-unset"),
        pytest.param("0", PEBBLE_MAX_VALIDATION_SLEEP, id="PEBBLE_VA_NOSLEEP=0"),
    ],
)
def test_pebble_va_nosleep(
    nosleep: str | None, expected_delay: int, dsn: str, tmp_path: Path, processes: CaProcesses
) -> None:
    """``PEBBLE_VA_NOSLEEP=1`` and unset both validate at once: unlike Pebble, acme_ca does
    not sleep unless asked to. Set to a false value it sleeps like Pebble, up to 5 s."""
    extra = {} if nosleep is None else {"PEBBLE_VA_NOSLEEP": nosleep}
    ca = start_test_mode(
        processes,
        "serve-nosleep",
        tmp_path / "ca-home",
        dsn=dsn,
        env={"ACME_CA_RETRY_AFTER_SECONDS": "1", **extra},
    )
    ready = ca.proc.wait_event("testmode.ready")
    assert ready["validation_delay_seconds"] == expected_delay, ready
    if expected_delay:
        return  # a random 0..5 s sleep: nothing to time reliably
    acme, key = acme_account(ca.directory_url, ca.cafile)
    order = acme.new_order(csr_pem(["nosleep.example.com"]))
    (authz,) = order.authorizations
    challb = _first_http01(authz)
    response, validation = challb.chall.response_and_validation(key)
    ca.mgmt("/add-http01", {"token": challb.chall.encode("token"), "content": validation})
    started = time.monotonic()
    acme.answer_challenge(challb, response)
    acme.poll_authorizations(order, dt.datetime.now() + dt.timedelta(seconds=20))
    elapsed = time.monotonic() - started
    # A figure, not an assertion (timings belong in benchmarks); the delay's absence is
    # asserted above on the ready line, and test_pebble_va_sleep proves the delay applies.
    print(f"testmode validation with PEBBLE_VA_NOSLEEP={nosleep or 'unset'}: {elapsed:.2f} s")


# ------------------------------------------------------------------------------------------
# 5. nonce rejection: badNonce, 400, a fresh usable Replay-Nonce, and the retry succeeds


def _assert_bad_nonce(reply: Any, sent: str) -> str:
    assert reply.status == 400, (reply.status, reply.body)
    assert reply.content_type == PROBLEM_JSON, reply.content_type
    assert reply.body["type"] == BAD_NONCE, reply.body
    fresh: str = reply.headers.get("Replay-Nonce", "")
    assert fresh and fresh != sent, reply.headers
    return fresh


@contextlib.asynccontextmanager
async def _jws_client(ca: RunningTestCa) -> AsyncIterator[JwsClient]:
    """A P-256 JWS client of ``ca`` (its directory loaded), over HTTPS to its local CA."""
    context = ssl.create_default_context(cafile=str(ca.cafile))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        client = JwsClient(session, ca.directory_url, ec.generate_private_key(ec.SECP256R1()))
        await client.load_directory()
        yield client


async def test_pebble_wfe_noncereject_50_retries_succeed(
    dsn: str, tmp_path: Path, processes: CaProcesses
) -> None:
    ca = start_test_mode(
        processes,
        "serve-nonce50",
        tmp_path / "ca-home",
        dsn=dsn,
        env={"PEBBLE_WFE_NONCEREJECT": "50"},
    )
    assert ca.proc.wait_event("testmode.ready")["nonce_reject_percent"] == 50
    async with _jws_client(ca) as client:
        nonce = await client.nonce()
        failures = retried_ok = 0
        registered = last_failed = False
        for _ in range(200):
            if registered:
                reply = await client.post(client.kid or "", {}, nonce=nonce)
            else:
                payload = {"termsOfServiceAgreed": True}
                reply = await client.post(
                    client.directory["newAccount"], payload, use_jwk=True, nonce=nonce
                )
            if reply.status == 400:
                nonce = _assert_bad_nonce(reply, nonce)
                failures += 1
                last_failed = True
                continue
            assert reply.status in (200, 201), (reply.status, reply.body)
            if not registered:
                client.kid = reply.headers["Location"]
                registered = True
            # The nonce of a badNonce answer was usable: this request just used it.
            retried_ok += int(failures > 0 and last_failed)
            last_failed = False
            nonce = reply.headers["Replay-Nonce"]
            if failures >= 3 and retried_ok >= 3:
                break
        print(
            f"testmode PEBBLE_WFE_NONCEREJECT=50: {failures} badNonce, "
            f"{retried_ok} retries with the fresh nonce succeeded"
        )
        assert failures >= 3 and retried_ok >= 3


async def test_nonce_reject_percent_config_key_100(
    dsn: str, tmp_path: Path, processes: CaProcesses
) -> None:
    ca = start_test_mode(
        processes,
        "serve-nonce100",
        tmp_path / "ca-home",
        dsn=dsn,
        env={"ACME_CA_NONCE_REJECT_PERCENT": "100"},
    )
    assert ca.proc.wait_event("testmode.ready")["nonce_reject_percent"] == 100
    async with _jws_client(ca) as client:
        nonce = await client.nonce()
        seen = {nonce}
        for _ in range(5):
            reply = await client.post(
                client.directory["newAccount"],
                {"termsOfServiceAgreed": True},
                use_jwk=True,
                nonce=nonce,
            )
            nonce = _assert_bad_nonce(reply, nonce)
            assert nonce not in seen
            seen.add(nonce)


# ------------------------------------------------------------------------------------------
# 6. refusals


@pytest.mark.parametrize("how", ["--test", "ACME_CA_TEST_MODE", "config-file"])
def test_test_mode_with_hsm_refuses_to_start(how: str, tmp_path: Path) -> None:
    home = tmp_path / "ca-home"
    env = base_env(ACME_CA_HOME=str(home), ACME_CA_PKCS11_MODULE=HSM_MODULE)
    args = ["serve"]
    if how == "--test":
        args.append("--test")
    elif how == "ACME_CA_TEST_MODE":
        env["ACME_CA_TEST_MODE"] = "true"
    else:
        config = tmp_path / "acme-ca.toml"
        config.write_text(f'test_mode = true\npkcs11_module = "{HSM_MODULE}"\n')
        env.pop("ACME_CA_PKCS11_MODULE")
        args = ["--config", str(config), "serve"]
    run = run_cli(*args, env=env, timeout=30)
    assert run.returncode == 2, describe(run)
    assert "test_mode cannot be combined with an HSM (pkcs11_module)" in run.stderr, describe(run)
    assert not (home / "pg").exists(), "something was started before refusing"


@pytest.mark.parametrize(
    "knob",
    [
        "ACME_CA_NONCE_REJECT_PERCENT=50",
        "ACME_CA_ALWAYS_VALID=true",
        "ACME_CA_AUTHZ_REUSE_PERCENT=0",
        "ACME_CA_VALIDATION_DELAY_SECONDS=5",
    ],
)
def test_knobs_without_test_mode_are_refused(knob: str, tmp_path: Path) -> None:
    variable, _, value = knob.partition("=")
    home = tmp_path / "ca-home"
    run = run_cli("serve", env=base_env(ACME_CA_HOME=str(home), **{variable: value}))
    assert run.returncode == 2, describe(run)
    assert "are test-mode knobs (serve --test)" in run.stderr, describe(run)
    assert not (home / "pg").exists()


def test_pebble_variables_do_nothing_outside_test_mode() -> None:
    """Pebble's names are read only by ``serve --test``: a stray PEBBLE_* variable on a
    production host changes nothing (the ACME_CA_* spellings are refused, above)."""
    pebble = {
        "PEBBLE_WFE_NONCEREJECT": "100",
        "PEBBLE_AUTHZREUSE": "0",
        "PEBBLE_VA_ALWAYS_VALID": "1",
        "PEBBLE_VA_NOSLEEP": "0",
    }
    plain = load_config(env=pebble)
    assert (
        plain.nonce_reject_percent,
        plain.authz_reuse_percent,
        plain.always_valid,
        plain.validation_delay_seconds,
    ) == (0, 100, False, 0)
    test = load_config(env=pebble, overrides={"test_mode": True})
    assert (
        test.nonce_reject_percent,
        test.authz_reuse_percent,
        test.always_valid,
        test.validation_delay_seconds,
    ) == (100, 0, True, PEBBLE_MAX_VALIDATION_SLEEP)
    # An explicit config key wins over the Pebble variable.
    both = load_config(
        env={**pebble, "ACME_CA_NONCE_REJECT_PERCENT": "7"}, overrides={"test_mode": True}
    )
    assert both.nonce_reject_percent == 7
