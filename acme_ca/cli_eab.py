"""``acme-ca eab create|list|revoke``: External Account Binding keys (RFC 8555 §7.3.4).

The operator creates a key (kid and HMAC key, printed once) and hands it to a subscriber,
who registers an account with it; ``--org`` binds the key, and the account registered with
it, to a vetted organization (:mod:`acme_ca.cli_org`), so that account may order OV
certificates.  A command module of its own beside :mod:`acme_ca.cli`, as the org and limits
commands are.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from datetime import datetime
from typing import TYPE_CHECKING

from acme_ca.acme.b64 import b64url_encode
from acme_ca.config import Config

if TYPE_CHECKING:  # parsing arguments imports no room (as acme_ca.cli)
    import asyncpg


def add_eab_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``eab`` command group."""
    eab = sub.add_parser("eab", help="External Account Binding keys")
    eab_sub = eab.add_subparsers(dest="eab_command", required=True)
    create = eab_sub.add_parser("create", help="create a key; prints kid and HMAC key")
    create.add_argument("--kid", help="key id (default: random)")
    create.add_argument("--comment", default="", help="free text, e.g. the customer")
    create.add_argument(
        "--org",
        type=int,
        metavar="ID",
        help="bind the key, and the account registered with it, to this vetted organization "
        "(`acme-ca org add`): the account may then order OV certificates",
    )
    eab_sub.add_parser("list", help="list keys and their bound accounts")
    revoke = eab_sub.add_parser("revoke", help="revoke an unused or bound key")
    revoke.add_argument("kid")


def command_line_safe_key() -> bytes:
    """A 256-bit HMAC key whose base64url form does not start with "-": operators paste it
    after `--eab-hmac-key` / `--hmac`, where a leading dash reads as another option."""
    while True:
        key = secrets.token_bytes(32)
        if not b64url_encode(key).startswith("-"):
            return key


async def organization_unusable(
    pool: asyncpg.Pool, organization_id: int, now: datetime
) -> str | None:
    """Why ``eab create --org`` should not bind a key to the organization now: it is unknown,
    revoked, or its vetting is past the BR 4.2.1 reuse period (the key could order nothing:
    vet it again first).  None when it may be bound."""
    from acme_ca.db.organizations import OrganizationRepository
    from acme_ca.ra.organizations import organization_problem

    org = await OrganizationRepository(pool).get(organization_id)
    if org is None:
        return f"no organization {organization_id}"
    problem = organization_problem(org, now)
    return None if problem is None else problem.detail


async def run_eab(config: Config, args: argparse.Namespace) -> int:
    """``acme-ca eab create|list|revoke``."""
    from acme_ca.clock import SystemClock
    from acme_ca.db.database import operator_pool
    from acme_ca.db.eab import EabKeyRepository, OrganizationUnavailable
    from acme_ca.db.settings import DatabaseSettings

    now = SystemClock().now()
    async with operator_pool(DatabaseSettings.from_config(config)) as pool:
        repo = EabKeyRepository(pool)
        if args.eab_command == "create":
            kid = args.kid or "kid-" + secrets.token_hex(8)
            key = command_line_safe_key()
            why = None if args.org is None else await organization_unusable(pool, args.org, now)
            if why is not None:
                print(f"acme-ca: cannot bind the key: {why}", file=sys.stderr)
                return 1
            try:
                await repo.create(
                    kid, key, args.comment, now, actor="operator:cli", organization_id=args.org
                )
            except OrganizationUnavailable as exc:
                print(f"acme-ca: cannot bind the key: {exc}", file=sys.stderr)
                return 1
            print(f"kid: {kid}")
            print(f"hmac_key: {b64url_encode(key)}")
            if args.org is not None:
                print(f"organization: {args.org}")
        elif args.eab_command == "list":
            for k in await repo.list():
                state = (
                    "revoked"
                    if k.revoked_at
                    else (f"bound to account {k.account_id}" if k.account_id else "unused")
                )
                org = f"\torganization {k.organization_id}" if k.organization_id else ""
                print(f"{k.kid}\t{state}\t{k.created_at.isoformat()}\t{k.comment}{org}")
        elif args.eab_command == "revoke":
            if not await repo.revoke(args.kid, now, actor="operator:cli"):
                print(f"acme-ca: no active EAB key {args.kid!r}", file=sys.stderr)
                return 1
            print(f"revoked {args.kid}")
    return 0
