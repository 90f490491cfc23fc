"""``acme-ca``: parse arguments, load configuration, call into the rooms. Nothing else."""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from acme_ca.acme.b64 import b64url_encode
from acme_ca.config import Config, ConfigError, config_reference, load_config
from acme_ca.log import configure_logging


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="acme-ca", description="ACME (RFC 8555) issuing CA")
    parser.add_argument("--config", type=Path, help="TOML configuration file")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the ACME server")
    serve.add_argument(
        "--listen", metavar="HOST:PORT", help="listen address (default 127.0.0.1:14000)"
    )
    serve.add_argument(
        "--plain-http",
        action="store_true",
        default=None,
        help="serve plain HTTP (behind a TLS-terminating proxy)",
    )
    serve.add_argument("--base-url", help="external base URL clients use")
    serve.add_argument("--dns-resolver", metavar="HOST:PORT",
                       help="validating recursive resolver for dns-01, CAA and http-01 lookups")
    serve.add_argument("--http01-port", type=int, metavar="PORT",
                       help="port http-01 validation connects to (default 80)")
    serve.add_argument("--allow-loopback-validation", action="store_true", default=None,
                       help="let http-01 reach loopback/private addresses (tests only)")
    serve.add_argument("--dnssec", choices=("require", "off"),
                       help="require DNSSEC-validated answers (default require)")

    sub.add_parser("worker", help="run a signing worker (production: one or more processes)")
    sub.add_parser("init", help="create the development PKI hierarchy under pki_dir")

    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("migrate", help="apply schema.sql and pending migrations")

    eab = sub.add_parser("eab", help="External Account Binding keys")
    eab_sub = eab.add_subparsers(dest="eab_command", required=True)
    create = eab_sub.add_parser("create", help="create a key; prints kid and HMAC key")
    create.add_argument("--kid", help="key id (default: random)")
    create.add_argument("--comment", default="", help="free text, e.g. the customer")
    eab_sub.add_parser("list", help="list keys and their bound accounts")
    revoke = eab_sub.add_parser("revoke", help="revoke an unused or bound key")
    revoke.add_argument("kid")

    sub.add_parser("config-doc", help="print the configuration reference (Markdown)")
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "listen": getattr(args, "listen", None),
        "plain_http": getattr(args, "plain_http", None),
        "base_url": getattr(args, "base_url", None),
        "dns_resolver": getattr(args, "dns_resolver", None),
        "http01_port": getattr(args, "http01_port", None),
        "allow_loopback_validation": getattr(args, "allow_loopback_validation", None),
        "dnssec": getattr(args, "dnssec", None),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "config-doc":
        sys.stdout.write(config_reference())
        return 0
    try:
        config = load_config(args.config, overrides=_overrides(args))
    except ConfigError as exc:
        print(f"acme-ca: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        configure_logging(config.log_format, config.log_level)
        from acme_ca.serve import serve

        asyncio.run(serve(config))
        return 0
    if args.command == "worker":
        configure_logging(config.log_format, config.log_level)
        from acme_ca.serve import work

        asyncio.run(work(config))
        return 0
    configure_logging(config.log_format, config.log_level, stream=sys.stderr)
    if args.command == "init":
        from acme_ca.ca.hierarchy import init_hierarchy

        path = asyncio.run(init_hierarchy(config))
        print(f"issuers: {path}")
        print(f"root certificate: {config.pki_path / 'root.pem'}")
        return 0
    if args.command == "db":
        return asyncio.run(_db_migrate(config))
    if args.command == "eab":
        return asyncio.run(_eab(config, args))
    return 2  # pragma: no cover - argparse enforces the choices


async def _db_migrate(config: Config) -> int:
    from acme_ca.db.database import database_dsn, migrate

    async with database_dsn(config) as dsn:
        applied = await migrate(dsn)
    print(f"schema is current; migrations applied now: {applied or 'none'}")
    return 0


async def _eab(config: Config, args: argparse.Namespace) -> int:
    from acme_ca.clock import SystemClock
    from acme_ca.db.database import database_dsn, migrate
    from acme_ca.db.eab import EabKeyRepository
    from acme_ca.db.pool import create_pool

    now = SystemClock().now()
    async with database_dsn(config) as dsn:
        await migrate(dsn)
        pool = await create_pool(dsn, max_size=1)
        try:
            repo = EabKeyRepository(pool)
            if args.eab_command == "create":
                kid = args.kid or "kid-" + secrets.token_hex(8)
                key = secrets.token_bytes(32)
                await repo.create(kid, key, args.comment, now, actor="operator:cli")
                print(f"kid: {kid}")
                print(f"hmac_key: {b64url_encode(key)}")
            elif args.eab_command == "list":
                for k in await repo.list():
                    state = (
                        "revoked"
                        if k.revoked_at
                        else (f"bound to account {k.account_id}" if k.account_id else "unused")
                    )
                    print(f"{k.kid}\t{state}\t{k.created_at.isoformat()}\t{k.comment}")
            elif args.eab_command == "revoke":
                if not await repo.revoke(args.kid, now, actor="operator:cli"):
                    print(f"acme-ca: no active EAB key {args.kid!r}", file=sys.stderr)
                    return 1
                print(f"revoked {args.kid}")
        finally:
            await pool.close()
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
