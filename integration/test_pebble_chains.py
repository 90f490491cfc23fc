"""``PEBBLE_ALTERNATE_ROOTS`` and ``PEBBLE_CHAIN_LENGTH`` honoured by ``serve --test``
(issue 21 item 3), beside Debian's real Pebble started with the same variables.

For each shape (chain lengths 1, 2 and 3; 0 and 2 alternate roots) one certificate is issued
by each with the ``acme`` library (``PEBBLE_VA_ALWAYS_VALID``, which both read), and:

* both offer the same number of chains (the certificate URL's and its ``Link:
  rel="alternate"`` ones), each with the same number of certificates after the leaf;
* each of our chains N verifies, with ``cryptography``'s verifier, to ``/roots/N`` alone;
* the management endpoints ``/roots/N``, ``/intermediates/N``, ``/root-keys/N``,
  ``/intermediate-keys/N`` answer as Pebble's do (status and ``Link: rel="alternate"``
  headers), for every N and one past the last;
* revocation status works through every chain: the leaf's OCSP response, asked with chain
  N's issuing certificate, is signed by that certificate's key, and every CRL a chain's
  certificates point to is served and signed by the certificate above.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from acme import challenges
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store

from acme_ca.embedded_pg import EmbeddedPostgres
from acme_ca.localca import LocalCa, cert_pem, key_pem, local_name
from integration.clients import acme_account, csr_pem
from integration.testmode_server import QuietProcesses, RunningTestCa, start_test_mode
from tests.fixtures import TEMPLATE_DB
from tests.support.ports import free_port
from tests.support.requirements import unavailable

pytestmark = pytest.mark.integration

PEBBLE = shutil.which("pebble")
#: (PEBBLE_ALTERNATE_ROOTS, PEBBLE_CHAIN_LENGTH): every chain length 1..3, 0 and 2 alternates.
SHAPES = [(0, 1), (2, 2), (0, 3)]
NAME = "chains.test"


@dataclass
class Issued:
    """One certificate: its chains (the certificate URL's first), each leaf first."""

    chains: list[list[x509.Certificate]]


@dataclass
class Pebble:
    management_url: str
    directory_url: str
    cafile: Path


def _pebble_env(alternates: int, length: int) -> dict[str, str]:
    return {
        "PEBBLE_ALTERNATE_ROOTS": str(alternates),
        "PEBBLE_CHAIN_LENGTH": str(length),
        "PEBBLE_VA_ALWAYS_VALID": "1",
        "PEBBLE_VA_NOSLEEP": "1",
        "PEBBLE_WFE_NONCEREJECT": "0",
    }


def _start_pebble(work: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], Pebble]:
    assert PEBBLE is not None
    work.mkdir(parents=True)
    now = dt.datetime.now(dt.UTC)
    local = LocalCa.create(local_name("pebble chains"), now=now, lifetime=dt.timedelta(days=2))
    cert, key = local.issue(
        local_name("localhost"),
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        names=["localhost", "127.0.0.1"],
        now=now,
        lifetime=dt.timedelta(days=1),
    )
    (work / "cert.pem").write_bytes(cert_pem(cert))
    (work / "key.pem").write_bytes(key_pem(key))
    (work / "ca.pem").write_bytes(cert_pem(local.cert))
    acme, management = free_port(), free_port()
    config = {
        "listenAddress": f"127.0.0.1:{acme}",
        "managementListenAddress": f"127.0.0.1:{management}",
        "certificate": str(work / "cert.pem"),
        "privateKey": str(work / "key.pem"),
        "httpPort": free_port(),
        "tlsPort": free_port(),
    }
    (work / "config.json").write_text(json.dumps({"pebble": config}))
    proc = subprocess.Popen(
        [PEBBLE, "-config", str(work / "config.json")],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    for port in (acme, management):
        while True:
            assert proc.poll() is None, "pebble exited"
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, "pebble never listened"
            time.sleep(0.05)
    return proc, Pebble(
        f"https://127.0.0.1:{management}", f"https://127.0.0.1:{acme}/dir", work / "ca.pem"
    )


def _issue(directory_url: str, cafile: Path) -> Issued:
    acme, _ = acme_account(directory_url, cafile)
    order = acme.new_order(csr_pem([NAME]))
    for authz in order.authorizations:  # always valid: any challenge, answered at once
        challb = next(c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01))
        acme.answer_challenge(challb, challb.chall.response(acme.net.key))
    deadline = dt.datetime.now() + dt.timedelta(seconds=30)
    order = acme.poll_authorizations(order, deadline)
    done = acme.finalize_order(order, deadline, fetch_alternative_chains=True)
    pems = [done.fullchain_pem, *(done.alternative_fullchains_pem or [])]
    return Issued([x509.load_pem_x509_certificates(p.encode()) for p in pems])


def _get(url: str, cafile: Path | None = None) -> tuple[int, list[str], bytes]:
    import ssl

    context = ssl.create_default_context(cafile=str(cafile)) if cafile else None
    try:
        with urllib.request.urlopen(url, timeout=10, context=context) as resp:
            return resp.status, resp.headers.get_all("Link") or [], resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get_all("Link") or [], exc.read()


@dataclass
class Pair:
    """Ours and Pebble's, for one shape."""

    alternates: int
    length: int
    ours: RunningTestCa
    ours_issued: Issued
    pebble: Pebble
    pebble_issued: Issued


@pytest.fixture(scope="module")
def pairs(
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
    postgres: EmbeddedPostgres,
    template_dsn: str,
) -> Iterator[dict[tuple[int, int], Pair]]:
    """Every shape's servers, started at once (three of ours, three Pebbles), and one
    certificate issued by each."""
    if PEBBLE is None:
        unavailable("pebble not installed (Debian: pebble)")
    base = tmp_path_factory.mktemp("chains")
    pebbles: list[subprocess.Popen[bytes]] = []
    with QuietProcesses(base / "logs", request.session) as processes:

        def ours(shape: tuple[int, int]) -> tuple[RunningTestCa, Issued]:
            dsn = postgres.create_database(f"chains_{shape[0]}_{shape[1]}", template=TEMPLATE_DB)
            env = {**_pebble_env(*shape), "ACME_CA_RETRY_AFTER_SECONDS": "1"}
            name = f"serve-chains-{shape[0]}-{shape[1]}"
            ca = start_test_mode(processes, name, base / name, dsn=dsn, env=env, timeout=90)
            return ca, _issue(ca.directory_url, ca.cafile)

        def theirs(shape: tuple[int, int]) -> tuple[Pebble, Issued]:
            proc, pebble = _start_pebble(
                base / f"pebble-{shape[0]}-{shape[1]}", _pebble_env(*shape)
            )
            pebbles.append(proc)
            return pebble, _issue(pebble.directory_url, pebble.cafile)

        try:
            with ThreadPoolExecutor(len(SHAPES) * 2) as pool:
                mine = {s: pool.submit(ours, s) for s in SHAPES}
                other = {s: pool.submit(theirs, s) for s in SHAPES}
                yield {s: Pair(*s, *mine[s].result(), *other[s].result()) for s in SHAPES}
        finally:
            for proc in pebbles:
                proc.kill()
                proc.wait(timeout=10)


def _ids(shape: tuple[int, int]) -> str:
    return f"alternate_roots={shape[0]}-chain_length={shape[1]}"


@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
def test_chains_as_many_and_as_long_as_pebbles(
    shape: tuple[int, int], pairs: dict[tuple[int, int], Pair]
) -> None:
    pair = pairs[shape]
    ours = [len(chain) - 1 for chain in pair.ours_issued.chains]
    theirs = [len(chain) - 1 for chain in pair.pebble_issued.chains]
    assert ours == theirs == [pair.length] * (1 + pair.alternates)


@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
def test_each_chain_verifies_to_its_own_root(
    shape: tuple[int, int], pairs: dict[tuple[int, int], Pair]
) -> None:
    pair = pairs[shape]
    leaf = pair.ours_issued.chains[0][0]
    roots = []
    for index, chain in enumerate(pair.ours_issued.chains):
        assert chain[0] == leaf, "every chain carries the same leaf"
        status, _, body = _get(f"{pair.ours.management_url}/roots/{index}")
        assert status == 200
        root = x509.load_pem_x509_certificate(body)
        roots.append(root)
        verifier = (
            PolicyBuilder()
            .store(Store([root]))
            .time(dt.datetime.now(dt.UTC))
            .build_server_verifier(x509.DNSName(NAME))
        )
        path = verifier.verify(leaf, chain[1:])
        assert path == [*chain, root], f"chain {index} is its own path to /roots/{index}"
        # the issuing CA has one key and subject in every chain (Pebble's newChain)
        assert chain[1].subject == pair.ours_issued.chains[0][1].subject
        assert chain[1].public_key() == pair.ours_issued.chains[0][1].public_key()
        # Pebble's chain N ends below its root N too
        pebble_chain = pair.pebble_issued.chains[index]
        status, _, body = _get(f"{pair.pebble.management_url}/roots/{index}", pair.pebble.cafile)
        assert status == 200
        assert pebble_chain[-1].issuer == x509.load_pem_x509_certificate(body).subject
    assert len({r.subject for r in roots}) == len(roots), "a root of its own per chain"


@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
def test_management_endpoints_per_chain_answer_as_pebbles(
    shape: tuple[int, int], pairs: dict[tuple[int, int], Pair]
) -> None:
    pair = pairs[shape]
    chains = 1 + pair.alternates
    for prefix in ("/roots/", "/intermediates/", "/root-keys/", "/intermediate-keys/"):
        for index in range(chains + 1):
            mine = _get(f"{pair.ours.management_url}{prefix}{index}")
            theirs = _get(f"{pair.pebble.management_url}{prefix}{index}", pair.pebble.cafile)
            where = f"{prefix}{index}"
            assert mine[0] == theirs[0] == (200 if index < chains else 404), where
            ours_links = sorted(x.replace(pair.ours.management_url, "") for x in mine[1])
            pebble_links = sorted(x.replace(pair.pebble.management_url, "") for x in theirs[1])
            assert ours_links == pebble_links, where
            if index < chains and prefix == "/intermediates/":
                # Pebble's answer is the certificate that signs in chain N; ours starts with
                # the issuing CAs' certificates of chain N, the leaf's issuer among them
                served = x509.load_pem_x509_certificates(mine[2])
                assert pair.ours_issued.chains[index][1] in served, where
                [signing] = x509.load_pem_x509_certificates(theirs[2])
                assert signing == pair.pebble_issued.chains[index][1], where


def _status_url(ca: RunningTestCa, url: str) -> str:
    """``url`` (a CRL or OCSP URL in a certificate) on the server's status listener."""
    path = urllib.parse.urlsplit(url).path
    return f"http://127.0.0.1:{ca.status_port}{path}"


def _crl_url(cert: x509.Certificate) -> str:
    points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    name = points[0].full_name
    assert name is not None
    return str(name[0].value)


@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
def test_ocsp_and_crls_work_through_every_chain(
    shape: tuple[int, int], pairs: dict[tuple[int, int], Pair]
) -> None:
    pair = pairs[shape]
    leaf = pair.ours_issued.chains[0][0]
    aia = leaf.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    [ocsp_url] = [
        str(d.access_location.value)
        for d in aia
        if d.access_method.dotted_string == "1.3.6.1.5.5.7.48.1"
    ]
    for index, chain in enumerate(pair.ours_issued.chains):
        root = x509.load_pem_x509_certificate(_get(f"{pair.ours.management_url}/roots/{index}")[2])
        issuer = chain[1]
        request = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, hashes.SHA256()).build()
        post = urllib.request.Request(
            _status_url(pair.ours, ocsp_url),
            data=request.public_bytes(serialization.Encoding.DER),
            headers={"Content-Type": "application/ocsp-request"},
        )
        with urllib.request.urlopen(post, timeout=10) as resp:
            answer = ocsp.load_der_ocsp_response(resp.read())
        assert answer.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL, index
        assert answer.certificate_status == ocsp.OCSPCertStatus.GOOD, index
        assert _signed_by(answer, issuer), f"OCSP through chain {index}"
        # every CRL the chain points to: the leaf's (its issuer's), then each CA's (the CA
        # above it); each served and signed by the certificate above
        for cert, above in zip(chain, [*chain[1:], root], strict=True):
            status, _, body = _get(_status_url(pair.ours, _crl_url(cert)))
            assert status == 200, (index, _crl_url(cert))
            crl = x509.load_der_x509_crl(body)
            assert crl.issuer == above.subject, (index, _crl_url(cert))
            assert crl.is_signature_valid(above.public_key()), (index, _crl_url(cert))  # type: ignore[arg-type]


def _signed_by(answer: ocsp.OCSPResponse, issuer: x509.Certificate) -> bool:
    """The response's signature verifies with ``issuer``'s key (directly signed, as ours)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    key = issuer.public_key()
    algorithm = answer.signature_hash_algorithm
    assert algorithm is not None
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(answer.signature, answer.tbs_response_bytes, ec.ECDSA(algorithm))
        else:
            assert isinstance(key, rsa.RSAPublicKey)
            key.verify(answer.signature, answer.tbs_response_bytes, padding.PKCS1v15(), algorithm)
    except InvalidSignature:
        return False
    return True
