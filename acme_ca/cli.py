"""``acme-ca``: parse arguments, load configuration, call into the rooms. Nothing else."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import structlog

from acme_ca.admin.args import COMMANDS as ADMIN_READ_COMMANDS
from acme_ca.admin.args import register_admin, register_audit
from acme_ca.cli_block_key import add_block_key_parser, run_block_key
from acme_ca.cli_check import add_check_parser, run_check
from acme_ca.cli_eab import add_eab_parser, run_eab
from acme_ca.cli_limits import add_limits_parser, run_limits
from acme_ca.cli_org import (
    ORG_REVOCATION_REASON,
    add_org_parser,
    revoke_org_certificates,
    run_org,
)
from acme_ca.config import Config, ConfigError, load_config
from acme_ca.config.keys import DEFAULT_METRICS_LISTEN
from acme_ca.config.reference import config_reference
from acme_ca.log import configure_logging

#: ``acme-ca admin revoke --reason`` names (acme_ca.ra.revocation.REASON_CODES, kept here so
#: parsing arguments imports no room).
ADMIN_REASONS = (
    "unspecified",
    "keyCompromise",
    "affiliationChanged",
    "superseded",
    "cessationOfOperation",
    "privilegeWithdrawn",
)


#: Options whose value may begin with "-": a base64url key thumbprint does, one time in 64,
#: and argparse would take ``--key-thumbprint -A3B...`` for two options.
_DASH_VALUE_OPTIONS = frozenset({"--key-thumbprint"})


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (``sys.argv`` when None), parsed; ``OPTION VALUE`` of the options in
    :data:`_DASH_VALUE_OPTIONS` is read as ``OPTION=VALUE``, so a value beginning with "-"
    stays a value."""
    given = list(sys.argv[1:] if argv is None else argv)
    joined: list[str] = []
    while given:
        arg = given.pop(0)
        joined.append(f"{arg}={given.pop(0)}" if arg in _DASH_VALUE_OPTIONS and given else arg)
    return _parser().parse_args(joined)


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
    serve.add_argument(
        "--dns-resolver",
        metavar="HOST:PORT",
        help="validating recursive resolver for dns-01, CAA and http-01 lookups",
    )
    serve.add_argument(
        "--http01-port",
        type=int,
        metavar="PORT",
        help="port http-01 validation connects to (default 80)",
    )
    serve.add_argument(
        "--tlsalpn01-port",
        type=int,
        metavar="PORT",
        help="port tls-alpn-01 validation connects to (default 443; 5001 in test mode)",
    )
    serve.add_argument(
        "--allow-loopback-validation",
        action="store_true",
        default=None,
        help="let http-01 reach loopback/private addresses (tests only)",
    )
    serve.add_argument(
        "--test",
        action="store_true",
        default=None,
        dest="test_mode",
        help="test mode: built-in Pebble-compatible challenge test server "
        "(DNS 127.0.0.1:8053, API 127.0.0.1:8055, http-01 127.0.0.1:5002)",
    )
    serve.add_argument(
        "--challsrv-http01",
        metavar="HOST:PORT|off",
        help="test mode: the challenge server's own http-01 listener, or off",
    )
    serve.add_argument(
        "--ephemeral",
        action="store_true",
        default=None,
        help="test mode: a throwaway home (new hierarchy and database) removed at exit",
    )
    serve.add_argument(
        "--deterministic",
        action="store_true",
        default=None,
        help="test mode: no nonce rejection, no validation sleep, authorizations always "
        "reused, whatever PEBBLE_* variables say",
    )
    serve.add_argument(
        "--pebble-config",
        metavar="FILE",
        help="test mode: read a Pebble JSON config (ports, TLS, retryAfter, "
        "externalAccountBindingRequired, externalAccountMACKeys; ignored members are logged)",
    )
    serve.add_argument(
        "--challsrv-tlsalpn01",
        metavar="HOST:PORT|off",
        help="test mode: the challenge server's own tls-alpn-01 listener (default "
        "127.0.0.1:5001), or off so a client can answer on 5001 itself (lego --tls)",
    )
    serve.add_argument(
        "--dnssec",
        choices=("require", "off"),
        help="require DNSSEC-validated answers (default require)",
    )
    _metrics_flag(serve, "serve")
    serve.add_argument(
        "--max-requests-in-flight",
        type=int,
        metavar="N",
        help="requests worked on at once; more get 503 + Retry-After (default 4 per "
        "pooled database connection)",
    )
    serve.add_argument(
        "--max-connections",
        type=int,
        metavar="N",
        help="open client connections kept; above it the longest idle is closed (default 1000)",
    )
    serve.add_argument(
        "--header-read-timeout",
        type=int,
        metavar="SECONDS",
        dest="header_read_timeout_seconds",
        help="close a connection whose TLS handshake or first request headers take longer "
        "(default 10)",
    )
    serve.add_argument(
        "--perspectives",
        type=int,
        metavar="N",
        dest="test_perspectives",
        help="test mode: start N local remote VAs in-process and corroborate "
        "every validation with them (docs/mpic.md)",
    )

    remote = sub.add_parser(
        "remote-va",
        help="run a remote validation perspective (multi-perspective corroboration)",
        description="A remote VA: a mutual-TLS HTTPS server that runs the CA's validation "
        "checks (every method of the registry: http-01, dns-01, tls-alpn-01...) and CAA from "
        "this network through its own resolver and answers the primary with its perspective "
        "id and RIR (BR 3.2.2.9; docs/mpic.md).",
    )
    remote.add_argument(
        "--listen",
        metavar="HOST:PORT",
        dest="remote_va_listen",
        help="mutual-TLS listener (default 127.0.0.1:14443)",
    )
    remote.add_argument(
        "--perspective",
        metavar="ID",
        dest="perspective_id",
        help="this perspective's id, as in the primary's perspectives file",
    )
    remote.add_argument(
        "--rir",
        metavar="RIR",
        dest="perspective_rir",
        help="this perspective's RIR: ARIN, RIPE NCC, APNIC, LACNIC, AFRINIC",
    )
    remote.add_argument(
        "--dns-resolver", metavar="HOST:PORT", help="this perspective's own validating resolver"
    )
    remote.add_argument(
        "--tlsalpn01-port",
        type=int,
        metavar="PORT",
        help="port tls-alpn-01 checks connect to (default 443)",
    )
    remote.add_argument(
        "--tls-cert", type=Path, metavar="PEM", help="server certificate naming the perspective id"
    )
    remote.add_argument("--tls-key", type=Path, metavar="PEM", help="its private key")
    remote.add_argument(
        "--client-ca",
        type=Path,
        metavar="PEM",
        dest="remote_va_client_ca",
        help="CA of the primary's client certificate; other clients are refused",
    )
    _metrics_flag(remote, "remote-va")

    certs = sub.add_parser(
        "mpic-certs",
        help="create the mutual-TLS material between the primary and remote VAs",
        description="Write a small CA (ca.pem, ca.key), the primary's client certificate "
        "(primary.pem/.key) and one server certificate per remote (ID.pem/.key) to DIR. An "
        "existing CA in DIR is reused, so perspectives can be added later.",
    )
    certs.add_argument("--out", type=Path, required=True, metavar="DIR")
    certs.add_argument(
        "--perspectives",
        required=True,
        metavar="ID[=NAME+NAME],...",
        help="comma-separated perspective ids; optional extra DNS/IP names for "
        "a remote's certificate after '=' joined by '+'",
    )

    worker = sub.add_parser(
        "worker", help="run a signing worker (production: one or more processes)"
    )
    _metrics_flag(worker, "worker")
    worker.add_argument(
        "--issuance-lease-seconds",
        type=int,
        metavar="SECONDS",
        help="how long a job is owned without renewal (renewed every third; default 30)",
    )
    # serve's worker child (acme_ca.main.worker_process): its configuration comes from serve.
    worker.add_argument("--serve-child", action="store_true", help=argparse.SUPPRESS)
    add_check_parser(sub)
    sub.add_parser("init", help="create the development PKI hierarchy under pki_dir")

    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("migrate", help="apply schema.sql and pending migrations")

    add_eab_parser(sub)
    add_org_parser(sub)

    admin = sub.add_parser("admin", help="operator actions (recorded in the audit trail)")
    admin_sub = admin.add_subparsers(dest="admin_command", required=True)
    revoke_cert = admin_sub.add_parser(
        "revoke",
        help="revoke a certificate by serial, every unexpired one under a domain, or an "
        "organization's OV certificates",
        description="Revoke SERIAL (a certificate's, or a precertificate's whose certificate "
        "was never stored), or with --domain every unexpired, unrevoked certificate naming the "
        "domain or a name under it, or with --org every unexpired, unrevoked OV certificate "
        "of the organization's accounts (reason privilegeWithdrawn unless --reason says "
        "otherwise). keyCompromise also blocks the key for CSRs and account "
        "keys, moves an earlier revocation to keyCompromise, and queues a sweep that revokes "
        "every other certificate with the key (see block-key). Each revocation is an audit "
        "event naming --actor.",
    )
    revoke_cert.add_argument("serial", nargs="?", help="certificate serial number (hex)")
    revoke_cert.add_argument("--domain", help="registered domain, e.g. example.com")
    revoke_cert.add_argument(
        "--org", type=int, metavar="ID", help="a vetted organization (`acme-ca org list`)"
    )
    revoke_cert.add_argument(
        "--reason",
        choices=ADMIN_REASONS,
        help="CRLReason (BR 7.2.2); required with SERIAL or --domain",
    )
    revoke_cert.add_argument("--actor", help="who decided this (default: the OS user)")
    revoke_cert.add_argument(
        "--dry-run",
        action="store_true",
        help="with --domain or --org: list what would be revoked, change nothing",
    )
    add_block_key_parser(admin_sub)

    register_admin(admin_sub)
    add_limits_parser(admin_sub)
    register_audit(sub)
    sub.add_parser("config-doc", help="print the configuration reference (Markdown)")
    return parser


def _metrics_flag(parser: argparse.ArgumentParser, process: str) -> None:
    parser.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT|off",
        help=f"Prometheus /metrics listener, or off (default {DEFAULT_METRICS_LISTEN[process]})",
    )


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    return {
        "listen": getattr(args, "listen", None),
        "plain_http": getattr(args, "plain_http", None),
        "base_url": getattr(args, "base_url", None),
        "dns_resolver": getattr(args, "dns_resolver", None),
        "http01_port": getattr(args, "http01_port", None),
        "allow_loopback_validation": getattr(args, "allow_loopback_validation", None),
        "dnssec": getattr(args, "dnssec", None),
        "test_mode": getattr(args, "test_mode", None),
        "challsrv_http01": getattr(args, "challsrv_http01", None),
        "pebble_config": getattr(args, "pebble_config", None),
        "deterministic": getattr(args, "deterministic", None),
        "ephemeral": getattr(args, "ephemeral", None),
        "challsrv_tlsalpn01": getattr(args, "challsrv_tlsalpn01", None),
        "tlsalpn01_port": getattr(args, "tlsalpn01_port", None),
        "test_perspectives": getattr(args, "test_perspectives", None),
        "remote_va_listen": getattr(args, "remote_va_listen", None),
        "perspective_id": getattr(args, "perspective_id", None),
        "perspective_rir": getattr(args, "perspective_rir", None),
        "tls_cert": getattr(args, "tls_cert", None),
        "tls_key": getattr(args, "tls_key", None),
        "remote_va_client_ca": getattr(args, "remote_va_client_ca", None),
        "metrics_listen": getattr(args, "metrics_listen", None),
        "max_requests_in_flight": getattr(args, "max_requests_in_flight", None),
        "max_connections": getattr(args, "max_connections", None),
        "header_read_timeout_seconds": getattr(args, "header_read_timeout_seconds", None),
        "issuance_lease_seconds": getattr(args, "issuance_lease_seconds", None),
    }


def _failed(process: str, exc: Exception) -> int:
    """A serve or worker process that cannot go on (no HSM token, wrong PIN, missing PKCS#11
    module, database unreachable at start, ...): one JSON error event naming the reason, then
    exit status 1.  Operator-facing errors carry their message only; anything else also its
    traceback, inside the event."""
    from acme_ca.ca.issuers_file import IssuerConfigError
    from acme_ca.ca.signer import SignerError

    expected = isinstance(exc, SignerError | IssuerConfigError | OSError)
    structlog.get_logger(component="acme_ca.cli").error(
        f"{process}.failed",
        reason=str(exc) or type(exc).__name__,
        error_type=type(exc).__name__,
        exc_info=None if expected else exc,
    )
    return 1


def main(argv: Sequence[str] | None = None) -> int:  # noqa: C901 -- flat dispatch, one branch per subcommand
    args = parse_args(argv)
    # This process's own command line (the console script): a long-running command then owns
    # the process until it exits and caches its loggers; called with arguments (tests) never.
    cache_loggers = argv is None
    if args.command == "config-doc":
        sys.stdout.write(config_reference())
        return 0
    if args.command == "mpic-certs":
        return _mpic_certs(args)
    if args.command == "worker" and args.serve_child:
        return _serve_child()
    try:
        config = load_config(args.config, overrides=_overrides(args))
    except ConfigError as exc:
        print(f"acme-ca: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        configure_logging(
            config.log_format, config.log_level, cache_loggers=cache_loggers, process="serve"
        )
        early, keys, spare = None, None, None
        if config.ephemeral:  # PostgreSQL boots, RSA keys are made, while the server imports
            from acme_ca.ca.settings import HierarchySettings
            from acme_ca.db.settings import DatabaseSettings
            from acme_ca.main.early_cluster import EarlyCluster, EarlyKeys
            from acme_ca.testsrv.ephemeral_spare import claim_spare

            early = EarlyCluster(DatabaseSettings.from_config(config).ephemeral_data_root)
            # The hierarchy the last run made for this one; without it, new RSA keys.
            spare = claim_spare(config.home, HierarchySettings.from_config(config))
            keys = EarlyKeys() if spare is None else None
        from acme_ca.main.serve import serve

        try:
            asyncio.run(serve(config, early_cluster=early, early_keys=keys, spare=spare))
        except ConfigError as exc:  # production invariants (docs/production.md), MPIC refusals
            print(f"acme-ca: configuration error: {exc}", file=sys.stderr)
            return 2
        except Exception as exc:
            return _failed("serve", exc)
        finally:
            if early is not None:
                early.abandon()
            if keys is not None:
                keys.close()
            if spare is not None:  # a start that failed before it moved the spare in
                spare.discard()
        return 0
    if args.command == "remote-va":
        configure_logging(config.log_format, config.log_level, cache_loggers=cache_loggers)
        from acme_ca.main.remote_va import run_remote_va
        from acme_ca.remote_va.settings import RemoteVaSettings

        try:
            RemoteVaSettings.from_config(config)
        except ConfigError as exc:
            print(f"acme-ca: configuration error: {exc}", file=sys.stderr)
            return 2
        asyncio.run(run_remote_va(config))
        return 0
    if args.command == "worker":
        configure_logging(
            config.log_format, config.log_level, cache_loggers=cache_loggers, process="worker"
        )
        from acme_ca.main.serve import work

        try:
            asyncio.run(work(config))
        except ConfigError as exc:  # a production deployment failing an invariant
            print(f"acme-ca: configuration error: {exc}", file=sys.stderr)
            return 2
        except Exception as exc:
            return _failed("worker", exc)
        return 0
    configure_logging(config.log_format, config.log_level, stream=sys.stderr)
    if args.command == "check":
        return run_check(config, args)
    if args.command == "init":
        from acme_ca.ca.hierarchy import init_hierarchy
        from acme_ca.ca.settings import HierarchySettings

        path = asyncio.run(init_hierarchy(HierarchySettings.from_config(config)))
        print(f"issuers: {path}")
        print(f"root certificate: {config.pki_path / 'root.pem'}")
        return 0
    if args.command == "db":
        return asyncio.run(_db_migrate(config))
    if args.command == "eab":
        return asyncio.run(run_eab(config, args))
    if args.command == "org":
        actor = f"operator:{getattr(args, 'actor', None) or _operator_name()}"
        return asyncio.run(run_org(config, args, actor))
    if args.command == "admin" and args.admin_command in ADMIN_READ_COMMANDS:
        from acme_ca.admin import commands

        return commands.run(config, args)
    if args.command == "audit":
        from acme_ca.admin import audit

        return audit.run(config, args)
    if args.command == "admin" and args.admin_command == "limits":
        actor = f"operator:{getattr(args, 'actor', None) or _operator_name()}"
        return asyncio.run(run_limits(config, args, actor))
    if args.command == "admin" and args.admin_command == "block-key":
        actor = f"operator:{args.actor or _operator_name()}"
        return asyncio.run(run_block_key(config, args, actor))
    if args.command == "admin":
        return asyncio.run(_admin(config, args))
    return 2  # pragma: no cover - argparse enforces the choices


def _serve_child() -> int:
    """``acme-ca worker --serve-child``: serve's signing worker child, configured by serve
    through its stdin (configuration, database, deployment assessment), not by files,
    variables or flags (acme_ca.main.worker_process)."""
    from acme_ca.main.worker_process import die_with_parent, read_launch, run_child

    try:
        launch = read_launch(sys.stdin.buffer)
        die_with_parent(launch)
    except Exception as exc:
        print(f"acme-ca: worker --serve-child: {exc}", file=sys.stderr)
        return 2
    config = launch.config
    configure_logging(config.log_format, config.log_level, cache_loggers=True, process="worker")
    try:
        asyncio.run(run_child(launch))
    except Exception as exc:
        return _failed("worker", exc)
    return 0


def _mpic_certs(args: argparse.Namespace) -> int:
    from acme_ca.va.mtls import create_mpic_material
    from acme_ca.va.perspectives import valid_perspective_id

    ids: list[str] = []
    extra: dict[str, list[str]] = {}
    for item in args.perspectives.split(","):
        pid, _, names = item.strip().partition("=")
        if not valid_perspective_id(pid) or pid == "ca":
            print(
                f"acme-ca: perspective id {pid!r} must be a lowercase DNS label "
                "(not 'primary' or 'ca')",
                file=sys.stderr,
            )
            return 2
        ids.append(pid)
        extra[pid] = [n for n in names.split("+") if n]
    material = create_mpic_material(args.out, ids, extra_names=extra)
    print(f"channel CA: {material.ca_cert} (keep {material.directory / 'ca.key'} offline)")
    print(f"primary client certificate: {material.primary_cert} key: {material.primary_key}")
    for pid, (cert, key) in material.remotes.items():
        print(f"remote {pid}: certificate {cert} key {key}")
    return 0


async def _db_migrate(config: Config) -> int:
    from acme_ca.db.database import database_dsn, migrate
    from acme_ca.db.settings import DatabaseSettings

    async with database_dsn(DatabaseSettings.from_config(config)) as dsn:
        applied = await migrate(dsn)
    print(f"schema is current; migrations applied now: {applied or 'none'}")
    return 0


def _operator_name() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (containers)
        return f"uid:{os.getuid()}"


async def _admin(config: Config, args: argparse.Namespace) -> int:
    if sum(x is not None for x in (args.serial, args.domain, args.org)) != 1:
        print("acme-ca: admin revoke takes one of SERIAL, --domain and --org", file=sys.stderr)
        return 2
    if args.dry_run and args.serial is not None:
        print("acme-ca: --dry-run goes with --domain or --org", file=sys.stderr)
        return 2
    if args.reason is None and args.org is None:
        print("acme-ca: admin revoke SERIAL or --domain needs --reason", file=sys.stderr)
        return 2
    from acme_ca.clock import SystemClock
    from acme_ca.db.certificates import CertificateRepository
    from acme_ca.db.database import operator_pool
    from acme_ca.db.settings import DatabaseSettings
    from acme_ca.ra.revocation import (
        REASON_CODES,
        REASON_NAMES,
        OperatorRevocation,
        OperatorRevocationError,
        RevocationAuthority,
    )

    actor = f"operator:{args.actor or _operator_name()}"
    reason = REASON_CODES[args.reason or ORG_REVOCATION_REASON]

    def line(r: OperatorRevocation, verb: str) -> str:
        when = r.revoked_at.isoformat() if r.revoked_at else "-"
        return (
            f"{verb}\t{r.serial}\treason={REASON_NAMES.get(r.reason, r.reason)}\t"
            f"revoked_at={when}\taccount={r.account_id}\tnot_after={r.not_after.isoformat()}"
            f"\tnames={','.join(r.names)}"
            + ("\tkey_blocked" if r.key_blocked else "")
            + ("\tprecertificate" if r.precertificate else "")
        )

    async with operator_pool(DatabaseSettings.from_config(config)) as pool:
        authority = RevocationAuthority(CertificateRepository(pool), SystemClock())
        try:
            if args.serial is not None:
                done = [await authority.revoke_serial(args.serial, reason, actor=actor)]
            elif args.domain is not None:
                done = await authority.revoke_domain(
                    args.domain, reason, actor=actor, dry_run=args.dry_run
                )
            else:
                done = await revoke_org_certificates(
                    pool, authority, args.org, reason, actor=actor, dry_run=args.dry_run
                )
        except OperatorRevocationError as exc:
            print(f"acme-ca: {exc}", file=sys.stderr)
            return 1
    for r in done:
        verb = "revoked" if r.revoked else "updated" if r.updated else "already revoked"
        print(line(r, "would revoke" if args.dry_run else verb))
    count = sum(r.revoked or r.updated for r in done)
    if args.serial is None:
        what = "would revoke" if args.dry_run else f"revoked by {actor}:"
        scope = f"under {args.domain}" if args.domain else f"of organization {args.org}"
        print(f"{what} {len(done) if args.dry_run else count} certificate(s) {scope}")
    return 0 if args.serial is None or count else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
