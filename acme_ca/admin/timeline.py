"""One order's story, oldest first: what ``acme-ca admin order`` prints.

Built from :class:`acme_ca.db.forensics.OrderRecord` (what the database holds) without
interpreting beyond naming: each request, audit row, validation record (with perspective,
quorum, CAA records and DNSSEC status), lint findings, precertificate, SCT, certificate,
OCSP response, CRL and revocation becomes one :class:`Entry`. The same entries are printed
for people (:func:`render_text`) and as JSON for tools (:func:`to_json`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography import x509

from acme_ca.acme.jsontypes import JsonValue
from acme_ca.db.forensics import CertFacts, ChallengeFacts, OrderRecord
from acme_ca.ra.revocation import REASON_NAMES

#: Entry kinds, in the order they sort within the same instant.
KINDS = (
    "request",
    "audit",
    "validation",
    "caa",
    "lint",
    "precertificate",
    "sct",
    "certificate",
    "ocsp",
    "crl",
    "revocation",
)


@dataclass(frozen=True)
class Entry:
    at: datetime
    kind: str
    summary: str
    details: dict[str, JsonValue] = field(default_factory=dict)

    def to_json(self) -> dict[str, JsonValue]:
        return {
            "at": iso(self.at),
            "kind": self.kind,
            "summary": self.summary,
            "details": self.details,
        }


def iso(at: datetime) -> str:
    """UTC with microseconds always, so the text sorts as the times do."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(value: JsonValue, fallback: datetime) -> datetime:
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return fallback
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return fallback


def _compact(details: Mapping[str, JsonValue], skip: Iterable[str] = ()) -> str:
    parts = []
    for key, value in details.items():
        if key in skip or value in (None, "", [], {}):
            continue
        if isinstance(value, (list, dict)):
            continue
        parts.append(f"{key}={value}")
    return " ".join(parts)


def _record_entry(challenge: ChallengeFacts, record: Mapping[str, JsonValue]) -> Entry:
    """A validation record (va/records.ValidationRecord.to_json) as a timeline entry."""
    method = str(record.get("method", challenge.type))
    kind = "caa" if method == "caa" else "validation"
    perspective = record.get("perspective", "primary")
    bits = [f"[{perspective}]", method]
    if record.get("br_method"):
        bits.append(f"({record['br_method']})")
    if record.get("identifier"):
        bits.append(f"identifier={record['identifier']}")
    if record.get("adn"):
        bits.append(f"adn={record['adn']}")
    bits.append(f"query={record.get('query', '')!s}")
    if record.get("server"):
        bits.append(f"server={record['server']}")
    addresses = record.get("addresses")
    if isinstance(addresses, list) and addresses:
        bits.append("addresses=" + ",".join(str(a) for a in addresses))
    if record.get("dnssec"):
        bits.append(f"dnssec={record['dnssec']}")
    if kind == "caa" and record.get("response") is not None:
        bits.append(f"records={record['response']!s}")
    if record.get("result"):
        bits.append(f"result={record['result']}")
    if record.get("corroborated") is not None:
        bits.append(f"corroborated={record['corroborated']}")
    if record.get("quorum"):
        bits.append(f"quorum={record['quorum']}")
    if record.get("error"):
        bits.append(f"error={record['error']}")
    return Entry(
        _parse_time(record.get("at"), challenge.updated_at),
        kind,
        " ".join(bits),
        {"challenge_id": challenge.id, **dict(record)},
    )


def _cert_entries(cert: CertFacts) -> list[Entry]:
    entries: list[Entry] = []
    what = "precertificate" if cert.precertificate else "certificate"
    entries.append(
        Entry(
            cert.created_at,
            what,
            f"{what} serial={cert.serial} issuer={cert.issuer} not_before={iso(cert.not_before)} "
            f"not_after={iso(cert.not_after)}",
            {"serial": cert.serial, "issuer": cert.issuer, "id": cert.id},
        )
    )
    for sct in cert.scts:
        entries.append(
            Entry(
                _parse_time(sct.get("timestamp"), cert.created_at),
                "sct",
                f"SCT from log {sct.get('log')} (operator {sct.get('operator')})",
                {k: sct.get(k) for k in ("log", "operator", "log_id", "url", "timestamp")},
            )
        )
    return entries


def _crl_lists(der: bytes, serial: str) -> bool:
    """Whether the CRL ``der`` has an entry for ``serial`` (as read, not as assumed)."""
    try:
        crl = x509.load_der_x509_crl(der)
    except ValueError:
        return False
    return crl.get_revoked_certificate_by_serial_number(int(serial, 16)) is not None


def build_timeline(record: OrderRecord) -> list[Entry]:
    """Every entry of ``record``, oldest first (ties in :data:`KINDS` order)."""
    entries: list[Entry] = []
    o = record.order
    for r in record.requests:
        entries.append(
            Entry(
                r.at,
                "request",
                f"{r.method} {r.path} -> {r.status}"
                + (f" {r.problem}" if r.problem else "")
                + f" ({r.duration_ms:.1f} ms) from {r.source or '-'} ua={r.user_agent!r} "
                f"request_id={r.request_id}",
                {
                    "method": r.method,
                    "path": r.path,
                    "status": r.status,
                    "problem": r.problem,
                    "duration_ms": r.duration_ms,
                    "user_agent": r.user_agent,
                    "source": r.source,
                    "request_id": r.request_id,
                    "account_id": r.account_id,
                },
            )
        )
    for a in record.audit:
        entries.append(
            Entry(
                a.at,
                "audit",
                f"{a.event} by {a.actor}"
                + (f" request_id={a.request_id}" if a.request_id else "")
                + (f" {_compact(a.details)}" if _compact(a.details) else ""),
                {
                    "id": a.id,
                    "event": a.event,
                    "actor": a.actor,
                    "request_id": a.request_id,
                    **dict(a.details),
                },
            )
        )
        lint = a.details.get("lint")
        if a.event == "issuance.prepared" and isinstance(lint, dict):
            findings = lint.get("findings") or []
            assert isinstance(findings, list)
            entries.append(
                Entry(
                    a.at,
                    "lint",
                    f"pkilint {lint.get('profile')}: "
                    + ("; ".join(str(f) for f in findings) if findings else "no findings"),
                    dict(lint),
                )
            )
        if a.event == "issuance.failed" and a.details.get("reason") == "pre-issuance lint":
            entries.append(
                Entry(
                    a.at,
                    "lint",
                    f"pkilint {a.details.get('kind')} refused: {a.details.get('findings')}",
                    dict(a.details),
                )
            )
    for authz in record.authorizations:
        for ch in authz.challenges:
            for rec in ch.records:
                entries.append(_record_entry(ch, rec))
    for cert in (record.precertificate, record.certificate):
        if cert is not None:
            entries.extend(_cert_entries(cert))
    issued = record.certificate or record.precertificate
    for ocsp in record.ocsp:
        entries.append(
            Entry(
                ocsp.produced_at,
                "ocsp",
                f"OCSP response ({ocsp.hash_algorithm} CertID, the current one; producedAt in "
                f"whole seconds) status={ocsp.status} "
                f"this_update={iso(ocsp.this_update)} next_update={iso(ocsp.next_update)}",
                {
                    "hash_algorithm": ocsp.hash_algorithm,
                    "status": ocsp.status,
                    "this_update": iso(ocsp.this_update),
                    "next_update": iso(ocsp.next_update),
                },
            )
        )
    for crl in record.crls:
        listed = issued is not None and _crl_lists(crl.der, issued.serial)
        entries.append(
            Entry(
                crl.created_at,
                "crl",
                f"CRL {crl.issuer} #{crl.number} published (entries={crl.entries}, "
                f"{'lists' if listed else 'does not list'} this serial)",
                {
                    "issuer": crl.issuer,
                    "number": crl.number,
                    "this_update": iso(crl.this_update),
                    "entries": crl.entries,
                    "lists_serial": listed,
                },
            )
        )
    if issued is not None and issued.revoked_at is not None:
        reason = issued.revocation_reason
        name = REASON_NAMES.get(reason, str(reason)) if reason is not None else "unspecified"
        entries.append(
            Entry(
                issued.revoked_at,
                "revocation",
                f"serial {issued.serial} revoked, reason {name}",
                {"serial": issued.serial, "reason": name},
            )
        )
    if o.error is not None:
        entries.append(
            Entry(o.updated_at, "audit", f"order {o.status} with error", {"error": o.error})
        )
    order = {kind: i for i, kind in enumerate(KINDS)}
    return sorted(entries, key=lambda e: (e.at, order.get(e.kind, len(KINDS))))


def order_header(record: OrderRecord) -> dict[str, JsonValue]:
    o = record.order
    issued = record.certificate or record.precertificate
    return {
        "order_id": o.id,
        "account_id": o.account_id,
        "status": o.status,
        "identifiers": o.identifiers,
        "created_at": iso(o.created_at),
        "expires_at": iso(o.expires_at),
        "serial": issued.serial if issued else None,
        "job": None
        if record.job is None
        else {
            "id": record.job.id,
            "status": record.job.status,
            "step": record.job.step,
            "attempts": record.job.attempts,
            "deferrals": record.job.deferrals,
        },
    }


def render_text(record: OrderRecord, entries: list[Entry]) -> str:
    head = order_header(record)
    names = record.order.identifiers
    values = (
        ", ".join(str(i.get("value")) for i in names if isinstance(i, dict))
        if isinstance(names, list)
        else ""
    )
    lines = [
        f"order {head['order_id']}  account {head['account_id']}  status {head['status']}  "
        f"names {values}" + (f"  serial {head['serial']}" if head["serial"] else ""),
    ]
    for e in entries:
        lines.append(f"{iso(e.at)}  {e.kind:<14} {e.summary}")
    return "\n".join(lines) + "\n"


def to_json(record: OrderRecord, entries: list[Entry]) -> dict[str, JsonValue]:
    return {**order_header(record), "timeline": [e.to_json() for e in entries]}
