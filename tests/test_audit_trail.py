"""The tamper-evident audit trail (CP 5.4.1, 5.4.3, 5.5.2; issue 16).

``audit_events`` rows are a SHA-256 chain computed by a trigger under the chain head's row
lock; rows refuse UPDATE, DELETE and TRUNCATE; `acme-ca audit verify` recomputes the chain in
Python and names the first row that does not fit; months leave only whole, never before
the retention period; exports are Ed25519-signed JSON Lines; migration 010 carries old rows
over and chains them.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from acme_ca.acme.jsontypes import JsonValue
from acme_ca.admin.audit import (
    export,
    load_signing_key,
    row_of_line,
    run_async,
    signature_line,
    verify_export,
)
from acme_ca.cli import _parser
from acme_ca.clock import Clock, FixedClock, SystemClock
from acme_ca.config import Config, ConfigError
from acme_ca.db.audit import record_event
from acme_ca.db.audit_chain import (
    CHAINS,
    GENESIS,
    REQUESTS_RETIRED_EVENT,
    REQUESTS_TABLE,
    AuditChain,
    chain_rows,
    partitions,
    retire_partitions,
    row_hash,
    verify_chain,
)
from acme_ca.db.migrate import apply_schema
from acme_ca.db.requests import RequestRecorder, RequestRow, requests_where
from acme_ca.embedded_pg import EmbeddedPostgres
from tests.support.cli import run_cli
from tests.support.migrations import create_schema_before

SEVEN_YEARS = timedelta(days=2557)


def utc(year: int, month: int, day: int, hour: int = 0) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


async def add(pool: asyncpg.Pool, event: str, at: datetime, **details: JsonValue) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await record_event(
            conn, event, at=at, actor="test", account_id=1, order_id=2, details=dict(details)
        )


async def audit_command(
    dsn: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    *argv: str,
    clock: Clock | None = None,
) -> tuple[int, str, str]:
    """``acme-ca audit ARGV`` in this process (the console script itself is run once, by
    the altered-row test): exit status, standard output and standard error."""
    config = replace(Config(), database_url=dsn, home=tmp_path / "home")
    capsys.readouterr()
    status = await run_async(config, _parser().parse_args(["audit", *argv]), clock or SystemClock())
    captured = capsys.readouterr()
    return status, captured.out, captured.err


async def tamper(pool: asyncpg.Pool, sql: str, *args: object) -> None:
    """Run ``sql`` as the superuser with triggers off: what an attacker with the database
    could do, and what the chain must expose."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute(sql, *args)


async def test_cp_5_4_1_rows_chain_from_genesis_and_verify(pool: asyncpg.Pool) -> None:
    for i in range(5):
        await add(pool, f"e.{i}", datetime.now(UTC), n=i, text='héllo\n"quoted"')
    rows = [r async for r in AuditChain(pool).rows()]
    # Order 2's rows are chain 2 (order_id % CHAINS), at positions 1..5.
    assert {r.chain for r in rows} == {2}
    assert [(r.id, r.seq) for r in rows] == [(i, i) for i in range(1, 6)]
    assert rows[0].prev_hash == GENESIS
    for before, after in itertools.pairwise(rows):
        assert after.prev_hash == before.hash
    # The Python content encoding is the trigger's, byte for byte.
    assert all(row_hash(r.prev_hash, r) == r.hash for r in rows)
    report = await verify_chain(pool)
    assert report.ok and report.rows == 5 and report.anchor == "genesis"


async def test_cp_5_4_1_chain_rows_read_in_batches_miss_and_repeat_no_row(
    pool: asyncpg.Pool,
) -> None:
    """Keyset batches (db.pool.rows_by_id): a batch boundary on a row, and a short last batch."""
    for i in range(5):
        await add(pool, f"e.{i}", utc(2026, 1, 1, i))
    ids = [1, 2, 3, 4, 5]
    for batch in (1, 2, 5, 6):
        assert [r.id async for r in chain_rows(pool, batch=batch)] == ids
    window = chain_rows(pool, since=utc(2026, 1, 1, 1), until=utc(2026, 1, 1, 4), batch=2)
    assert [r.event async for r in window] == ["e.1", "e.2", "e.3"]


async def test_cp_5_4_1_audit_verify_names_a_row_altered_in_the_database(
    pool: asyncpg.Pool, dsn: str, tmp_path: Path
) -> None:
    for i in range(4):
        await add(pool, "order.created", datetime.now(UTC), n=i)
    third = 3
    await tamper(pool, "UPDATE audit_events SET details = '{\"n\": 99}' WHERE id = $1", third)
    report = await verify_chain(pool)
    assert report.broken is not None and report.broken.id == third
    assert "altered" in report.broken.reason
    status, out, _ = await run_cli(dsn, tmp_path, "audit", "verify")
    assert status == 1 and f"BROKEN at row {third}" in out, out


async def test_cp_5_4_1_audit_verify_finds_a_deleted_row_and_a_cut_tail(
    pool: asyncpg.Pool,
) -> None:
    for i in range(5):
        await add(pool, "order.created", datetime.now(UTC), n=i)
    ids = [1, 2, 3, 4, 5]
    await tamper(pool, "DELETE FROM audit_events WHERE id = $1", ids[1])
    report = await verify_chain(pool)
    assert report.broken is not None and report.broken.id == ids[2]
    assert "removed or altered" in report.broken.reason

    await tamper(pool, "DELETE FROM audit_events WHERE id >= $1", ids[1])
    report = await verify_chain(pool)
    assert report.broken is not None and "removed from the end" in report.broken.reason


async def test_cp_5_4_1_audit_rows_refuse_update_delete_truncate(pool: asyncpg.Pool) -> None:
    await add(pool, "order.created", datetime.now(UTC))
    for sql in (
        "UPDATE audit_events SET actor = 'someone else'",
        "DELETE FROM audit_events",
        "TRUNCATE audit_events",
        "TRUNCATE audit_events_default",
        "UPDATE audit_chain_head SET last_id = 0",
        "DELETE FROM audit_chain_head",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await pool.execute(sql)
    for name in [p.name for p in await partitions(pool)]:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await pool.execute(f'TRUNCATE "{name}"')
    # Straight at the month's partition, too.
    holder = await pool.fetchval("SELECT tableoid::regclass::text FROM audit_events")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await pool.execute(f'DELETE FROM "{holder}"')
    assert (await verify_chain(pool)).ok


async def test_cp_5_4_1_concurrent_writers_chain_in_commit_order(pool: asyncpg.Pool) -> None:
    """Writers racing (each holding its transaction open a moment after its row) still leave
    one unbroken chain with gapless ids; a rolled-back writer leaves no trace in it."""

    async def writer(i: int) -> None:
        async with pool.acquire() as conn, conn.transaction():
            await record_event(conn, "race", at=datetime.now(UTC), actor=f"w{i}")
            await asyncio.sleep(0.01)

    async def rolled_back() -> None:
        with pytest.raises(RuntimeError):
            async with pool.acquire() as conn, conn.transaction():
                await record_event(conn, "never", at=datetime.now(UTC), actor="x")
                raise RuntimeError

    await asyncio.gather(*(writer(i) for i in range(8)), rolled_back())
    rows = [r async for r in AuditChain(pool).rows()]
    # No order or account: chain 0, positions 1..8 without a gap (the rolled-back writer's id
    # is skipped, its position is not), ids growing along the chain.
    assert [r.seq for r in rows] == list(range(1, 9))
    assert [r.id for r in rows] == sorted(r.id for r in rows)
    assert "never" not in {r.event for r in rows}
    assert (await verify_chain(pool)).ok


async def test_cp_5_4_3_retention_moves_whole_months_never_before_seven_years(
    pool: asyncpg.Pool, dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    chain = AuditChain(pool)
    await chain.ensure_partitions(utc(2018, 1, 1), months=3)  # Jan..Mar 2018
    await add(pool, "old.jan", utc(2018, 1, 15))
    await add(pool, "old.feb", utc(2018, 2, 27))
    await add(pool, "old.mar", utc(2018, 3, 31, 23))
    now = utc(2025, 2, 14)  # 2557 days back: 2018-02-12, inside February
    assert not await retire_partitions(pool, utc(2025, 1, 31), SEVEN_YEARS, actor="t")
    retired = await retire_partitions(pool, now, SEVEN_YEARS, actor="test", dry_run=True)
    assert [(p.name, p.rows, p.archived_as) for p in retired] == [
        ("audit_events_y2018m01", 1, None)
    ]
    retired = await retire_partitions(pool, now, SEVEN_YEARS, actor="test")
    assert [(p.name, p.archived_as) for p in retired] == [
        ("audit_events_y2018m01", "audit_archive.audit_events_y2018m01")
    ]
    # February is partly younger than seven years: it stays, as does every later month.
    names = [p.name for p in await partitions(pool)]
    assert "audit_events_y2018m01" not in names and "audit_events_y2018m02" in names
    archived = await pool.fetch("SELECT event FROM audit_archive.audit_events_y2018m01")
    assert [r["event"] for r in archived] == ["old.jan"]
    events = [r.event async for r in chain.rows()]
    assert events == ["old.feb", "old.mar", "audit.partition_retired"]
    # The chain still verifies across the gap, anchored by the retirement row.
    report = await verify_chain(pool)
    assert report.ok, report
    # Order 2's chain continues from the retired January row; the retirement row (no
    # order, no account) starts chain 0 at genesis.
    assert report.anchor == "genesis, retired row 1"
    # The command on a clock of 2026-12-03: both 2018 months are past seven years, this
    # month is not; a dry run lists them and moves nothing.
    status, out, _ = await audit_command(
        dsn, tmp_path, capsys, "retention", "--dry-run", clock=FixedClock(utc(2026, 12, 3))
    )
    assert status == 0 and "would move 2 month(s)" in out, out
    assert "audit_events_y2018m03" in out
    assert "audit_events_y2018m02" in [p.name for p in await partitions(pool)]


def test_cp_5_4_3_retention_below_seven_years_is_refused() -> None:
    """One key for audit rows and stored requests (the retention command moves both)."""
    with pytest.raises(ConfigError, match="audit_retention_days"):
        replace(Config(), audit_retention_days=365).validate()
    assert Config().audit_retention_days >= 7 * 365 + 2  # any 7 years hold at most 2 leap days


async def store_request(pool: asyncpg.Pool, at: datetime, request_id: str) -> None:
    recorder = RequestRecorder(pool)
    recorder.record(RequestRow(at, "POST", "/acme/new-order", 201, None, 1.0, "t", None,
                               request_id, account_id=1, order_id=2))  # fmt: skip
    assert await recorder.flush() == 1


async def test_cp_5_4_3_retention_moves_requests_months_never_before_seven_years(
    pool: asyncpg.Pool, dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Stored requests are the RA's record too: their months leave whole, to audit_archive,
    only past the same retention, and the move is an audit row that leaves the chain whole."""
    await AuditChain(pool).ensure_partitions(utc(2018, 1, 1), months=3)  # Jan..Mar 2018
    assert [p.name for p in await partitions(pool, "requests")][:3] == [
        "requests_y2018m01", "requests_y2018m02", "requests_y2018m03",
    ]  # fmt: skip
    await store_request(pool, utc(2018, 1, 15), "jan")
    await store_request(pool, utc(2018, 2, 27), "feb")
    await store_request(pool, utc(2026, 11, 30), "recent")
    with pytest.raises(ValueError, match=r"CP 5\.4\.3"):
        await retire_partitions(
            pool, utc(2025, 2, 14), timedelta(days=2556), actor="t", table=REQUESTS_TABLE
        )
    assert not await retire_partitions(
        pool, utc(2025, 1, 31), SEVEN_YEARS, actor="t", table=REQUESTS_TABLE
    )
    retired = await retire_partitions(
        pool, utc(2025, 2, 14), SEVEN_YEARS, actor="op", table=REQUESTS_TABLE
    )
    assert [(p.name, p.rows, p.archived_as) for p in retired] == [
        ("requests_y2018m01", 1, "audit_archive.requests_y2018m01")
    ]
    archived = await pool.fetch("SELECT request_id FROM audit_archive.requests_y2018m01")
    assert [r["request_id"] for r in archived] == ["jan"]
    live = await requests_where(pool, order_id=2)
    assert [r.request_id for r in live] == ["feb", "recent"]
    row = await pool.fetchrow(
        "SELECT actor, details FROM audit_events WHERE event = $1", REQUESTS_RETIRED_EVENT
    )
    assert row is not None and row["actor"] == "op"
    assert row["details"]["rows"] == 1 and row["details"]["partition"] == "requests_y2018m01"
    assert (await verify_chain(pool)).ok
    # The command, on a clock of 2026-12-03, moves February's requests with the audit months
    # and keeps last month's.
    status, out, _ = await audit_command(
        dsn, tmp_path, capsys, "retention", clock=FixedClock(utc(2026, 12, 3))
    )
    assert status == 0 and "requests_y2018m02" in out and "requests_y2018m03" in out, out
    assert [r.request_id for r in await requests_where(pool, order_id=2)] == ["recent"]


async def test_cp_5_4_3_export_is_signed_and_verifies(pool: asyncpg.Pool, tmp_path: Path) -> None:
    await add(pool, "before", utc(2026, 10, 31, 23))
    for i in range(3):
        await add(pool, "in", utc(2026, 11, 2 + i), i=i)
    await add(pool, "after", utc(2026, 12, 1))
    key = load_signing_key(tmp_path / "audit" / "key.pem", create=True)
    assert (tmp_path / "audit" / "key.pem").stat().st_mode & 0o777 == 0o600
    path = tmp_path / "nov.jsonl"
    with path.open("w") as out:
        count = await export(AuditChain(pool), utc(2026, 11, 1), utc(2026, 12, 1), key, out)
    assert count == 3
    lines = path.read_text().splitlines()
    assert [json.loads(x)["event"] for x in lines[:-1]] == ["in", "in", "in"]
    assert json.loads(lines[-1])["signature"]["algorithm"] == "Ed25519"
    assert verify_export(path, key.public_key()) is None
    # Another key, or one changed byte, and it fails.
    assert "signature" in (verify_export(path, Ed25519PrivateKey.generate().public_key()) or "")
    altered = tmp_path / "altered.jsonl"
    altered.write_text(path.read_text().replace('"i":1', '"i":7', 1))
    assert "altered" in (verify_export(altered, key.public_key()) or "")


async def test_cp_5_4_3_audit_export_command_round_trip(
    pool: asyncpg.Pool, dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await add(pool, "order.created", utc(2026, 11, 3))
    out = tmp_path / "export.jsonl"
    status, _, err = await audit_command(
        dsn, tmp_path, capsys, "export", "--since", "2026-11-01", "--until", "2026-12-01",
        "--out", str(out),
    )  # fmt: skip
    assert status == 0 and "exported 1 audit rows" in err, err
    assert (tmp_path / "home" / "audit" / "export-ed25519.pem").is_file()
    status, text, _ = await audit_command(dsn, tmp_path, capsys, "verify", "--export", str(out))
    assert status == 0 and "signature and chain OK" in text, text


async def test_migration_013_keeps_stored_requests_by_month(postgres: EmbeddedPostgres) -> None:
    dsn = postgres.create_database(f"m_{os.urandom(8).hex()}")
    conn = await asyncpg.connect(dsn)
    try:
        await create_schema_before(conn, 13)
        # The requests table as schema.sql made it before 013.
        await conn.execute(
            """CREATE TABLE requests (
                 id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, at timestamptz NOT NULL,
                 method text NOT NULL, path text NOT NULL, status smallint NOT NULL,
                 problem text, duration_ms real NOT NULL, user_agent text NOT NULL DEFAULT '',
                 source text, request_id text NOT NULL, account_id bigint, order_id bigint,
                 authz_id bigint, challenge_id bigint, certificate_id bigint);
               CREATE INDEX requests_request_id ON requests (request_id);
               INSERT INTO requests (at, method, path, status, duration_ms, request_id, order_id)
               VALUES ('2025-03-04T05:06:07Z', 'POST', '/a', 201, 2.5, 'old', 7),
                      ('2026-11-30T00:00:00Z', 'POST', '/b', 200, 1.0, 'new', 7)"""
        )
        await apply_schema(conn)
        rows = await conn.fetch(
            "SELECT id, request_id, tableoid::regclass::text AS part FROM requests ORDER BY id"
        )
        assert [(r["id"], r["request_id"], r["part"]) for r in rows] == [
            (1, "old", "requests_y2025m03"),
            (2, "new", "requests_y2026m11"),
        ]
        await conn.execute(
            "INSERT INTO requests (at, method, path, status, duration_ms, request_id) "
            "VALUES (now(), 'GET', '/c', 200, 1.0, 'after')"
        )
        assert await conn.fetchval("SELECT max(id) FROM requests") == 3
    finally:
        await conn.close()


async def test_migration_010_chains_existing_audit_rows(postgres: EmbeddedPostgres) -> None:
    dsn = postgres.create_database(f"m_{os.urandom(8).hex()}")
    conn = await asyncpg.connect(dsn)
    try:
        await create_schema_before(conn, 10)
        await conn.execute(
            """INSERT INTO audit_events (at, event, actor, account_id, order_id, request_id,
                                         details)
               VALUES ('2024-02-03T04:05:06.123456Z', 'order.created', 'account:1', 1, 7,
                       'abc', '{"b": [1, 2], "a": "x"}'),
                      ('2026-11-30T00:00:00Z', 'certificate.issued', 'ca', 1, 7, NULL, '{}')"""
        )
        # A gap in the old ids (a rolled-back insert) is carried over as it is.
        await conn.execute("SELECT nextval(pg_get_serial_sequence('audit_events', 'id'))")
        await conn.execute(
            "INSERT INTO audit_events (at, event, actor) VALUES (now(), 'eab.created', 'op')"
        )
        await apply_schema(conn)
        rows = await conn.fetch(
            "SELECT id, event, tableoid::regclass::text AS part FROM audit_events ORDER BY id"
        )
        assert [(r["id"], r["event"]) for r in rows] == [
            (1, "order.created"),
            (2, "certificate.issued"),
            (4, "eab.created"),
        ]
        assert rows[0]["part"] == "audit_events_y2024m02"
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("UPDATE audit_events SET actor = 'x'")
        await conn.execute(
            "INSERT INTO audit_events (at, event, actor) VALUES (now(), 'after', 'op')"
        )
        assert await conn.fetchval("SELECT max(id) FROM audit_events") == 5
    finally:
        await conn.close()
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    try:
        assert (await verify_chain(pool)).ok
    finally:
        await pool.close()


# --- several chains (issue 20) ------------------------------------------------------------


async def add_for(
    pool: asyncpg.Pool, event: str, order_id: int | None, **details: JsonValue
) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await record_event(
            conn, event, at=datetime.now(UTC), actor="test", order_id=order_id, details=details
        )


async def test_cp_5_4_1_writers_of_other_chains_do_not_wait_for_a_commit(
    pool: asyncpg.Pool,
) -> None:
    """A transaction holding its audit row open blocks only writers of its own chain
    (order_id % CHAINS): another order's row is chained at once, and the chain that waited
    goes on after the commit, every chain unbroken."""
    async with pool.acquire() as holder, holder.transaction():
        await record_event(holder, "held", at=datetime.now(UTC), actor="t", order_id=1)
        async with pool.acquire() as other:
            await other.execute("SET lock_timeout = '5s'")
            await record_event(other, "other.chain", at=datetime.now(UTC), actor="t", order_id=2)
            await other.execute("SET lock_timeout = '200ms'")
            with pytest.raises(asyncpg.LockNotAvailableError):
                async with other.transaction():
                    await record_event(
                        other, "same.chain", at=datetime.now(UTC), actor="t", order_id=1 + CHAINS
                    )
            await other.execute("RESET lock_timeout")
    await add_for(pool, "same.chain", 1 + CHAINS)
    rows = [r async for r in AuditChain(pool).rows()]
    assert [(r.event, r.chain, r.seq) for r in rows] == [
        ("other.chain", 2, 1),
        ("held", 1, 1),
        ("same.chain", 1, 2),
    ] or [(r.event, r.chain, r.seq) for r in rows] == [
        ("held", 1, 1),
        ("other.chain", 2, 1),
        ("same.chain", 1, 2),
    ]
    assert rows[-1].prev_hash == next(r.hash for r in rows if r.event == "held")
    report = await verify_chain(pool)
    assert report.ok and report.rows == 3 and report.anchor == "genesis", report


async def test_cp_5_4_1_audit_verify_finds_a_cut_tail_and_a_moved_row_in_any_chain(
    pool: asyncpg.Pool,
) -> None:
    for i in range(3):
        await add_for(pool, "a", 1, i=i)
        await add_for(pool, "b", 2, i=i)
    await add_for(pool, "c", 3)
    assert (await verify_chain(pool)).ok
    by_chain = {
        chain: [r async for r in AuditChain(pool).rows() if r.chain == chain] for chain in (1, 2, 3)
    }
    # A row moved into another chain breaks both.
    moved = by_chain[2][1]
    await tamper(pool, "UPDATE audit_events SET chain = 1 WHERE id = $1", moved.id)
    report = await verify_chain(pool)
    assert report.broken is not None and report.broken.id == moved.id
    await tamper(pool, "UPDATE audit_events SET chain = 2 WHERE id = $1", moved.id)
    assert (await verify_chain(pool)).ok
    # Every row of chain 3 removed: its head still names one.
    await tamper(pool, "DELETE FROM audit_events WHERE chain = 3")
    report = await verify_chain(pool)
    assert report.broken is not None and "head of chain 3" in report.broken.reason, report
    assert "its last row is none" in report.broken.reason
    # The last row of chain 1 removed: its head names it.
    await tamper(pool, "DELETE FROM audit_events WHERE id = $1", by_chain[1][-1].id)
    report = await verify_chain(pool)
    assert report.broken is not None and "head of chain 1" in report.broken.reason, report
    assert "removed from the end" in report.broken.reason


async def test_cp_5_4_3_retention_bridges_retired_rows_in_the_middle_of_a_chain(
    pool: asyncpg.Pool,
) -> None:
    """A row dated in a retired month may be chained after a younger row (clocks of two
    processes): its retirement leaves a gap inside the chain, which the retirement row's
    runs (the hash each run went on from, and its last row's) bridge."""
    chain = AuditChain(pool)
    await chain.ensure_partitions(utc(2018, 1, 1), months=3)
    await add(pool, "jan", utc(2018, 1, 15))
    await add(pool, "feb", utc(2018, 2, 20))
    await add(pool, "late.jan", utc(2018, 1, 31, 23))  # chained after feb
    await add(pool, "mar", utc(2018, 3, 2))
    retired = await retire_partitions(pool, utc(2025, 2, 14), SEVEN_YEARS, actor="test")
    assert [(p.name, p.rows) for p in retired] == [("audit_events_y2018m01", 2)]
    runs = await pool.fetchval(
        "SELECT details->'chain_runs' FROM audit_events WHERE event = 'audit.partition_retired'"
    )
    assert [(r["chain"], r["first"], r["last"]) for r in runs] == [(2, 1, 1), (2, 3, 3)]
    assert [r.event async for r in chain.rows()] == ["feb", "mar", "audit.partition_retired"]
    report = await verify_chain(pool)
    assert report.ok, report
    # A live row removed next to the gap is not bridged by it.
    feb = await pool.fetchval("SELECT id FROM audit_events WHERE event = 'feb'")
    await tamper(pool, "DELETE FROM audit_events WHERE id = $1", feb)
    report = await verify_chain(pool)
    assert report.broken is not None and not report.ok


async def test_migration_014_spreads_new_rows_over_chains_and_keeps_the_old_one(
    postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    dsn = postgres.create_database(f"m_{os.urandom(8).hex()}")
    conn = await asyncpg.connect(dsn)
    try:
        await create_schema_before(conn, 14)
        for i in range(3):
            await conn.execute(
                "INSERT INTO audit_events (at, event, actor, order_id) "
                "VALUES (now(), $1, 'op', $2)",
                f"old.{i}",
                i + 1,
            )
        old_head = await conn.fetchrow("SELECT last_id, last_hash FROM audit_chain_head")
        await apply_schema(conn)
        old = await conn.fetch("SELECT id, chain, seq FROM audit_events ORDER BY id")
        assert [(r["id"], r["chain"], r["seq"]) for r in old] == [
            (1, 0, None),
            (2, 0, None),
            (3, 0, None),
        ]
        heads = await conn.fetch(
            "SELECT chain, last_id, last_seq FROM audit_chain_head ORDER BY chain"
        )
        assert [(h["chain"], h["last_id"], h["last_seq"]) for h in heads] == [(0, 3, 3)] + [
            (k, 0, 0) for k in range(1, CHAINS)
        ]
        await conn.execute(
            "INSERT INTO audit_events (at, event, actor) VALUES (now(), 'new.none', 'op')"
        )
        await conn.execute(
            "INSERT INTO audit_events (at, event, actor, order_id) VALUES (now(), 'new.7', 'op', 7)"
        )
        new = await conn.fetch(
            "SELECT id, chain, seq, prev_hash FROM audit_events "
            "WHERE event LIKE 'new.%' ORDER BY id"
        )
        assert [(r["id"], r["chain"], r["seq"]) for r in new] == [(4, 0, 4), (5, 7, 1)]
        assert bytes(new[0]["prev_hash"]) == bytes(old_head["last_hash"])
        assert bytes(new[1]["prev_hash"]) == GENESIS
    finally:
        await conn.close()
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    try:
        assert (await verify_chain(pool)).ok
        key = load_signing_key(tmp_path / "key.pem", create=True)
        path = tmp_path / "all.jsonl"
        with path.open("w") as out:
            assert await export(AuditChain(pool), utc(2000, 1, 1), utc(2100, 1, 1), key, out) == 5
        assert verify_export(path, key.public_key()) is None
        # The link across the migration (old id 3, then chain 0's position 4) is checked:
        # a file whose fourth row (re-hashed, re-signed) names another predecessor fails.
        rows = [json.loads(x) for x in path.read_text().splitlines()[:-1]]
        fourth = rows[3]
        assert (fourth["chain"], fourth["seq"]) == (0, 4)
        fourth["prev_hash"] = "11" * 32
        fourth["hash"] = row_hash(bytes(32 * [0x11]), row_of_line(fourth)).hex()
        forged = tmp_path / "forged.jsonl"
        _write_signed(forged, rows, key)
        assert "not linked to row 3" in (verify_export(forged, key.public_key()) or "")
    finally:
        await pool.close()


def _write_signed(path: Path, rows: list[dict[str, JsonValue]], key: Ed25519PrivateKey) -> None:
    """An export file of ``rows`` signed by ``key`` as :func:`export` signs one."""
    body = "".join(json.dumps(r, separators=(",", ":"), ensure_ascii=False) + "\n" for r in rows)
    path.write_text(body + signature_line(key, hashlib.sha256(body.encode()).digest()))


async def test_cp_5_4_1_transactions_writing_rows_of_two_chains_never_deadlock(
    pool: asyncpg.Pool,
) -> None:
    """A transaction's rows join its first row's chain, so two transactions writing rows for
    the same two orders in opposite order (a revocation with a key block, say) each hold one
    head and both commit, instead of PostgreSQL aborting one for a deadlock."""
    first_rows = asyncio.Event()
    both_started = 0

    async def writer(orders: tuple[int, int]) -> None:
        nonlocal both_started
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SET LOCAL deadlock_timeout = '100ms'")
            await record_event(conn, "first", at=datetime.now(UTC), actor="t", order_id=orders[0])
            both_started += 1
            if both_started == 2:
                first_rows.set()
            await asyncio.wait_for(first_rows.wait(), 5)
            await record_event(conn, "second", at=datetime.now(UTC), actor="t", order_id=orders[1])

    await asyncio.wait_for(asyncio.gather(writer((1, 2)), writer((2, 1))), 10)
    rows = [r async for r in AuditChain(pool).rows()]
    assert sorted((r.chain, r.order_id, r.seq) for r in rows) == [
        (1, 1, 1), (1, 2, 2), (2, 1, 2), (2, 2, 1),
    ]  # fmt: skip
    assert (await verify_chain(pool)).ok
