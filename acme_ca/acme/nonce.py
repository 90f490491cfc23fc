"""Self-describing, authenticated Replay-Nonces (RFC 8555 §6.5).

A nonce is ``base64url(version || issued_at || random || tag)`` where ``tag`` is an
HMAC-SHA256 over the first three parts under a secret every server process shares (it lives
in the database).  Handing one out therefore costs no database write: any process can check
that a nonce is ours, unmodified and not expired from its bytes alone.  Single use is
enforced when it is *redeemed*: the nonce id goes into a table whose primary key refuses a
second insert, so a replay, even one racing the first use on another process, fails.
"""

from __future__ import annotations

import hmac
import secrets
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from acme_ca.acme.b64 import b64url_decode, b64url_encode

NONCE_VERSION = 1
_RANDOM_BYTES = 16
_TAG_BYTES = 16
_BODY = struct.Struct(">BQ")
NONCE_BYTES = _BODY.size + _RANDOM_BYTES + _TAG_BYTES


class NonceRejected(ValueError):
    """The nonce is not one of ours, was altered, or is too old; ``reason`` says which."""


@dataclass(frozen=True)
class OpenedNonce:
    """A nonce that passed its MAC and age checks; ``nonce_id`` is what redemption records."""

    nonce_id: bytes
    issued_at: datetime
    expires_at: datetime


class NonceCodec:
    """Makes and opens nonces under one shared secret."""

    def __init__(self, secret: bytes, lifetime: timedelta) -> None:
        if len(secret) < 32:
            raise ValueError("nonce secret must be at least 32 bytes")
        self._secret = secret
        self._lifetime = lifetime

    def _tag(self, body: bytes) -> bytes:
        # One-shot HMAC (OpenSSL's, no HMAC object): half the cost of hmac.new per call.
        return hmac.digest(self._secret, body, "sha256")[:_TAG_BYTES]

    def make(self, now: datetime) -> str:
        body = _BODY.pack(NONCE_VERSION, int(now.timestamp())) + secrets.token_bytes(_RANDOM_BYTES)
        return b64url_encode(body + self._tag(body))

    def open(self, nonce: str, now: datetime) -> OpenedNonce:
        try:
            raw = b64url_decode(nonce)
        except ValueError:
            raise NonceRejected("nonce is not base64url") from None
        if len(raw) != NONCE_BYTES:
            raise NonceRejected("nonce has the wrong length")
        body, tag = raw[:-_TAG_BYTES], raw[-_TAG_BYTES:]
        if not hmac.compare_digest(tag, self._tag(body)):
            raise NonceRejected("nonce was not issued by this CA")
        version, issued = _BODY.unpack_from(body)
        if version != NONCE_VERSION:
            raise NonceRejected("nonce version is unknown")
        issued_at = datetime.fromtimestamp(issued, UTC)
        expires_at = issued_at + self._lifetime
        if now >= expires_at:
            raise NonceRejected("nonce has expired")
        if issued_at > now + timedelta(minutes=5):
            raise NonceRejected("nonce is from the future")
        return OpenedNonce(nonce_id=body, issued_at=issued_at, expires_at=expires_at)
