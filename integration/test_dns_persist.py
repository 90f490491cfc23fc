"""dns-persist-01 end to end against ``acme-ca serve --test`` (PERSIST-1, BR 3.2.2.4.22): the
repo's own JWS client (tests/support) orders, reads the challenge object, publishes the one
persistent TXT record through the challenge test server's ``/set-txt`` (as a client's CI would
against Pebble), answers, finalizes and downloads the certificate.

One server for the module; dns-persist-01 is switched on with ``challenge_types``.
"""

from __future__ import annotations

import asyncio
import ssl
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from acme_ca.acme.b64 import b64url_encode
from acme_ca.embedded_pg import EmbeddedPostgres
from integration.clients import csr_pem
from integration.testmode_server import QuietProcesses, RunningTestCa, start_test_mode
from tests.fixtures import TEMPLATE_DB
from tests.support.jws import JwsClient
from tests.support.orders import persist_record

pytestmark = pytest.mark.integration

CHALLENGE_TYPES = "http-01,dns-01,dns-persist-01"
POLL_SECONDS = 20.0


@pytest.fixture(scope="module")
def persist_ca(
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
    postgres: EmbeddedPostgres,
    template_dsn: str,
) -> Iterator[RunningTestCa]:
    """``template_dsn``: the schema'd template the database is copied from."""
    tmp = tmp_path_factory.mktemp("persist")
    dsn = postgres.create_database(f"persist_{uuid.uuid4().hex[:12]}", template=TEMPLATE_DB)
    with QuietProcesses(tmp / "logs", request.session) as processes:
        yield start_test_mode(
            processes,
            "serve-persist",
            tmp / "home",
            dsn=dsn,
            env={"ACME_CA_CHALLENGE_TYPES": CHALLENGE_TYPES, "ACME_CA_RETRY_AFTER_SECONDS": "1"},
        )


@pytest.fixture
async def acme(persist_ca: RunningTestCa) -> AsyncIterator[JwsClient]:
    context = ssl.create_default_context(cafile=str(persist_ca.cafile))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        client = JwsClient(
            session, persist_ca.directory_url, ec.generate_private_key(ec.SECP256R1())
        )
        await client.load_directory()
        assert (await client.register()).status == 201
        yield client


async def poll(client: JwsClient, url: str, pending: tuple[str, ...]) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + POLL_SECONDS
    while True:
        body: dict[str, Any] = (await client.post(url, None)).body
        if body["status"] not in pending or asyncio.get_running_loop().time() > deadline:
            return body
        await asyncio.sleep(0.1)


async def persist_challenge(
    client: JwsClient, authz_url: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    authz: dict[str, Any] = (await client.post(authz_url, None)).body
    challenge = next(c for c in authz["challenges"] if c["type"] == "dns-persist-01")
    return authz, challenge


async def test_persist_1_issuance_end_to_end_with_one_persistent_record(
    persist_ca: RunningTestCa, acme: JwsClient, tmp_path: Path
) -> None:
    base = f"persist-{uuid.uuid4().hex[:8]}.example.com"
    names = [base, f"*.{base}"]
    order_reply = await acme.post(
        acme.directory["newOrder"], {"identifiers": [{"type": "dns", "value": n} for n in names]}
    )
    assert order_reply.status == 201, order_reply.body
    order_url = order_reply.headers["Location"]
    challenges = []
    for authz_url in order_reply.body["authorizations"]:
        authz, challenge = await persist_challenge(acme, authz_url)
        # the draft's challenge object: our issuer domain names and this account, no token
        assert challenge["issuer-domain-names"] == ["jprs.jp"]
        assert challenge["accounturi"] == acme.account_url
        assert "token" not in challenge
        challenges.append((authz_url, challenge))
    # one record serves the name and its wildcard: policy=wildcard
    persist_ca.mgmt(
        "/set-txt",
        {
            "host": f"_validation-persist.{base}.",
            "value": persist_record(challenges[0][1], wildcard=True),
        },
    )
    for _, challenge in challenges:
        answered = await acme.post(challenge["url"], {})
        assert answered.status == 200, answered.body
    for authz_url, _ in challenges:
        authz = await poll(acme, authz_url, ("pending",))
        assert authz["status"] == "valid", authz
        (valid,) = authz["challenges"]
        records = valid["validationRecord"]
        assert {r["method"] for r in records} >= {"dns-persist-01"}
        decided = [
            r for r in records if r.get("result") == "pass" and r["method"] == "dns-persist-01"
        ]
        assert decided and decided[0]["brMethod"] == "3.2.2.4.22" and decided[0]["adn"] == base
    order = await poll(acme, order_url, ("pending",))
    assert order["status"] == "ready", order
    csr = x509.load_pem_x509_csr(csr_pem(names))
    finalized = await acme.post(
        order["finalize"], {"csr": b64url_encode(csr.public_bytes(Encoding.DER))}
    )
    assert finalized.status == 200, finalized.body
    order = await poll(acme, order_url, ("ready", "processing"))
    assert order["status"] == "valid", order
    chain = await acme.post(order["certificate"], None)
    leaf = x509.load_pem_x509_certificates(chain.raw)[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(san.get_values_for_type(x509.DNSName)) == sorted(names)


async def test_persist_1_wildcard_record_without_policy_refused(
    persist_ca: RunningTestCa, acme: JwsClient
) -> None:
    base = f"nopolicy-{uuid.uuid4().hex[:8]}.example.com"
    order_reply = await acme.post(
        acme.directory["newOrder"], {"identifiers": [{"type": "dns", "value": f"*.{base}"}]}
    )
    (authz_url,) = order_reply.body["authorizations"]
    _, challenge = await persist_challenge(acme, authz_url)
    persist_ca.mgmt(
        "/set-txt",
        {"host": f"_validation-persist.{base}.", "value": persist_record(challenge)},
    )
    await acme.post(challenge["url"], {})
    authz = await poll(acme, authz_url, ("pending",))
    assert authz["status"] == "invalid"
    (failed,) = [c for c in authz["challenges"] if c["type"] == "dns-persist-01"]
    assert failed["error"]["type"] == "urn:ietf:params:acme:error:unauthorized"
    assert "policy=wildcard" in failed["error"]["detail"]
