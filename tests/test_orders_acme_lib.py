"""The `acme` library from PyPI, as a client, takes a three-name order (one wildcard) to
`ready` through http-01 and dns-01, and the same order is refused with a `caa` problem once a
CAA record names another CA (issue 4's acceptance check)."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from acme import challenges, client, errors, messages
from acme import crypto_util as acme_crypto
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.jwa import ES256
from josepy.jwk import JWKEC

from acme_ca.testsrv.server import ChallengeTestServer
from acme_ca.testsrv.store import CaaPolicy
from tests.fixtures import CaFactory, RunningCa

NAMES = ["www.example.com", "*.example.com", "api.example.com"]


@pytest.fixture
async def va_ca(ca_factory: CaFactory, challsrv: ChallengeTestServer) -> RunningCa:
    return await ca_factory.start(
        dns_resolver=f"127.0.0.1:{challsrv.dns_port}",
        dnssec="off",
        http01_port=challsrv.http01_port,
        allow_loopback_validation=True,
    )


def _client(directory_url: str) -> tuple[client.ClientV2, JWKEC]:
    key = JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    net = client.ClientNetwork(key, alg=ES256, user_agent="acme_ca-tests")
    directory = messages.Directory.from_json(net.get(directory_url).json())
    acme = client.ClientV2(directory, net)
    acme.new_account(
        messages.NewRegistration.from_data(email="ops@example.test", terms_of_service_agreed=True)
    )
    return acme, key


def _csr(names: list[str]) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return acme_crypto.make_csr(pem, names)


def _take_order(
    acme: client.ClientV2, key: JWKEC, srv: ChallengeTestServer, names: list[str]
) -> messages.OrderResource:
    order = acme.new_order(_csr(names))
    for authz in order.authorizations:
        name = authz.body.identifier.value
        wanted = (
            challenges.DNS01
            if authz.body.wildcard or name.startswith("api.")
            else challenges.HTTP01
        )
        challb = next(c for c in authz.body.challenges if isinstance(c.chall, wanted))
        if wanted is challenges.HTTP01:
            response, validation = challb.chall.response_and_validation(key)
            srv.store.add_http01(challb.chall.encode("token"), validation)
        else:
            response, validation = challb.chall.response_and_validation(key)
            srv.store.set_txt(challb.chall.validation_domain_name(name), validation)
        acme.answer_challenge(challb, response)
    deadline = dt.datetime.now() + dt.timedelta(seconds=20)
    return acme.poll_authorizations(order, deadline)


async def test_acme_library_three_names_to_ready_then_caa_refusal(
    va_ca: RunningCa, challsrv: ChallengeTestServer
) -> None:
    acme, key = await asyncio.to_thread(_client, va_ca.directory_url)
    order = await asyncio.to_thread(_take_order, acme, key, challsrv, NAMES)
    assert all(a.body.status == messages.STATUS_VALID for a in order.authorizations)
    state = await asyncio.to_thread(lambda: acme._post_as_get(order.uri).json())
    assert state["status"] == "ready"
    assert sorted(i["value"] for i in state["identifiers"]) == sorted(NAMES)

    # A fresh account cannot reuse those authorizations; CAA now names another CA.
    challsrv.store.add_caa(
        "example.com",
        [CaaPolicy("issue", "letsencrypt.org"), CaaPolicy("issuewild", "letsencrypt.org")],
    )
    other, other_key = await asyncio.to_thread(_client, va_ca.directory_url)
    with pytest.raises(errors.ValidationError) as failure:
        await asyncio.to_thread(_take_order, other, other_key, challsrv, NAMES)
    problems = [c.error for a in failure.value.failed_authzrs for c in a.body.challenges if c.error]
    assert problems and all(p.typ == "urn:ietf:params:acme:error:caa" for p in problems)
