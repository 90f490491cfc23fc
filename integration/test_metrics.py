"""Prometheus metrics of the real processes (docs/operations.md, "Metrics and alerts").

``acme-ca serve --test --perspectives 2`` (two in-process remote VAs corroborate every
validation) with its signing worker in a separate ``acme-ca worker`` process, each with its
own metrics listener; certbot issues one certificate, a JWS with a forged nonce is refused,
and an OCSP request is answered.  Then both ``/metrics`` are scraped and every family of
:mod:`acme_ca.metrics` must be there, the ones this issuance exercised with the counts it
implies.  A second worker started with ``--metrics-listen off`` answers ``/metrics`` on no
port it listens on.  The third kind of process, ``acme-ca remote-va``, answers two checks of
a primary over mutual TLS and counts them under its own perspective id.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from acme import jws as acme_jws
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from josepy.jwa import ES256
from josepy.jwk import JWKEC
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from acme_ca import metrics
from acme_ca.remote_va.client import MtlsTransport
from acme_ca.va.dns01 import dns01_txt_value
from acme_ca.va.mpic import RemoteRequest
from acme_ca.va.mtls import client_context, create_mpic_material
from acme_ca.va.perspectives import Perspective
from acme_ca.wfe import urls
from integration.challsrv_thread import ThreadedChallengeServer
from integration.clients import NAMES, certbot_certonly, certbot_failure
from integration.processes import CaProcesses, base_env
from integration.testmode_server import start_test_mode
from tests.support.ports import free_port

pytestmark = pytest.mark.integration

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


def scrape(url: str) -> dict[str, list[Sample]]:
    """``GET url``: every family by name (counters without ``_total``), with its samples."""
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Type"] == PROMETHEUS_TEXT
        text = response.read().decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def declared_families() -> set[str]:
    """The families acme_ca.metrics defines (process_* and python_* collectors aside)."""
    return {
        family.name
        for collector in (
            value
            for name, value in vars(metrics).items()
            if name.isupper() and hasattr(value, "describe") and name != "REGISTRY"
        )
        for family in collector.describe()
    } | {"db_open_connections", "db_inuse", "db_idle", "db_max_open_connections"}


def total(samples: Iterable[Sample], suffix: str = "", **labels: str) -> float:
    """Sum of the samples named ``<family><suffix>`` whose labels include ``labels``."""
    found = [s for s in samples if s.name.endswith(suffix) and labels.items() <= s.labels.items()]
    return sum(s.value for s in found)


def wait_for(check: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not within {timeout:g} s")
        time.sleep(0.2)


def settled(
    url: str, ready: Callable[[dict[str, list[Sample]]], bool], timeout: float = 30
) -> dict[str, list[Sample]]:
    """The first scrape of ``url`` for which ``ready`` holds (a scrape a second apart, for
    longer than one metrics.REFRESH_SECONDS); the last one if none does, for the asserts."""
    deadline = time.monotonic() + max(timeout, 2 * metrics.REFRESH_SECONDS)
    while not ready(scraped := scrape(url)) and time.monotonic() < deadline:
        time.sleep(1)
    return scraped


def _gauges_settled(scraped: dict[str, list[Sample]]) -> bool:
    """The database gauges show the queue empty again and a fresh CRL of dv-ecc."""
    ages = [s.value for s in scraped.get("crl_age_seconds", []) if s.labels["issuer"] == "dv-ecc"]
    return total(scraped.get("issuance_queue_depth", []), status="queued") == 0 and bool(
        ages and ages[0] < 600
    )


def _worker_settled(scraped: dict[str, list[Sample]]) -> bool:
    """The worker recorded the issuance's last step, its certificate and a CRL publication."""
    steps = scraped.get("issuance_step_latency_seconds", [])
    return (
        _gauges_settled(scraped)
        and total(steps, "_count", step="scts_collected", result="advanced") >= 1
        and total(scraped.get("certificates", []), issuer="dv-ecc") >= 1
        and total(scraped.get("crl_updater_generated", []), issuer="dv-ecc", result="success") >= 1
    )


def forged_nonce_request(directory_url: str, cafile: Path) -> tuple[int, dict[str, str]]:
    """newAccount signed properly but carrying a nonce this CA never issued."""
    key = JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    url = directory_url.removesuffix(urls.DIRECTORY) + urls.NEW_ACCOUNT
    body = acme_jws.JWS.sign(
        json.dumps({"termsOfServiceAgreed": True}).encode(), key, ES256, b"forged", url=url
    ).json_dumps()
    request = urllib.request.Request(
        url, data=body.encode(), method="POST", headers={"Content-Type": "application/jose+json"}
    )
    context = ssl.create_default_context(cafile=str(cafile))
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def ocsp_good(status_url: str, leaf: x509.Certificate, issuer: x509.Certificate) -> bool:
    request = (
        ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, hashes.SHA256()).build()
    ).public_bytes(serialization.Encoding.DER)
    posted = urllib.request.Request(
        f"{status_url}/ocsp/dv-ecc",
        data=request,
        method="POST",
        headers={"Content-Type": "application/ocsp-request"},
    )
    with urllib.request.urlopen(posted, timeout=10) as response:
        answer = ocsp.load_der_ocsp_response(response.read())
    return (
        answer.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
        and answer.certificate_status is ocsp.OCSPCertStatus.GOOD
    )


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process ``pid`` listens on (its socket inodes in /proc/net/tcp*)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            for line in fh.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def answers_metrics(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return response.status == 200 and "text/plain" in response.headers["Content-Type"]
    except (OSError, urllib.error.URLError):
        return False


def test_metrics_scraped_after_issuance_every_family_present_and_counting(
    dsn: str, tmp_path: Path, processes: CaProcesses
) -> None:
    serve_metrics, worker_metrics = free_port(), free_port()
    home = tmp_path / "home"
    ca = start_test_mode(
        processes,
        "serve",
        home,
        dsn=dsn,
        challsrv_http01="off",
        args=("--perspectives", "2", "--metrics-listen", f"127.0.0.1:{serve_metrics}"),
        env={"ACME_CA_SERVE_WORKER": "false"},
    )
    ready = ca.proc.wait_event("metrics.ready")
    assert ready["url"] == f"http://127.0.0.1:{serve_metrics}/metrics"
    worker = processes.start(
        "worker", "worker", "--metrics-listen", f"127.0.0.1:{worker_metrics}", env=ca.env
    )
    worker.wait_event("worker.started", timeout=30)
    assert worker.wait_event("metrics.ready")["process"] == "worker"

    run, certbot_dir = certbot_certonly(tmp_path, ca.proc, ca.cafile, "ecdsa", ca.http01_port)
    assert run.returncode == 0, certbot_failure(run, certbot_dir, ca.proc, worker)
    live = certbot_dir / "config" / "live" / NAMES[0]
    leaf = x509.load_pem_x509_certificate((live / "cert.pem").read_bytes())
    issuer = x509.load_pem_x509_certificate((live / "chain.pem").read_bytes())

    status, problem = forged_nonce_request(ca.directory_url, ca.cafile)
    assert (status, problem["type"]) == (400, "urn:ietf:params:acme:error:badNonce")
    status_url = f"http://127.0.0.1:{ca.status_port}"
    wait_for(lambda: ocsp_good(status_url, leaf, issuer), "an OCSP response saying good")

    # What the worker records after the order is valid (the last step's latency, the CRLs it
    # publishes on its own schedule), and the database gauges each process reads at most
    # every metrics.REFRESH_SECONDS: scraped until they show the issuance, not read once.
    front = settled(f"http://127.0.0.1:{serve_metrics}/metrics", _gauges_settled)
    back = settled(f"http://127.0.0.1:{worker_metrics}/metrics", _worker_settled)
    expected = declared_families()
    assert expected <= front.keys(), expected - front.keys()
    assert expected <= back.keys(), expected - back.keys()
    assert "process_start_time_seconds" in front

    # The front end: requests by route template and status, problems, nonces.
    new_order = front["response_time"]
    assert total(new_order, "_count", endpoint="/acme/new-order", method="POST", code="201") >= 1
    assert total(new_order, "_count", endpoint="/acme/order/{order_id}/finalize") >= 1
    assert not [s for s in new_order if "/acme/order/1" in s.labels.get("endpoint", "")]
    assert total(front["in_flight_requests"], endpoint="/acme/new-order") == 0
    assert total(front["acme_problems"], endpoint="/acme/new-account", type="badNonce") == 1
    assert total(front["nonce_redeems"], result="valid") >= 5
    assert total(front["nonce_redeems"], result="invalid", error="malformed") == 1

    # Validation: each name passed, corroborated by both remotes and decided by the quorum.
    latency = front["validation_latency"]
    passed = {"operation": "dcv", "challenge_type": "http-01", "result": "pass"}
    assert total(latency, "_count", perspective="all", **passed) == len(NAMES)
    remotes = {s.labels["perspective"] for s in front["mpic_perspective_results"]}
    assert len(remotes) == 2
    for remote in remotes:
        assert total(latency, "_count", perspective=remote, **passed) == len(NAMES)
        assert total(
            front["mpic_perspective_results"], perspective=remote, result="corroborated"
        ) + total(
            front["mpic_perspective_results"], perspective=remote, result="not_awaited"
        ) == len(NAMES)
    assert total(front["mpic_quorum_results"], operation="dcv", result="pass") == len(NAMES)

    # Read from the database by each process: the queue is empty again, the CRLs are fresh.
    for scraped in (front, back):
        assert total(scraped["issuance_queue_depth"], status="queued") == 0
        assert total(scraped["issuance_queue_oldest_age_seconds"]) == 0
        assert 0 <= total(scraped["crl_age_seconds"], issuer="dv-ecc") < 600
        assert total(scraped["crl_next_update_seconds"], issuer="dv-ecc") > 95 * 3600
    assert total(front["ocsp_responses"], result="good") >= 1
    assert total(front["ocsp_response_age_seconds"], "_count", issuer="dv-ecc") >= 1
    assert total(front["db_open_connections"], pool="acme") >= 1
    assert total(front["db_open_connections"], pool="status") >= 1
    assert total(back["db_open_connections"], pool="worker") >= 1
    assert total(back["db_max_open_connections"], pool="worker") >= 3

    # The worker: each step, its signatures, CT, linting, the certificate and the CRLs.
    steps = back["issuance_step_latency_seconds"]
    for step in ("queued", "prepared", "precert_signed", "scts_collected"):
        assert total(steps, "_count", step=step, result="advanced") == 1, step
    assert total(back["certificates"], issuer="dv-ecc") == 1
    signatures = back["signatures"]
    assert total(signatures, backend="software", key="dv-ecc") >= 3  # precert, cert, OCSP
    assert total(back["signature_latency_seconds"], "_count", key="dv-ecc") >= 3
    assert total(back["signature_errors"]) == 0
    ct = back["ct_submission_time_seconds"]
    assert total(ct, "_count", type="precert", status="success") >= 2
    assert total(back["lint_latency_seconds"], "_count", kind="DV-PRE-CERTIFICATE") == 1
    # The DV profile's CN is a WARNING pkilint reports on every precertificate.
    assert total(back["lint_findings"], kind="DV-PRE-CERTIFICATE", severity="WARNING") >= 1
    assert total(back["crl_updater_generated"], issuer="dv-ecc", result="success") >= 1
    assert total(back["lint_latency_seconds"], "_count", kind="CRL") >= 1

    # --metrics-listen off: no port of the process serves /metrics.
    quiet = processes.start("worker-off", "worker", "--metrics-listen", "off", env=ca.env)
    quiet.wait_event("worker.started", timeout=30)
    assert quiet.events("metrics.off") and not quiet.events("metrics.ready")
    ports = listening_ports(quiet.pid)
    assert not [port for port in ports if answers_metrics(port)], ports
    assert answers_metrics(worker_metrics)
    for proc in (quiet, worker, ca.proc):
        assert proc.terminate() == 0, proc.tails()


def test_remote_va_metrics_count_its_checks_under_its_perspective(
    tmp_path: Path, processes: CaProcesses
) -> None:
    """``acme-ca remote-va --metrics-listen``: a dns-01 check that passes and one whose TXT
    record is missing, sent by the primary over mutual TLS, are counted in
    ``validation_latency`` under the remote's perspective id with their result and problem,
    and every family of acme_ca.metrics is exposed."""
    material = create_mpic_material(tmp_path / "mtls", ["ap-northeast"])
    cert, key = material.remotes["ap-northeast"]
    port, metrics_port = free_port(), free_port()
    key_authorization = "token-metrics.thumbprint"
    with ThreadedChallengeServer() as dns:
        dns.set_txt("_acme-challenge.good.example.com", dns01_txt_value(key_authorization))
        remote = processes.start(
            "remote-va", "remote-va", "--listen", f"127.0.0.1:{port}",
            "--perspective", "ap-northeast", "--rir", "APNIC", "--dns-resolver", dns.resolver,
            "--tls-cert", str(cert), "--tls-key", str(key),
            "--client-ca", str(material.ca_cert),
            "--metrics-listen", f"127.0.0.1:{metrics_port}",
            env=base_env(ACME_CA_HOME=str(tmp_path / "home"), ACME_CA_DNSSEC="off"),
        )  # fmt: skip
        remote.wait_event("remote_va.ready")
        assert remote.wait_event("metrics.ready")["process"] == "remote-va"

        async def ask() -> list[bool]:
            transport = MtlsTransport(
                client_context(material.primary_cert, material.primary_key, material.ca_cert)
            )
            perspective = Perspective("ap-northeast", "APNIC", f"https://127.0.0.1:{port}")
            try:
                return [
                    (
                        await transport.check(
                            perspective,
                            RemoteRequest(
                                kind="dcv",
                                identifier=name,
                                wildcard=False,
                                account_uri="https://ca.example/acme/acct/1",
                                method="dns-01",
                                nonce=f"nonce-{name}",
                                token="token-metrics",
                                key_authorization=key_authorization,
                            ).to_json(),
                        )
                    )["ok"]
                    for name in ("good.example.com", "missing.example.com")
                ]
            finally:
                await transport.aclose()

        assert asyncio.run(ask()) == [True, False]
    # Counted before the reply was sent: no wait needed.
    scraped = scrape(f"http://127.0.0.1:{metrics_port}/metrics")
    expected = declared_families()
    assert expected <= scraped.keys(), expected - scraped.keys()
    latency = scraped["validation_latency"]
    checked = {"operation": "dcv", "perspective": "ap-northeast", "challenge_type": "dns-01"}
    assert total(latency, "_count", result="pass", problem_type="", **checked) == 1
    failed = [
        s
        for s in latency
        if s.name.endswith("_count") and s.labels.get("result") == "fail" and s.value
    ]
    assert [(s.labels["perspective"], s.value) for s in failed] == [("ap-northeast", 1)], failed
    assert failed[0].labels["problem_type"], "a failed check names its problem"
    assert remote.terminate() == 0, remote.tails()
