"""``acme-ca audit verify|export|retention``: the audit trail's integrity, archive and age.

Exports are JSON Lines, one audit row per line in id order with its ``chain``, ``prev_hash``
and ``hash``, then one last line ``{"signature": ...}``: an Ed25519 signature over the SHA-256
of every byte before it. The key is ``audit_signing_key`` (default
``home/audit/export-ed25519.pem``, made on first use, mode 0600): a key for the archive
only, never an issuing CA's key, so archiving needs no HSM session and a leaked archive key
can sign nothing a relying party trusts. Keep its public key (printed with every export,
``public_key`` in the signature line) with the archive; :func:`verify_export` checks a
file against it and recomputes every row's hash from the exported fields.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from acme_ca.acme.jsontypes import JsonValue
from acme_ca.admin.commands import parse_time
from acme_ca.admin.timeline import iso
from acme_ca.clock import Clock, SystemClock
from acme_ca.config import Config
from acme_ca.db.audit_chain import GENESIS, AuditChain, ChainRow, row_hash
from acme_ca.db.forensics import admin_storage
from acme_ca.db.settings import DatabaseSettings
from acme_ca.localca import key_pem, write_new

SIGNATURE_ALGORITHM = "Ed25519"


def run(config: Config, args: argparse.Namespace, clock: Clock | None = None) -> int:
    return asyncio.run(run_async(config, args, clock or SystemClock()))


async def run_async(config: Config, args: argparse.Namespace, clock: Clock) -> int:
    if args.audit_command == "verify" and args.export is not None:
        public = (
            load_public_key(args.public_key)
            if args.public_key is not None
            else load_signing_key(config.audit_signing_key_path, create=False).public_key()
        )
        problem = await asyncio.to_thread(verify_export, args.export, public)
        if problem:
            print(f"audit export {args.export}: BROKEN: {problem}")
            return 1
        print(f"audit export {args.export}: signature and chain OK")
        return 0
    try:
        since = parse_time(args.since) if args.audit_command == "export" else None
        until = parse_time(args.until) if args.audit_command == "export" else None
    except ValueError as exc:
        print(f"acme-ca: not an ISO 8601 date: {exc}", file=sys.stderr)
        return 2
    async with admin_storage(DatabaseSettings.from_config(config)) as storage:
        chain = storage.audit
        if args.audit_command == "verify":
            report = await chain.verify()
            span = f"rows {report.first_id}..{report.last_id}" if report.rows else "no rows"
            if report.broken is not None:
                print(
                    f"audit chain BROKEN at row {report.broken.id}: {report.broken.reason} "
                    f"({report.rows} rows read, {span})"
                )
                return 1
            print(f"audit chain OK: {report.rows} rows, {span}, anchored at {report.anchor}")
            return 0
        if args.audit_command == "export":
            assert since is not None and until is not None
            key = load_signing_key(config.audit_signing_key_path, create=True)
            if args.out is not None:
                with args.out.open("w", encoding="utf-8") as out:
                    count = await export(chain, since, until, key, out)
            else:
                count = await export(chain, since, until, key, sys.stdout)
            print(
                f"exported {count} audit rows; public key {public_key_b64(key.public_key())}",
                file=sys.stderr,
            )
            return 0
        now = clock.now()
        await chain.ensure_partitions(now)
        retention = timedelta(days=config.audit_retention_days)
        retired = await chain.retire(now, retention, actor=args.actor, dry_run=args.dry_run)
        requests = await chain.retire_requests(
            now, retention, actor=args.actor, dry_run=args.dry_run
        )
        verb = "would move" if args.dry_run else "moved"
        for p in retired + requests:
            where = p.archived_as or ""
            print(f"{verb}\t{p.name}\t{iso(p.start)}..{iso(p.end)}\trows={p.rows}\t{where}")
        print(
            f"{verb} {len(retired)} month(s) of audit_events and {len(requests)} of requests "
            f"older than {config.audit_retention_days} days (cutoff {iso(now - retention)})"
        )
        return 0


# --- the archive key -------------------------------------------------------------------


def load_signing_key(path: Path, *, create: bool) -> Ed25519PrivateKey:
    """The Ed25519 archive key at ``path``; made (0600, directory 0700) if absent and allowed."""
    if not path.exists():
        if not create:
            raise FileNotFoundError(f"no audit signing key at {path}")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = Ed25519PrivateKey.generate()
        write_new(path, key_pem(key), 0o600)
        return key
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, Ed25519PrivateKey):
        raise TypeError(f"{path}: audit_signing_key must be an Ed25519 private key")
    return loaded


def load_public_key(path: Path) -> Ed25519PublicKey:
    data = path.read_bytes()
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        key = serialization.load_pem_private_key(data, password=None).public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise TypeError(f"{path}: not an Ed25519 key")
    return key


def public_key_b64(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


# --- export ------------------------------------------------------------------------------


def _line(row: ChainRow) -> dict[str, JsonValue]:
    return {
        "id": row.id,
        "at": row.at.isoformat(),
        "at_us": (row.at - datetime(1970, 1, 1, tzinfo=row.at.tzinfo)) // timedelta(microseconds=1),
        "event": row.event,
        "actor": row.actor,
        "account_id": row.account_id,
        "order_id": row.order_id,
        "request_id": row.request_id,
        "details": json.loads(row.details_text),
        "details_text": row.details_text,
        "prev_hash": row.prev_hash.hex(),
        "hash": row.hash.hex(),
        "chain": row.chain,
        "seq": row.seq,
    }


async def export(
    chain: AuditChain, since: datetime, until: datetime, key: Ed25519PrivateKey, out: TextIO
) -> int:
    """Write the rows with ``since <= at < until`` and the signature line; returns the count."""
    digest = hashlib.sha256()
    count = 0
    first: int | None = None
    last: int | None = None
    async for row in chain.rows(since=since, until=until):
        text = json.dumps(_line(row), separators=(",", ":"), ensure_ascii=False) + "\n"
        digest.update(text.encode())
        out.write(text)
        count += 1
        first = row.id if first is None else first
        last = row.id
    out.write(
        signature_line(
            key,
            digest.digest(),
            rows=count,
            first_id=first,
            last_id=last,
            since=since.isoformat(),
            until=until.isoformat(),
        )
    )
    return count


def signature_line(key: Ed25519PrivateKey, digest: bytes, **summary: JsonValue) -> str:
    """An export's last line: ``key``'s signature over ``digest`` (the SHA-256 of every byte
    before it), its public key, and ``summary`` (rows, first and last id, period)."""
    signature = {
        "algorithm": SIGNATURE_ALGORITHM,
        "signed": "SHA-256 of every byte before this line",
        "sha256": digest.hex(),
        "value": base64.b64encode(key.sign(digest)).decode(),
        "public_key": public_key_b64(key.public_key()),
        **summary,
    }
    return json.dumps({"signature": signature}, separators=(",", ":")) + "\n"


def row_of_line(line: dict[str, Any]) -> ChainRow:
    """The :class:`ChainRow` an export line holds (``chain`` and ``seq`` absent from lines
    exported before migration 014: chain 0, position = id)."""
    return ChainRow(
        id=line["id"],
        at=datetime.fromisoformat(line["at"]),
        event=line["event"],
        actor=line["actor"],
        account_id=line["account_id"],
        order_id=line["order_id"],
        request_id=line["request_id"],
        details_text=line["details_text"],
        prev_hash=bytes.fromhex(line["prev_hash"]),
        hash=bytes.fromhex(line["hash"]),
        chain=line.get("chain", 0),
        seq=line.get("seq"),
    )


def verify_export(path: Path, public_key: Ed25519PublicKey) -> str | None:
    """None if ``path`` is an intact export signed by ``public_key``, else what is wrong.

    Checks the signature over the bytes before the last line, then each row's hash from its
    fields and, between rows of one chain at consecutive positions, the link (rows of other
    months may sit between rows of a period, so only consecutive positions must link); a
    chain's first row must start from the genesis hash.
    """
    data = path.read_bytes()
    body, sep, tail = data.rstrip(b"\n").rpartition(b"\n")
    signed = body + sep if body else b""
    if not body and not tail.startswith(b'{"signature"'):
        return "no signature line"
    try:
        sig = json.loads(tail)["signature"]
    except (ValueError, KeyError, TypeError):
        return "the last line is not a signature"
    digest = hashlib.sha256(signed).digest()
    if sig.get("sha256") != digest.hex():
        return "the rows do not match the signed digest (file altered or truncated)"
    try:
        public_key.verify(base64.b64decode(sig["value"]), digest)
    except (InvalidSignature, ValueError, KeyError):
        return "the signature does not verify with this public key"
    previous: dict[int, ChainRow] = {}
    for number, raw in enumerate(signed.splitlines(), start=1):
        row = row_of_line(json.loads(raw))
        if row_hash(row.prev_hash, row) != row.hash:
            return f"line {number} (row {row.id}): content does not match its hash"
        before = previous.get(row.chain)
        if (
            before is not None
            and row.position == before.position + 1
            and row.prev_hash != before.hash
        ):
            return f"line {number} (row {row.id}): not linked to row {before.id}"
        if row.position == 1 and row.prev_hash != GENESIS:
            return f"line {number} (row {row.id}): does not start from the genesis hash"
        previous[row.chain] = row
    return None
