"""The remote VA server and the primary's mutual-TLS client, over real TLS on 127.0.0.1:
checks run through the remote's own resolver, replies carry its identity, and only the
primary's certificate gets a request in."""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from acme_ca.clock import SystemClock
from acme_ca.config import Config
from acme_ca.main.remote_va import inherited_listen_socket
from acme_ca.remote_va.client import MtlsTransport
from acme_ca.remote_va.server import (
    make_remote_va_app,
)
from acme_ca.remote_va.settings import RemoteIdentity, RemoteVaSettings
from acme_ca.testsrv.server import ChallengeServerConfig, ChallengeTestServer
from acme_ca.va.authority import ValidationAuthority
from acme_ca.va.dns01 import dns01_txt_value
from acme_ca.va.mpic import CHECK_PATH, RemoteRequest, RemoteUnavailable, judge_reply
from acme_ca.va.mtls import MpicMaterial, client_context, create_mpic_material, server_context
from acme_ca.va.perspectives import MpicConfigError, Perspective
from acme_ca.va.settings import VASettings
from acme_ca.va.setup import remote_authority_factory
from tests.support.orders import validation_config

KEY_AUTH = "token123.thumbprint"


@dataclass
class Remote:
    url: str
    material: MpicMaterial
    challsrv: ChallengeTestServer
    built: list[int]
    closed: list[int]
    connections: list[object]
    """The TLS connection (transport) each check arrived on, in order."""


@pytest.fixture
async def remote(tmp_path: Path) -> AsyncIterator[Remote]:
    material = create_mpic_material(tmp_path / "mtls", ["us-east", "eu-west"])
    async with ChallengeTestServer(ChallengeServerConfig.ephemeral()) as challsrv:
        config = replace(Config(), **validation_config(challsrv))
        factory = remote_authority_factory(VASettings.from_config(config), SystemClock(), "us-east")
        built: list[int] = []
        closed: list[int] = []

        def checks() -> ValidationAuthority:
            built.append(1)
            authority = factory()
            release = authority.aclose

            async def aclose() -> None:
                closed.append(1)
                await release()

            authority.aclose = aclose  # type: ignore[method-assign]
            return authority

        cert, key = material.remotes["us-east"]
        app = make_remote_va_app(RemoteIdentity("us-east", "ARIN"), checks)
        connections: list[object] = []

        async def note_connection(request: web.Request, _: web.StreamResponse) -> None:
            connections.append(request.transport)

        app.on_response_prepare.append(note_connection)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(
            runner, "127.0.0.1", 0, ssl_context=server_context(cert, key, material.ca_cert)
        )
        await site.start()
        port = runner.addresses[0][1]
        try:
            yield Remote(
                f"https://127.0.0.1:{port}", material, challsrv, built, closed, connections
            )
        finally:
            await runner.cleanup()


def primary_transport(material: MpicMaterial) -> MtlsTransport:
    return MtlsTransport(
        client_context(material.primary_cert, material.primary_key, material.ca_cert)
    )


def dcv_request(nonce: str = "n1") -> RemoteRequest:
    return RemoteRequest(
        kind="dcv",
        identifier="example.com",
        wildcard=False,
        account_uri="https://ca/acct/1",
        method="dns-01",
        nonce=nonce,
        token="token123",
        key_authorization=KEY_AUTH,
    )


async def test_dns01_corroborated_over_mutual_tls(remote: Remote) -> None:
    remote.challsrv.store.set_txt("_acme-challenge.example.com", dns01_txt_value(KEY_AUTH))
    perspective = Perspective("us-east", "ARIN", remote.url)
    request = dcv_request()
    reply = await primary_transport(remote.material).check(perspective, request.to_json())
    assert (reply["perspective"], reply["rir"], reply["nonce"], reply["ok"]) == (
        "us-east",
        "ARIN",
        "n1",
        True,
    )
    outcome = judge_reply(perspective, request, reply, dns01_txt_value(KEY_AUTH))
    assert outcome.corroborated, outcome.reason
    assert outcome.result is not None
    assert {r.perspective for r in outcome.result.records} == {"us-east"}
    # the remote's own resolver was asked
    assert remote.challsrv.store.dns_history("_acme-challenge.example.com")


async def test_each_request_builds_fresh_checks(remote: Remote) -> None:
    transport = primary_transport(remote.material)
    perspective = Perspective("us-east", "ARIN", remote.url)
    for nonce in ("a", "b"):
        await transport.check(perspective, dcv_request(nonce).to_json())
    assert len(remote.built) == 2
    assert len(remote.challsrv.store.dns_history("_acme-challenge.example.com")) == 2
    # ... and closes them (their pooled DNS connections) once the check is answered.
    assert len(remote.closed) == 2


async def test_br_3_2_2_9_checks_share_one_kept_alive_tls_connection(remote: Remote) -> None:
    # Issue 20: the mutual-TLS handshake is paid once per connection, not per check; each
    # check is still answered for its own nonce by a full check of its own.
    transport = primary_transport(remote.material)
    perspective = Perspective("us-east", "ARIN", remote.url)
    try:
        nonces = [
            (await transport.check(perspective, dcv_request(nonce).to_json()))["nonce"]
            for nonce in ("a", "b", "c")
        ]
    finally:
        await transport.aclose()
    assert nonces == ["a", "b", "c"]
    assert len(remote.built) == 3
    assert len(remote.challsrv.store.dns_history("_acme-challenge.example.com")) == 3
    assert len(remote.connections) == 3
    assert len({id(c) for c in remote.connections}) == 1


async def test_kept_alive_connection_closed_by_the_remote_is_replaced(remote: Remote) -> None:
    """The remote closes the idle connection just before the next check: the check goes
    over a new connection (at most one retry) instead of failing as unavailable."""
    transport = primary_transport(remote.material)
    perspective = Perspective("us-east", "ARIN", remote.url)
    try:
        await transport.check(perspective, dcv_request("a").to_json())
        first = remote.connections[0]
        assert isinstance(first, asyncio.Transport)
        first.close()
        reply = await transport.check(perspective, dcv_request("b").to_json())
    finally:
        await transport.aclose()
    assert reply["nonce"] == "b"
    assert remote.connections[-1] is not first


async def test_closed_transport_reconnects_and_still_verifies(remote: Remote) -> None:
    transport = primary_transport(remote.material)
    perspective = Perspective("us-east", "ARIN", remote.url)
    await transport.check(perspective, dcv_request("a").to_json())
    await transport.aclose()
    reply = await transport.check(perspective, dcv_request("b").to_json())
    await transport.aclose()
    assert reply["nonce"] == "b"
    assert len({id(c) for c in remote.connections}) == 2
    # a pooled connection for one perspective is never used for another: eu-west's
    # certificate check still fails against this us-east remote
    with pytest.raises(RemoteUnavailable, match="TLS failure"):
        await transport.check(
            Perspective("eu-west", "RIPE NCC", remote.url), dcv_request("c").to_json()
        )
    await transport.aclose()


async def test_server_certificate_must_name_the_perspective(remote: Remote) -> None:
    # The remote presents us-east's certificate; a primary expecting eu-west refuses it.
    perspective = Perspective("eu-west", "RIPE NCC", remote.url)
    with pytest.raises(RemoteUnavailable, match="TLS failure"):
        await primary_transport(remote.material).check(perspective, dcv_request().to_json())
    assert remote.built == []


def _client(material: MpicMaterial, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(material.ca_cert))
    context.check_hostname = False
    if cert is not None and key is not None:
        context.load_cert_chain(cert, key)
    return context


@pytest.mark.parametrize("who", ["no-certificate", "other-ca", "a-remote's-server-certificate"])
async def test_only_the_primary_gets_in(remote: Remote, tmp_path: Path, who: str) -> None:
    if who == "no-certificate":
        context = _client(remote.material, None, None)
    elif who == "other-ca":
        rogue = create_mpic_material(tmp_path / "rogue", ["x"])
        context = _client(remote.material, rogue.primary_cert, rogue.primary_key)
    else:
        cert, key = remote.material.remotes["eu-west"]
        context = _client(remote.material, cert, key)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError):
            async with session.post(
                remote.url + CHECK_PATH, json=dcv_request().to_json(), ssl=context
            ) as response:
                await response.read()
    assert remote.built == []


async def test_bad_request_is_400(remote: Remote) -> None:
    context = _client(remote.material, remote.material.primary_cert, remote.material.primary_key)
    async with (
        aiohttp.ClientSession() as session,
        session.post(remote.url + CHECK_PATH, json={"kind": "dcv"}, ssl=context) as response,
    ):
        assert response.status == 400
        body: dict[str, Any] = await response.json()
    assert "bad request" in body["error"]
    with pytest.raises(RemoteUnavailable, match="HTTP 400"):
        await primary_transport(remote.material).check(
            Perspective("us-east", "ARIN", remote.url), {"kind": "nonsense"}
        )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"perspective_id": ""}, "perspective_id (--perspective) '' must be"),
        ({"perspective_id": "primary"}, "other than 'primary'"),
        ({"perspective_rir": "IANA"}, "perspective_rir (--rir): unknown RIR 'IANA'"),
        ({"tls_cert": None, "tls_key": None}, "tls_cert (--tls-cert) is required"),
        ({"remote_va_client_ca": None}, "remote_va_client_ca (--client-ca) is required"),
        ({"remote_va_client_ca": Path("/nonexistent.pem")}, "is not a readable file"),
        ({"remote_va_listen": "nowhere"}, "is not HOST:PORT"),
    ],
    ids=[
        "no-id",
        "reserved-id",
        "unknown-rir",
        "no-cert",
        "no-client-ca",
        "missing-file",
        "bad-listen",
    ],
)
def test_remote_va_refusals(tmp_path: Path, changes: dict[str, Any], message: str) -> None:
    material = create_mpic_material(tmp_path, ["us-east"])
    cert, key = material.remotes["us-east"]
    base = replace(
        Config(),
        perspective_id="us-east",
        perspective_rir="ripe",
        tls_cert=cert,
        tls_key=key,
        remote_va_client_ca=material.ca_cert,
    )
    assert RemoteVaSettings.from_config(base).identity == RemoteIdentity("us-east", "RIPE NCC")
    with pytest.raises(MpicConfigError) as info:
        RemoteVaSettings.from_config(replace(base, **changes))
    assert message in str(info.value)


def test_socket_activation_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LISTEN_FDS", raising=False)
    assert inherited_listen_socket() is None
    monkeypatch.setenv("LISTEN_FDS", "1")
    monkeypatch.setenv("LISTEN_PID", "1")  # someone else's: ignored, and cleared
    assert inherited_listen_socket() is None
    assert "LISTEN_FDS" not in os.environ
    monkeypatch.setenv("LISTEN_FDS", "2")
    with pytest.raises(MpicConfigError, match="exactly one"):
        inherited_listen_socket()
