"""The ``acme-ca admin order|account|cert|search|certs`` and ``acme-ca audit`` arguments.

Kept apart from the commands so that parsing any ``acme-ca`` command line imports no room
(the commands import the database and cryptography only when they run).
"""

from __future__ import annotations

import argparse
from pathlib import Path

#: The read-only ``admin`` subcommands (acme_ca/admin/commands.py).
COMMANDS = ("order", "account", "cert", "search", "certs")


def register_admin(admin_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the read-only subcommands to ``acme-ca admin``."""
    order = admin_sub.add_parser(
        "order",
        help="one order's timeline: requests, audit rows, validations, issuance, revocation",
        description="Print, oldest first, every request that touched the order, every audit "
        "row, each validation record (method, ADN, addresses, perspective, quorum, CAA, "
        "DNSSEC), lint findings, precertificate, SCTs, certificate, OCSP, CRL and revocation. "
        "Find the order by id, by a certificate serial or by a request id (X-Request-ID).",
    )
    which = order.add_mutually_exclusive_group(required=True)
    which.add_argument("order_id", nargs="?", type=int, help="order id")
    which.add_argument("--serial", help="serial of its certificate (any hex spelling)")
    which.add_argument("--request-id", help="an X-Request-ID of a request that touched it")
    order.add_argument("--json", action="store_true", help="JSON for tools")

    account = admin_sub.add_parser(
        "account", help="an account: key, contacts, orders, certificates"
    )
    which = account.add_mutually_exclusive_group(required=True)
    which.add_argument("account_id", nargs="?", type=int, help="account id")
    which.add_argument(
        "--key-thumbprint", help="RFC 7638 thumbprint of the account key (base64url or hex)"
    )
    account.add_argument("--json", action="store_true", help="JSON for tools")

    cert = admin_sub.add_parser("cert", help="a certificate: status, chain, SCTs, revocation")
    cert.add_argument("serial", help="serial (any hex spelling)")
    cert.add_argument("--pem", action="store_true", help="print the certificate and chain as PEM")
    cert.add_argument("--json", action="store_true", help="JSON for tools")

    search = admin_sub.add_parser(
        "search", help="orders and certificates naming a domain or a name under it"
    )
    search.add_argument("--domain", required=True, help="e.g. example.com")
    search.add_argument("--since", metavar="DATE", help="only orders created since (ISO 8601)")
    search.add_argument("--json", action="store_true", help="JSON for tools")

    certs = admin_sub.add_parser(
        "certs", help="the issued-certificates list auditors ask for (CSV)"
    )
    certs.add_argument("--issued-since", required=True, metavar="DATE", help="ISO 8601")
    certs.add_argument("--issued-before", metavar="DATE", help="ISO 8601 (exclusive)")
    certs.add_argument("--format", choices=("csv",), default="csv")


def register_audit(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``acme-ca audit``."""
    audit = sub.add_parser(
        "audit",
        help="the tamper-evident audit trail: verify, export, retention",
        description="audit_events is a SHA-256 hash chain (CP 5.4; docs/operations.md).",
    )
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser(
        "verify", help="recompute the hash chain; name the first broken row (exit 1)"
    )
    verify.add_argument(
        "--export",
        type=Path,
        metavar="FILE",
        help="verify an export file instead (its signature and every row's hash)",
    )
    verify.add_argument(
        "--public-key",
        type=Path,
        metavar="PEM",
        help="with --export: the archive key's public key (default: audit_signing_key's)",
    )
    export = audit_sub.add_parser("export", help="signed JSON Lines of the rows in a period")
    export.add_argument("--since", required=True, metavar="DATE", help="ISO 8601, inclusive")
    export.add_argument("--until", required=True, metavar="DATE", help="ISO 8601, exclusive")
    export.add_argument("--out", type=Path, metavar="FILE", help="default: standard output")
    retention = audit_sub.add_parser(
        "retention",
        help="move months older than audit_retention_days to the audit_archive schema",
    )
    retention.add_argument("--dry-run", action="store_true", help="list, move nothing")
    retention.add_argument("--actor", default="operator:cli", help="recorded in the audit row")
