"""A subscriber on the ACME API (JWS client plus the challenge test server) and the config that
points validation at that server."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.asymmetric import ec

from acme_ca.acme.b64 import b64url_encode
from acme_ca.acme.jwk import jwk_from_key
from acme_ca.testsrv.server import ChallengeTestServer
from tests.fixtures import RunningCa
from tests.support.jws import JwsClient, Reply


def validation_config(srv: ChallengeTestServer) -> dict[str, Any]:
    return {
        "dns_resolver": f"127.0.0.1:{srv.dns_port}",
        "dnssec": "off",
        "http01_port": srv.http01_port,
        "allow_loopback_validation": True,
    }


def persist_record(challenge: dict[str, Any], *, wildcard: bool = False) -> str:
    """The ``_validation-persist`` TXT value a client builds from a dns-persist-01 challenge
    object: its first issuer domain name and its ``accounturi`` (draft-ietf-acme-dns-persist)."""
    value = f"{challenge['issuer-domain-names'][0]}; accounturi={challenge['accounturi']}"
    return value + ("; policy=wildcard" if wildcard else "")


def account_label(account_url: str) -> str:
    """dns-account-01's label, computed as a client does (draft-ietf-acme-dns-account-label)."""
    digest = hashlib.sha256(account_url.encode()).digest()[:10]
    return "_" + base64.b32encode(digest).decode().lower()


class Subscriber(JwsClient):
    """A JwsClient with helpers to take an order through validation."""

    srv: ChallengeTestServer

    def key_authorization(self, token: str) -> str:
        return f"{token}.{jwk_from_key(self.key.public_key()).thumbprint_b64()}"

    async def new_order(self, *names: str) -> Reply:
        return await self.post(
            self.directory["newOrder"],
            {"identifiers": [{"type": "dns", "value": n} for n in names]},
        )

    async def get(self, url: str) -> Reply:
        return await self.post(url, None)

    async def answer(self, authz_url: str, kind: str) -> Reply:
        authz = (await self.get(authz_url)).body
        challenge = next(c for c in authz["challenges"] if c["type"] == kind)
        key_auth = self.key_authorization(challenge.get("token", ""))  # none: dns-persist-01
        name = authz["identifier"]["value"]
        if kind == "http-01":
            self.srv.store.add_http01(challenge["token"], key_auth)
        elif kind == "dns-persist-01":
            self.srv.store.set_txt(
                f"_validation-persist.{name}",
                persist_record(challenge, wildcard=bool(authz.get("wildcard"))),
            )
        else:
            digest = b64url_encode(hashlib.sha256(key_auth.encode()).digest())
            prefix = "_acme-challenge"
            if kind == "dns-account-01":
                prefix = f"{account_label(self.account_url)}.{prefix}"
            self.srv.store.set_txt(f"{prefix}.{name}", digest)
        return await self.post(challenge["url"], {})

    async def wait_order(self, url: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            body: dict[str, Any] = (await self.get(url)).body
            if body["status"] not in ("pending", "processing") or (
                asyncio.get_running_loop().time() > deadline
            ):
                return body
            await asyncio.sleep(0.05)

    async def wait_authz(self, url: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            body: dict[str, Any] = (await self.get(url)).body
            if body["status"] != "pending" or asyncio.get_running_loop().time() > deadline:
                return body
            await asyncio.sleep(0.05)


async def subscriber(
    ca: RunningCa, session: aiohttp.ClientSession, srv: ChallengeTestServer
) -> Subscriber:
    s = Subscriber(session, ca.directory_url, ec.generate_private_key(ec.SECP256R1()))
    s.srv = srv
    await s.load_directory()
    assert (await s.register()).status == 201
    return s
