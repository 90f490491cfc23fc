"""``acme-ca check``: the deployment shape, every production invariant and the profiles on
offer, evaluated as serve and worker evaluate them at start (docs/production.md).  A command
module of its own beside :mod:`acme_ca.cli`, as the eab, org and limits commands are."""

from __future__ import annotations

import argparse
import sys

from acme_ca.config import Config


def add_check_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``check``."""
    check = sub.add_parser(
        "check",
        help="evaluate the production invariants: could this configuration issue "
        "publicly-trusted certificates?",
        description="Print the deployment shape and every production invariant as PASS or "
        "FAIL with its BR/CP clause and the keys to set (docs/production.md). serve and "
        "worker run the same evaluation and, with a production hierarchy, refuse to start "
        "on any FAIL. Exit 0 only when every invariant passes.",
    )
    check.add_argument("--json", action="store_true", help="print the result as JSON")
    check.add_argument(
        "--at",
        metavar="ISO8601",
        help="evaluate at this time instead of now (e.g. 2026-12-15T00:00Z)",
    )


def run_check(config: Config, args: argparse.Namespace) -> int:
    """Exit status 0 only when every invariant passes and the profiles are sound."""
    import json
    from datetime import UTC, datetime

    from acme_ca.clock import SystemClock
    from acme_ca.deployment import assess, render_text
    from acme_ca.main.profiles import profiles_report, render_profiles

    at = SystemClock().now()
    if args.at:
        try:
            at = datetime.fromisoformat(args.at)
        except ValueError:
            print(f"acme-ca: --at {args.at!r} is not an ISO 8601 time", file=sys.stderr)
            return 2
        at = at if at.tzinfo else at.replace(tzinfo=UTC)
    assessment = assess(config, at)
    profiles = profiles_report(config, at)
    if args.json:
        print(json.dumps({**assessment.to_json(), "profiles": profiles}, indent=2))
    else:
        sys.stdout.write(render_text(assessment) + render_profiles(profiles))
    return 1 if assessment.failures or not profiles["ok"] else 0
