"""``acme-ca admin order|account|cert|search|certs``: what happened, from the database.

Read-only: none of these writes anything. Human output by default, ``--json`` for tools
(``certs`` writes CSV for auditors). cli.py only dispatches here (:data:`COMMANDS`).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import re
import sys
from datetime import UTC, datetime
from typing import TextIO

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from acme_ca.acme.b64 import b64url_decode
from acme_ca.acme.jsontypes import JsonValue
from acme_ca.admin.timeline import build_timeline, iso, render_text, to_json
from acme_ca.clock import SystemClock
from acme_ca.config import Config
from acme_ca.db.forensics import CertFacts, ForensicsRepository, admin_storage
from acme_ca.db.settings import DatabaseSettings
from acme_ca.ra.revocation import REASON_NAMES

_DOMAIN = re.compile(r"^(\*\.)?([a-z0-9-]{1,63}\.)*[a-z0-9-]{1,63}\.?$")


def parse_time(text: str) -> datetime:
    """An ISO 8601 date or time; a date is its midnight UTC, a naive time is UTC."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def run(config: Config, args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Dispatch one ``admin`` read command; exit status 0, 1 (not found) or 2 (usage)."""
    return asyncio.run(run_async(config, args, out or sys.stdout))


async def run_async(config: Config, args: argparse.Namespace, out: TextIO) -> int:
    try:
        since = parse_time(args.since) if getattr(args, "since", None) else None
        issued_since = (
            parse_time(args.issued_since) if getattr(args, "issued_since", None) else None
        )
        issued_before = (
            parse_time(args.issued_before) if getattr(args, "issued_before", None) else None
        )
    except ValueError as exc:
        print(f"acme-ca: not an ISO 8601 date: {exc}", file=sys.stderr)
        return 2
    async with admin_storage(DatabaseSettings.from_config(config)) as storage:
        repo = storage.forensics
        if args.admin_command == "order":
            return await _order(repo, args, out)
        if args.admin_command == "account":
            return await _account(repo, args, out)
        if args.admin_command == "cert":
            return await _cert(repo, args, out)
        if args.admin_command == "search":
            return await _search(repo, args.domain, since, args.json, out)
        assert issued_since is not None
        return await _certs_csv(repo, issued_since, issued_before, out)


def _fail(message: str) -> int:
    print(f"acme-ca: {message}", file=sys.stderr)
    return 1


async def _order(repo: ForensicsRepository, args: argparse.Namespace, out: TextIO) -> int:
    if args.serial is not None:
        try:
            order_id = await repo.order_for_serial(args.serial)
        except ValueError:
            print(f"acme-ca: {args.serial!r} is not a hex serial", file=sys.stderr)
            return 2
        if order_id is None:
            return _fail(f"no certificate, precertificate or job with serial {args.serial}")
        order_ids = [order_id]
    elif args.request_id is not None:
        order_ids = await repo.orders_for_request(args.request_id)
        if not order_ids:
            return _fail(f"no order was touched by request {args.request_id}")
    else:
        order_ids = [args.order_id]
    documents: list[JsonValue] = []
    for order_id in order_ids:
        record = await repo.order(order_id)
        if record is None:
            return _fail(f"no order {order_id}")
        entries = build_timeline(record)
        if args.json:
            documents.append(to_json(record, entries))
        else:
            out.write(render_text(record, entries))
    if args.json:
        out.write(json.dumps(documents[0] if len(documents) == 1 else documents, indent=2) + "\n")
    return 0


def _thumbprint(text: str) -> bytes:
    cleaned = text.strip().replace(":", "")
    if re.fullmatch(r"[0-9a-fA-F]{64}", cleaned):
        return bytes.fromhex(cleaned)
    return b64url_decode(text.strip())


async def _account(repo: ForensicsRepository, args: argparse.Namespace, out: TextIO) -> int:
    account_id = args.account_id
    if args.key_thumbprint is not None:
        try:
            thumbprint = _thumbprint(args.key_thumbprint)
        except ValueError:
            print("acme-ca: --key-thumbprint is neither hex nor base64url", file=sys.stderr)
            return 2
        account_id = await repo.account_by_thumbprint(thumbprint)
        if account_id is None:
            return _fail(f"no account with key thumbprint {args.key_thumbprint}")
    account = await repo.account(account_id)
    if account is None:
        return _fail(f"no account {account_id}")
    orders = await repo.account_orders(account.id)
    certs = await repo.account_certificates(account.id)
    audit = await repo.account_audit(account.id)
    doc: dict[str, JsonValue] = {
        "account_id": account.id,
        "status": account.status,
        "key_thumbprint": account.key_thumbprint.hex(),
        "contact": account.contact,
        "eab_kid": account.eab_kid,
        "created_at": iso(account.created_at),
        "updated_at": iso(account.updated_at),
        "orders": [
            {
                "id": o.id,
                "status": o.status,
                "created_at": iso(o.created_at),
                "identifiers": o.identifiers,
            }
            for o in orders
        ],
        "certificates": [_cert_summary(c) for c in certs],
        "audit": [
            {
                "id": a.id,
                "at": iso(a.at),
                "event": a.event,
                "actor": a.actor,
                "order_id": a.order_id,
            }
            for a in audit
        ],
    }
    if args.json:
        out.write(json.dumps(doc, indent=2) + "\n")
        return 0
    out.write(
        f"account {account.id}  status {account.status}  created {iso(account.created_at)}\n"
        f"key thumbprint (SHA-256, hex) {account.key_thumbprint.hex()}\n"
        f"contact {json.dumps(account.contact)}  eab {account.eab_kid or '-'}\n"
        f"orders ({len(orders)}):\n"
    )
    for o in orders:
        out.write(f"  {o.id}\t{o.status}\t{iso(o.created_at)}\t{_names(o.identifiers)}\n")
    out.write(f"certificates ({len(certs)}):\n")
    for c in certs:
        out.write(f"  {_cert_line(c)}\n")
    out.write(f"audit rows (last {len(audit)}):\n")
    for a in audit:
        out.write(f"  {iso(a.at)}  {a.event} by {a.actor}\n")
    return 0


def _names(identifiers: JsonValue) -> str:
    if not isinstance(identifiers, list):
        return ""
    return ",".join(str(i.get("value")) for i in identifiers if isinstance(i, dict))


def _cert_names(cert: CertFacts) -> list[str]:
    try:
        san = x509.load_der_x509_certificate(cert.der).extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        )
    except (ValueError, x509.ExtensionNotFound):
        return []
    return [str(n) for n in san.value.get_values_for_type(x509.DNSName)] + [
        str(ip) for ip in san.value.get_values_for_type(x509.IPAddress)
    ]


def _status(cert: CertFacts, now: datetime) -> str:
    if cert.revoked_at is not None:
        return "revoked"
    return "expired" if cert.not_after <= now else "valid"


def _cert_summary(cert: CertFacts) -> dict[str, JsonValue]:
    reason = cert.revocation_reason
    return {
        "serial": cert.serial,
        "issuer": cert.issuer,
        "order_id": cert.order_id,
        "account_id": cert.account_id,
        "precertificate_only": cert.precertificate,
        "status": _status(cert, SystemClock().now()),
        "names": list(_cert_names(cert)),
        "not_before": iso(cert.not_before),
        "not_after": iso(cert.not_after),
        "issued_at": iso(cert.created_at),
        "revoked_at": iso(cert.revoked_at) if cert.revoked_at else None,
        "revocation_reason": REASON_NAMES.get(reason, str(reason)) if reason is not None else None,
        "spki_sha256": cert.spki_sha256.hex() if cert.spki_sha256 else None,
        "scts": [{k: s.get(k) for k in ("log", "operator", "timestamp")} for s in cert.scts],
    }


def _cert_line(cert: CertFacts) -> str:
    s = _cert_summary(cert)
    return (
        f"{s['serial']}\t{s['status']}\t{s['issuer']}\tnot_after={s['not_after']}\t"
        f"names={','.join(_cert_names(cert))}"
    )


async def _cert(repo: ForensicsRepository, args: argparse.Namespace, out: TextIO) -> int:
    try:
        cert = await repo.certificate(args.serial)
    except ValueError:
        print(f"acme-ca: {args.serial!r} is not a hex serial", file=sys.stderr)
        return 2
    if cert is None:
        return _fail(f"no certificate or precertificate with serial {args.serial}")
    leaf_pem = x509.load_der_x509_certificate(cert.der).public_bytes(Encoding.PEM).decode()
    if args.pem:
        out.write(leaf_pem + cert.chain_pem)
        return 0
    doc = _cert_summary(cert)
    ocsp = await repo.ocsp(cert.issuer, cert.serial)
    doc["ocsp"] = [
        {"hash_algorithm": o.hash_algorithm, "status": o.status, "produced_at": iso(o.produced_at)}
        for o in ocsp
    ]
    chain = (
        [
            c.subject.rfc4514_string()
            for c in x509.load_pem_x509_certificates(cert.chain_pem.encode())
        ]
        if cert.chain_pem
        else []
    )
    doc["chain"] = list(chain)
    if args.json:
        out.write(json.dumps(doc, indent=2) + "\n")
        return 0
    out.write(
        f"serial {cert.serial}  {doc['status']}"
        + (" (precertificate only: no final certificate)" if cert.precertificate else "")
        + f"\nissuer {cert.issuer}  order {cert.order_id}  account {cert.account_id}\n"
        f"names {','.join(_cert_names(cert))}\n"
        f"not_before {doc['not_before']}  not_after {doc['not_after']}  issued {doc['issued_at']}\n"
        f"key (SPKI SHA-256) {doc['spki_sha256']}\n"
    )
    if cert.revoked_at is not None:
        out.write(f"revoked {doc['revoked_at']} reason {doc['revocation_reason']}\n")
    out.write("chain: " + (" <- ".join(chain) or "-") + "\n")
    for s in cert.scts:
        out.write(f"SCT {s.get('log')} (operator {s.get('operator')}) {s.get('timestamp')}\n")
    for o in ocsp:
        out.write(f"OCSP {o.hash_algorithm}: {o.status} produced {iso(o.produced_at)}\n")
    return 0


async def _search(
    repo: ForensicsRepository, domain: str, since: datetime | None, as_json: bool, out: TextIO
) -> int:
    name = domain.strip().lower().rstrip(".")
    if name.startswith("*."):
        name = name[2:]
    if not _DOMAIN.match(name):
        print(f"acme-ca: {domain!r} is not a domain name", file=sys.stderr)
        return 2
    hits = await repo.orders_for_domain(name, since)
    docs: list[JsonValue] = []
    for order in hits:
        record = await repo.order(order.id)
        assert record is not None
        issued = record.certificate or record.precertificate
        doc: dict[str, JsonValue] = {
            "order_id": order.id,
            "account_id": order.account_id,
            "status": order.status,
            "created_at": iso(order.created_at),
            "names": _names(order.identifiers),
            "certificate": _cert_summary(issued) if issued else None,
        }
        docs.append(doc)
        if not as_json:
            cert = f"{issued.serial} {_status(issued, SystemClock().now())}" if issued else "-"
            out.write(
                f"order {order.id}\t{order.status}\t{iso(order.created_at)}\taccount "
                f"{order.account_id}\t{_names(order.identifiers)}\tcertificate {cert}\n"
            )
    if as_json:
        out.write(json.dumps(docs, indent=2) + "\n")
    return 0


CSV_COLUMNS = (
    "serial",
    "issuer",
    "issued_at",
    "not_before",
    "not_after",
    "names",
    "account_id",
    "order_id",
    "status",
    "revoked_at",
    "revocation_reason",
    "spki_sha256",
)


async def _certs_csv(
    repo: ForensicsRepository, since: datetime, before: datetime | None, out: TextIO
) -> int:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    async for cert in repo.issued_since(since, before):
        s = _cert_summary(cert)
        s["names"] = " ".join(_cert_names(cert))
        writer.writerow(["" if s[c] is None else s[c] for c in CSV_COLUMNS])
    return 0
