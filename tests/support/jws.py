"""A deliberately low-level ACME test client: it signs whatever it is told to, so tests can
send every malformed variant a real client never would."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from acme_ca.acme.b64 import b64url_encode
from acme_ca.acme.jwk import jwk_from_key

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def default_alg(key: PrivateKey) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    return {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}[key.curve.name]


def raw_sign(key: PrivateKey, data: bytes, alg: str) -> bytes:
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    digest = {"ES384": hashes.SHA384(), "ES512": hashes.SHA512()}.get(alg, hashes.SHA256())
    size = (key.curve.key_size + 7) // 8
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(digest)))
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def jwk_json(key: PrivateKey) -> dict[str, str]:
    return jwk_from_key(key.public_key()).to_json()


def make_jws(
    key: PrivateKey,
    payload: Any,
    *,
    url: str,
    nonce: str | None,
    kid: str | None = None,
    embed_jwk: bool | None = None,
    alg: str | None = None,
    extra_protected: dict[str, Any] | None = None,
) -> dict[str, str]:
    """A flattened JWS; ``payload`` None means POST-as-GET, bytes are sent as given."""
    protected: dict[str, Any] = {"alg": alg or default_alg(key), "url": url}
    if nonce is not None:
        protected["nonce"] = nonce
    if kid is not None:
        protected["kid"] = kid
    if embed_jwk or (embed_jwk is None and kid is None):
        protected["jwk"] = jwk_json(key)
    protected.update(extra_protected or {})
    protected_b64 = b64url_encode(json.dumps(protected).encode())
    if payload is None:
        payload_raw = b""
    elif isinstance(payload, bytes):
        payload_raw = payload
    else:
        payload_raw = json.dumps(payload).encode()
    payload_b64 = b64url_encode(payload_raw)
    signing_input = f"{protected_b64}.{payload_b64}".encode()
    signature = raw_sign(key, signing_input, alg or default_alg(key))
    return {
        "protected": protected_b64,
        "payload": payload_b64,
        "signature": b64url_encode(signature),
    }


def make_eab(hmac_key: bytes, kid: str, account_key: PrivateKey, url: str) -> dict[str, str]:
    protected = b64url_encode(json.dumps({"alg": "HS256", "kid": kid, "url": url}).encode())
    payload = b64url_encode(json.dumps(jwk_json(account_key)).encode())
    mac = hmac.new(hmac_key, f"{protected}.{payload}".encode(), hashlib.sha256).digest()
    return {"protected": protected, "payload": payload, "signature": b64url_encode(mac)}


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    links: list[str]
    body: Any
    content_type: str
    raw: bytes = b""


@dataclass
class JwsClient:
    """Talks to a CA's directory with one account key."""

    session: aiohttp.ClientSession
    directory_url: str
    key: PrivateKey
    kid: str | None = None
    directory: dict[str, Any] = field(default_factory=dict)

    @property
    def account_url(self) -> str:
        """The account URL (the kid); a test that uses it has registered first."""
        assert self.kid is not None, "not registered"
        return self.kid

    async def load_directory(self) -> dict[str, Any]:
        async with self.session.get(self.directory_url) as resp:
            self.directory = await resp.json()
        return self.directory

    async def nonce(self) -> str:
        async with self.session.head(self.directory["newNonce"]) as resp:
            return resp.headers["Replay-Nonce"]

    async def post_raw(
        self, url: str, body: bytes | str, content_type: str = "application/jose+json"
    ) -> Reply:
        data = body.encode() if isinstance(body, str) else body
        async with self.session.post(
            url, data=data, headers={"Content-Type": content_type}
        ) as resp:
            raw = await resp.read()
            try:
                parsed: Any = json.loads(raw) if raw else None
            except ValueError:
                parsed = raw
            return Reply(
                resp.status,
                dict(resp.headers),
                resp.headers.getall("Link", []),
                parsed,
                resp.content_type,
                raw,
            )

    async def post(
        self,
        url: str,
        payload: Any,
        *,
        key: PrivateKey | None = None,
        nonce: str | None = None,
        use_jwk: bool | None = None,
        signed_url: str | None = None,
        **jws_options: Any,
    ) -> Reply:
        """Sign and POST; by default with the account's kid once registered."""
        key = key or self.key
        if use_jwk is None:
            use_jwk = self.kid is None
        jws = make_jws(
            key,
            payload,
            url=signed_url or url,
            nonce=nonce if nonce is not None else await self.nonce(),
            kid=None if use_jwk else self.kid,
            embed_jwk=use_jwk,
            **jws_options,
        )
        return await self.post_raw(url, json.dumps(jws))

    async def register(self, **fields: Any) -> Reply:
        payload = {"termsOfServiceAgreed": True, **fields}
        reply = await self.post(self.directory["newAccount"], payload, use_jwk=True)
        if reply.status in (200, 201):
            self.kid = reply.headers["Location"]
        return reply
