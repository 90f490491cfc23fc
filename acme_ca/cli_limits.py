"""``acme-ca admin limits set|list|clear``: rate-limit overrides per key (docs/operations.md,
"Rate limits").  An override replaces a limit's count and period for one key (an account,
a registered domain, a name set, ``ACCOUNT:HOSTNAME`` or an address); count 0 blocks the
key.  Each change is an audit event naming the operator."""

from __future__ import annotations

import argparse
import re
import sys
from datetime import timedelta

from acme_ca.config import Config

#: The names of acme_ca.ra.ratelimits.Limit, kept here so parsing arguments imports no room
#: (tests/test_ratelimits.py checks they agree).
LIMIT_NAMES = (
    "new_accounts_per_ip_range",
    "new_orders_per_account",
    "certificates_per_domain",
    "duplicate_certificates",
    "failed_validations",
)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_period(text: str) -> timedelta:
    """``90s``, ``30m``, ``3h``, ``7d`` (a bare number is seconds)."""
    match = re.fullmatch(r"(\d+)([smhd]?)", text.strip())
    if match is None or int(match[1]) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a period such as 3h or 7d")
    return timedelta(seconds=int(match[1]) * _UNITS[match[2] or "s"])


def add_limits_parser(admin_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    limits = admin_sub.add_parser(
        "limits",
        help="rate-limit overrides per account, domain, name set or address",
        description="Override a rate limit for one key: KEY is an account id "
        "(new_orders_per_account), a domain (certificates_per_domain: its registered domain "
        "counts), comma-separated names (duplicate_certificates), ACCOUNT:HOSTNAME "
        "(failed_validations) or an address (new_accounts_per_ip_range: its /32 or /48). "
        "--count 0 blocks the key. Recorded in the audit trail.",
    )
    sub = limits.add_subparsers(dest="limits_command", required=True)
    set_ = sub.add_parser("set", help="set (or replace) the override of LIMIT for KEY")
    set_.add_argument("limit", choices=LIMIT_NAMES)
    set_.add_argument("key")
    set_.add_argument("--count", type=int, required=True, help="requests allowed per period")
    set_.add_argument("--period", type=parse_period, required=True, help="e.g. 3h, 7d")
    set_.add_argument("--comment", default="", help="why, e.g. a ticket")
    set_.add_argument("--actor", help="who decided this (default: the OS user)")
    sub.add_parser("list", help="list the overrides")
    clear = sub.add_parser("clear", help="remove the override of LIMIT for KEY")
    clear.add_argument("limit", choices=LIMIT_NAMES)
    clear.add_argument("key")
    clear.add_argument("--actor", help="who decided this (default: the OS user)")


async def run_limits(config: Config, args: argparse.Namespace, actor: str) -> int:
    from acme_ca.clock import SystemClock
    from acme_ca.db.database import operator_pool
    from acme_ca.db.ratelimits import Override, RateLimitRepository
    from acme_ca.db.settings import DatabaseSettings
    from acme_ca.ra.ratelimits import BadLimitKey, Limit, bucket_key

    now = SystemClock().now()
    key = ""
    if args.limits_command in ("set", "clear"):
        try:
            key = bucket_key(Limit(args.limit), args.key)
        except BadLimitKey as exc:
            print(f"acme-ca: {exc}", file=sys.stderr)
            return 2
    if args.limits_command == "set" and args.count < 0:
        print("acme-ca: --count must be 0 or more", file=sys.stderr)
        return 2
    async with operator_pool(DatabaseSettings.from_config(config)) as pool:
        repo = RateLimitRepository(pool)
        if args.limits_command == "set":
            seconds = int(args.period.total_seconds())
            await repo.set_override(
                Override(args.limit, key, args.count, seconds, args.comment, actor, now)
            )
            print(f"override\t{args.limit}\t{key}\tcount={args.count}\tperiod={seconds}s")
        elif args.limits_command == "clear":
            if not await repo.clear_override(args.limit, key, actor=actor, now=now):
                print(f"acme-ca: no override of {args.limit} for {key}", file=sys.stderr)
                return 1
            print(f"cleared\t{args.limit}\t{key}")
        else:
            for o in await repo.overrides():
                print(
                    f"{o.limit}\t{o.key}\tcount={o.count}\tperiod={o.period_seconds}s\t"
                    f"by={o.actor}\tat={o.created_at.isoformat()}\t{o.comment}"
                )
    return 0
