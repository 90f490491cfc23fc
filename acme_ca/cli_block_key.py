"""``acme-ca admin block-key``: a key reported compromised, blocked and swept.

The key is refused for CSRs and account keys from then on (BR 4.9.1.1, 4.9.12), and a sweep
the signing workers run revokes every unexpired certificate and precertificate with it as
keyCompromise; the command can wait for that sweep.  Recorded in the audit trail naming the
operator.  A command module of its own beside :mod:`acme_ca.cli`, as the org and limits
commands are.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from acme_ca.config import Config


def add_block_key_parser(admin_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``admin block-key``."""
    block_key = admin_sub.add_parser(
        "block-key",
        help="block a compromised key and revoke every certificate that has it",
        description="Block a key reported compromised (BR 4.9.1.1, 4.9.12): refused for CSRs "
        "and account keys from now on, and a sweep the signing workers run within seconds "
        "revokes every unexpired certificate and precertificate with it, of any account, as "
        "keyCompromise (docs/operations.md). Recorded in the audit trail naming --actor.",
    )
    which_key = block_key.add_mutually_exclusive_group(required=True)
    which_key.add_argument(
        "--key",
        type=Path,
        metavar="PEM",
        help="the key: a PEM public key, certificate, CSR or private key",
    )
    which_key.add_argument(
        "--spki", metavar="SHA256", help="hex SHA-256 of the key's DER SubjectPublicKeyInfo"
    )
    block_key.add_argument(
        "--reason", default="", help="what was reported, e.g. a ticket or the report's source"
    )
    block_key.add_argument(
        "--compromised-at",
        metavar="ISO8601",
        help="when the key is known to have been compromised: revocation "
        "dates move back to it (BR 7.2.2); default: now",
    )
    block_key.add_argument("--actor", help="who decided this (default: the OS user)")
    block_key.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait up to SECONDS for a worker to finish the sweep",
    )


async def run_block_key(config: Config, args: argparse.Namespace, actor: str) -> int:
    """``acme-ca admin block-key``: block the key, then wait up to ``--wait`` for the sweep."""
    from datetime import UTC, datetime

    from acme_ca.clock import SystemClock
    from acme_ca.db.certificates import CertificateRepository
    from acme_ca.db.database import operator_pool
    from acme_ca.db.key_compromise import KeyCompromiseRepository
    from acme_ca.db.settings import DatabaseSettings
    from acme_ca.ra.revocation import (
        OperatorRevocationError,
        RevocationAuthority,
        parse_spki_sha256,
        spki_sha256_from_pem,
    )

    try:
        digest = (
            spki_sha256_from_pem(args.key.read_bytes())
            if args.key is not None
            else parse_spki_sha256(args.spki)
        )
        compromised_at = None
        if args.compromised_at:
            compromised_at = datetime.fromisoformat(args.compromised_at)
            if compromised_at.tzinfo is None:
                compromised_at = compromised_at.replace(tzinfo=UTC)
    except (OSError, ValueError) as exc:  # OperatorRevocationError is a ValueError
        print(f"acme-ca: {exc}", file=sys.stderr)
        return 2
    async with operator_pool(DatabaseSettings.from_config(config)) as pool:
        authority = RevocationAuthority(CertificateRepository(pool), SystemClock())
        try:
            result = await authority.block_key(
                digest, actor=actor, reason=args.reason, compromised_at=compromised_at
            )
        except OperatorRevocationError as exc:
            print(f"acme-ca: {exc}", file=sys.stderr)
            return 1
        print(
            f"blocked\t{digest.hex()}\tsweep={result.sweep_id}\t"
            f"unexpired_certificates={result.certificates}"
        )
        sweeps = KeyCompromiseRepository(pool)
        deadline = asyncio.get_running_loop().time() + args.wait
        while True:
            sweep = await sweeps.get(result.sweep_id)
            assert sweep is not None
            if sweep.status == "done" or asyncio.get_running_loop().time() >= deadline:
                break
            await asyncio.sleep(0.5)
    print(
        f"sweep {sweep.id}: {sweep.status}\trevoked={sweep.revoked}\tupdated={sweep.updated}"
        f"\tattempts={sweep.attempts}"
        + (f"\tlast_error={sweep.last_error}" if sweep.last_error else "")
    )
    return 0 if sweep.status == "done" or not args.wait else 3
