"""Honest in-process Certificate Transparency logs, for tests and test mode only.

Each :class:`TestCtLog` implements the RFC 6962 submission API (§4.1 ``add-chain``, §4.2
``add-pre-chain``, §4.3 ``get-roots``) under ``/ct/v1/`` on its own aiohttp listener, with
its own P-256 key, operator and temporal interval, in one of two modes:

* ``rfc6962``: SCTs with empty extensions (listed under ``operators[].logs``);
* ``static-ct-api``: SCTs carrying the ``leaf_index`` extension (type 0, uint40), as
  c2sp.org/static-ct-api logs return them (listed under ``operators[].tiled_logs``).

A submission is checked as a real log checks it: the chain parses, each certificate is signed
by the next and the last one is, or is signed by, an accepted root; the leaf has serverAuth
in its EKU and a notAfter inside the log's temporal interval; ``add-pre-chain`` wants the
critical poison (and a directly issuing CA: precertificate signing certificates are refused),
``add-chain`` wants no poison.  The SCT is signed over the RFC 6962 §3.2 data; the
precertificate's TBS without the poison is made by cryptography's ``tbs_precertificate_bytes``
(its own DER code, independent of the CA's byte-level code; see :func:`_without_poison`), so a
precertificate that already carries an SCT list extension is refused.  A second submission of
the same entry returns the same SCT.

Every submission verifies its leaf's signature afresh; a CA link (issuer by root, intermediate
by intermediate) that verified once is remembered by the DER of both certificates, in a small
bounded cache per log, and not verified again.  A link that failed is never remembered.

Fault knobs (:class:`Faults`, settable per log while it runs): 429 with Retry-After, 503,
slow responses, a corrupt signature, an unknown log id, a timestamp an hour ahead.

:class:`acme_ca.testsrv.ct_log_set.TestCtLogs` runs several logs at once and produces
their log list, also served at ``/log_list.json`` by each log.  Production code never
imports this module.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import itertools
import struct
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, TypedDict

import structlog
from aiohttp import web
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from acme_ca.clock import Clock, SystemClock

_log = structlog.get_logger(component=__name__)

LogMode = Literal["rfc6962", "static-ct-api"]
#: How far ahead the ``future_timestamp`` fault puts the SCT timestamp.
FUTURE_SKEW: Final = timedelta(hours=1)
_PRECERT_SIGNING_EKU: Final = x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.4.4")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
#: The critical poison extension, as RFC 6962 §3.1 makes it and DER allows only one way:
#: SEQUENCE { extnID 1.3.6.1.4.1.11129.2.4.3, critical TRUE, extnValue OCTET STRING { NULL } }.
_POISON_EXTENSION: Final = bytes.fromhex("3013060a2b06010401d6790204030101ff04020500")
#: The same with the extnID of the embedded SCT list (1.3.6.1.4.1.11129.2.4.2): same length.
_SCT_LIST_AS_POISON: Final = bytes.fromhex("3013060a2b06010401d6790204020101ff04020500")
#: How many verified CA links (child DER, parent DER) each log remembers.
LINK_CACHE_SIZE: Final = 64


class SctResponse(TypedDict):
    """The JSON answer of ``add-chain``/``add-pre-chain`` (RFC 6962 §4.1), base64 members."""

    sct_version: int
    id: str
    timestamp: int
    extensions: str
    signature: str


class _LogListEntry(TypedDict):
    description: str
    log_id: str
    key: str
    mmd: int
    state: dict[str, dict[str, str]]


class LogListEntry(_LogListEntry, total=False):
    """One log in a v3 log list: ``url`` (RFC 6962) or the static-ct-api URLs."""

    url: str
    submission_url: str
    monitoring_url: str
    temporal_interval: dict[str, str]


class LogListOperator(TypedDict):
    name: str
    email: list[str]
    logs: list[LogListEntry]
    tiled_logs: list[LogListEntry]


class LogList(TypedDict):
    """The v3 log list (Chrome's ``log_list.json`` schema), the parts this CA reads."""

    version: str
    log_list_timestamp: str
    operators: list[LogListOperator]


@dataclass
class Faults:
    """What a log does wrong; every knob stays on until cleared."""

    #: Answer 429 Too Many Requests with this Retry-After (seconds).
    retry_after: int | None = None
    #: Answer 503 Service Unavailable.
    unavailable: bool = False
    #: Wait this long before answering.
    delay: float = 0.0
    #: Flip a byte of the SCT signature.
    corrupt_signature: bool = False
    #: Put another log's id in the SCT.
    wrong_log_id: bool = False
    #: Date the SCT an hour ahead.
    future_timestamp: bool = False

    def clear(self) -> None:
        for name, value in Faults().__dict__.items():
            setattr(self, name, value)

    @property
    def any(self) -> bool:
        return self != Faults()


@dataclass
class TestLogSpec:
    """Who a test log is: description, operator, key, temporal interval, API mode, state."""

    __test__ = False  # not a pytest class

    name: str
    operator: str
    key: ec.EllipticCurvePrivateKey
    start: datetime | None = None
    end: datetime | None = None
    mode: LogMode = "rfc6962"
    state: str = "usable"
    #: Port to listen on; 0 picks a free one.
    port: int = 0

    @classmethod
    def generate(cls, name: str, operator: str, **kwargs: Any) -> TestLogSpec:
        return cls(name, operator, ec.generate_private_key(ec.SECP256R1()), **kwargs)


def _u16(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def _u24(data: bytes) -> bytes:
    return len(data).to_bytes(3, "big") + data


def _millis(at: datetime) -> int:
    return (at - _EPOCH) // timedelta(milliseconds=1)


def _without_poison(precert: x509.Certificate) -> bytes:
    """The precertificate's TBSCertificate without the poison extension (RFC 6962 §3.2),
    re-encoded by cryptography (DER in, DER out: every other byte stays as it was).

    ``tbs_precertificate_bytes`` removes the *SCT list* extension (…11129.2.4.2) of a final
    certificate, not the poison (…11129.2.4.3), and raises on a TBS without an SCT list.  So
    the poison's extnID is renamed to the SCT list's (same length, last byte 3 → 2) in a copy
    of the certificate, and the copy's ``tbs_precertificate_bytes`` is the answer.  The caller
    has checked that the poison is there and critical (cryptography's parser has checked its
    NULL value), so its extension is exactly :data:`_POISON_EXTENSION`.  Should those bytes
    also occur inside another field, renaming them there leaves the copy without an SCT list
    extension (``tbs_precertificate_bytes`` raises) or unparsable; exactly one occurrence
    must work.  A precertificate that already has an SCT list is refused: there would be two.
    """
    with contextlib.suppress(x509.ExtensionNotFound):
        precert.extensions.get_extension_for_oid(ExtensionOID.PRECERT_SIGNED_CERTIFICATE_TIMESTAMPS)
        raise _Rejected("a precertificate carries no SCT list extension")
    tbs = precert.tbs_certificate_bytes
    der = precert.public_bytes(serialization.Encoding.DER)
    tbs_at = der.index(tbs)
    found: list[bytes] = []
    at = tbs.find(_POISON_EXTENSION)
    while at >= 0:
        cut = tbs_at + at
        renamed = der[:cut] + _SCT_LIST_AS_POISON + der[cut + len(_SCT_LIST_AS_POISON) :]
        with contextlib.suppress(ValueError):  # not the extension: no SCT list in the copy
            found.append(x509.load_der_x509_certificate(renamed).tbs_precertificate_bytes)
        at = tbs.find(_POISON_EXTENSION, at + 1)
    if len(found) != 1:
        raise _Rejected("cannot locate the poison extension's DER (RFC 6962 §3.1) in the TBS")
    return found[0]


def _extensions(cert: x509.Certificate) -> x509.Extensions:
    """``cert.extensions``; one that does not parse (a poison that is not NULL, a duplicate)
    rejects the submission rather than failing the request."""
    try:
        return cert.extensions
    except (ValueError, x509.DuplicateExtension) as e:
        raise _Rejected(f"{cert.subject.rfc4514_string()} has malformed extensions: {e}") from e


def rfc3339(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Rejected(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class TestCtLog:
    """One log: its key, its accepted roots, what it has logged, its fault knobs."""

    __test__ = False  # not a pytest class

    def __init__(
        self, spec: TestLogSpec, roots: Sequence[x509.Certificate], clock: Clock | None = None
    ) -> None:
        self.spec = spec
        self.roots = list(roots)
        self.faults = Faults()
        self.requests: Counter[str] = Counter()
        self.url: str = ""  # set once listening: http://host:port/
        self._clock = clock or SystemClock()
        self.key_der = spec.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.log_id = hashlib.sha256(self.key_der).digest()
        #: (entry type, signed entry) → the SCT response first returned for it.
        self._entries: dict[tuple[int, bytes], SctResponse] = {}
        #: (child DER, parent DER) of CA links whose signature verified, oldest first.
        self._verified_links: OrderedDict[tuple[bytes, bytes], None] = OrderedDict()
        self.log_list_json: LogList | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def operator(self) -> str:
        return self.spec.operator

    @property
    def entries(self) -> int:
        return len(self._entries)

    def responses(self) -> list[SctResponse]:
        """The SCT responses given for each logged entry, in logging order."""
        return list(self._entries.values())

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/ct/v1/add-chain", self._add_chain)
        app.router.add_post("/ct/v1/add-pre-chain", self._add_pre_chain)
        app.router.add_get("/ct/v1/get-roots", self._get_roots)
        app.router.add_get("/log_list.json", self._log_list)
        return app

    # ------------------------------------------------------------------ handlers

    async def _get_roots(self, request: web.Request) -> web.Response:
        self.requests["get-roots"] += 1
        certs = [
            base64.b64encode(r.public_bytes(serialization.Encoding.DER)).decode()
            for r in self.roots
        ]
        return web.json_response({"certificates": certs})

    async def _log_list(self, request: web.Request) -> web.Response:
        return web.json_response(self.log_list_json or {})

    async def _add_chain(self, request: web.Request) -> web.Response:
        return await self._add(request, precert=False)

    async def _add_pre_chain(self, request: web.Request) -> web.Response:
        return await self._add(request, precert=True)

    async def _add(self, request: web.Request, *, precert: bool) -> web.Response:
        call = "add-pre-chain" if precert else "add-chain"
        self.requests[call] += 1
        faults = Faults(**self.faults.__dict__)  # as they are now, for this request
        if faults.delay:
            await asyncio.sleep(faults.delay)
        if faults.unavailable:
            return web.Response(status=503, text="log unavailable (test fault)")
        if faults.retry_after is not None:
            return web.Response(
                status=429,
                text="slow down (test fault)",
                headers={"Retry-After": str(faults.retry_after)},
            )
        try:
            chain = await self._chain(request)
            entry_type, signed_entry = self._check(chain, precert=precert)
        except _Rejected as e:
            _log.info("ct_log.rejected", log=self.name, call=call, reason=e.message)
            return web.Response(status=400, text=e.message)
        key = (entry_type, signed_entry)
        if not faults.any and key in self._entries:
            return web.json_response(self._entries[key])
        timestamp = self._clock.now() + (FUTURE_SKEW if faults.future_timestamp else timedelta())
        extensions = b""
        if self.spec.mode == "static-ct-api":
            index = self.entries if key not in self._entries else self._index(key)
            extensions = b"\x00" + _u16(index.to_bytes(5, "big"))
        response = self._sct(entry_type, signed_entry, _millis(timestamp), extensions, faults)
        if not faults.any:
            self._entries[key] = response
            _log.info("ct_log.logged", log=self.name, call=call, entries=self.entries)
        return web.json_response(response)

    def _index(self, key: tuple[int, bytes]) -> int:
        ext = base64.b64decode(self._entries[key]["extensions"])
        return int.from_bytes(ext[3:8], "big")

    async def _chain(self, request: web.Request) -> list[x509.Certificate]:
        try:
            body = await request.json()
            raw = body["chain"]
            if not isinstance(raw, list) or not raw:
                raise _Rejected("chain must be a non-empty array")
            return [x509.load_der_x509_certificate(base64.b64decode(c, validate=True)) for c in raw]
        except _Rejected:
            raise
        except Exception as e:
            raise _Rejected(f"malformed chain: {e!r}") from e

    def _check(self, chain: list[x509.Certificate], *, precert: bool) -> tuple[int, bytes]:
        leaf = chain[0]
        extensions = _extensions(leaf)
        try:
            poison = extensions.get_extension_for_oid(ExtensionOID.PRECERT_POISON)
        except x509.ExtensionNotFound:
            poison = None
        if precert and poison is None:
            raise _Rejected("add-pre-chain needs a precertificate (no poison extension)")
        if precert and poison is not None and not poison.critical:
            raise _Rejected("the precertificate poison must be critical")
        if not precert and poison is not None:
            raise _Rejected("add-chain takes certificates, not precertificates")
        try:
            eku = extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            raise _Rejected("no extendedKeyUsage: serverAuth is required") from None
        if ExtendedKeyUsageOID.SERVER_AUTH not in eku:
            raise _Rejected("extendedKeyUsage lacks serverAuth")
        not_after = leaf.not_valid_after_utc
        if self.spec.start is not None and not_after < self.spec.start:
            raise _Rejected(f"notAfter {not_after} is before this log's temporal interval")
        if self.spec.end is not None and not_after >= self.spec.end:
            raise _Rejected(f"notAfter {not_after} is after this log's temporal interval")
        self._check_chain(chain)
        if not precert:
            return 0, _u24(leaf.public_bytes(serialization.Encoding.DER))
        if len(chain) < 2:
            raise _Rejected("add-pre-chain needs the issuer after the precertificate")
        issuer = chain[1]
        with contextlib.suppress(x509.ExtensionNotFound):
            issuer_eku = _extensions(issuer).get_extension_for_class(x509.ExtendedKeyUsage).value
            if _PRECERT_SIGNING_EKU in issuer_eku:
                raise _Rejected("precertificate signing certificates are not accepted")
        issuer_key_hash = hashlib.sha256(
            issuer.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        ).digest()
        return 1, issuer_key_hash + _u24(_without_poison(leaf))

    def _check_chain(self, chain: list[x509.Certificate]) -> None:
        """Each certificate is signed by the next, the last is or is signed by a root.  The
        leaf's signature is always verified; CA links may come from :meth:`_signed_by`'s
        cache."""
        for i, (child, parent) in enumerate(itertools.pairwise(chain)):
            try:
                self._signed_by(child, parent, leaf=i == 0)
            except (ValueError, TypeError, InvalidSignature) as e:
                raise _Rejected(
                    f"{child.subject.rfc4514_string()} is not signed by "
                    f"{parent.subject.rfc4514_string()}"
                ) from e
        last = chain[-1]
        for root in self.roots:
            if last == root:
                return
            if last.issuer != root.subject:
                continue
            try:
                self._signed_by(last, root, leaf=len(chain) == 1)
            except (ValueError, TypeError, InvalidSignature):
                continue
            return
        raise _Rejected("the chain does not lead to an accepted root")

    def _signed_by(self, child: x509.Certificate, parent: x509.Certificate, *, leaf: bool) -> None:
        """``child.verify_directly_issued_by(parent)`` (raises as it does), remembered for a
        CA link (``leaf`` false) once it succeeded: the answer depends on the two
        certificates' DER alone."""
        if leaf:
            child.verify_directly_issued_by(parent)
            return
        link = (
            child.public_bytes(serialization.Encoding.DER),
            parent.public_bytes(serialization.Encoding.DER),
        )
        if link in self._verified_links:
            self._verified_links.move_to_end(link)
            return
        child.verify_directly_issued_by(parent)
        self._verified_links[link] = None
        if len(self._verified_links) > LINK_CACHE_SIZE:
            self._verified_links.popitem(last=False)

    def _sct(
        self,
        entry_type: int,
        signed_entry: bytes,
        timestamp: int,
        extensions: bytes,
        faults: Faults,
    ) -> SctResponse:
        data = struct.pack(">BBQH", 0, 0, timestamp, entry_type) + signed_entry + _u16(extensions)
        signature = self.spec.key.sign(data, ec.ECDSA(hashes.SHA256()))
        if faults.corrupt_signature:
            at = len(signature) // 2
            signature = signature[:at] + bytes([signature[at] ^ 0x5A]) + signature[at + 1 :]
        log_id = self.log_id
        if faults.wrong_log_id:
            log_id = hashlib.sha256(b"some other log" + self.key_der).digest()
        return {
            "sct_version": 0,
            "id": base64.b64encode(log_id).decode(),
            "timestamp": timestamp,
            "extensions": base64.b64encode(extensions).decode(),
            "signature": base64.b64encode(b"\x04\x03" + _u16(signature)).decode(),
        }

    # ------------------------------------------------------------------ log list

    def log_list_entry(self) -> LogListEntry:
        entry: LogListEntry = {
            "description": self.name,
            "log_id": base64.b64encode(self.log_id).decode(),
            "key": base64.b64encode(self.key_der).decode(),
            "mmd": 86400 if self.spec.mode == "rfc6962" else 60,
            "state": {self.spec.state: {"timestamp": "2025-01-01T00:00:00Z"}},
        }
        if self.spec.mode == "rfc6962":
            entry["url"] = self.url
        else:
            entry["submission_url"] = self.url
            entry["monitoring_url"] = self.url
        if self.spec.start is not None or self.spec.end is not None:
            entry["temporal_interval"] = {
                "start_inclusive": rfc3339(self.spec.start or _EPOCH),
                "end_exclusive": rfc3339(self.spec.end or datetime(9999, 1, 1, tzinfo=UTC)),
            }
        return entry


__all__ = [
    "FUTURE_SKEW",
    "Faults",
    "TestCtLog",
    "TestLogSpec",
    "rfc3339",
]
