"""The audit trail's integrity and lifetime: the hash chain, its verification, its months.

Every ``audit_events`` row carries ``hash = SHA-256(prev_hash || content)``, chained by the
``acme_ca_audit_chain`` trigger (schema.sql, "The audit trail") to the previous row of its
chain: one of :data:`CHAINS`, ``coalesce(order_id, account_id, 0) % CHAINS`` of the first
audit row of its transaction (one chain per transaction: no deadlock on the heads). The
trigger takes the row lock of that chain's ``audit_chain_head`` row, so concurrent writers
of a chain chain in commit order while writers of other chains do not wait (issue 20). Ids
(a sequence, taken under the chain's lock) grow along each chain and, across chains, follow
about the order rows were written; ``seq`` is a row's gapless position in its chain (NULL
for rows written before migration 014: their position is their id). :func:`content_bytes`
is the same content computed here, so :func:`verify_chain` recomputes every hash without
trusting the database's function. Rows never change (UPDATE, DELETE and
TRUNCATE are refused by triggers); a month leaves only whole, by :func:`retire_partitions`,
once all of it is older than the retention period (CP 5.4.3, 5.5.2: seven years), and that
move is itself an audit row recording the retired runs of each chain and their end hashes,
so every chain stays checkable across it. The stored ``requests`` (db/requests.py) are part
of the same record and are kept the same way, by month, with the same period
(:func:`retire_partitions`, ``table=REQUESTS_TABLE``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import cached_property

import asyncpg
import structlog

from acme_ca.acme.jsontypes import JsonValue
from acme_ca.db.audit import record_event
from acme_ca.db.pool import rows_by_id

GENESIS = bytes(32)
"""``prev_hash`` of each chain's first row."""
CHAINS = 8
"""How many chains the audit rows are spread over (schema.sql's trigger and head rows)."""
ARCHIVE_SCHEMA = "audit_archive"
RETIRED_EVENT = "audit.partition_retired"
REQUESTS_RETIRED_EVENT = "requests.partition_retired"
"""Its own event: :func:`verify_chain` reads ``audit.partition_retired`` rows as chain ids."""
RETENTION_FLOOR = timedelta(days=2557)
"""CP 5.4.3, 5.5.2: seven years (2557 days hold any seven years); config refuses less too."""
AUDIT_TABLE = "audit_events"
REQUESTS_TABLE = "requests"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PARTITION = re.compile(r"^(audit_events|requests)_y(\d{4})m(\d{2})$")
_BATCH = 5000
log = structlog.get_logger(component="acme_ca.db.audit_chain")


@dataclass(frozen=True)
class ChainRow:
    """One audit row with its chain fields; ``details_text`` is jsonb's canonical text."""

    id: int
    at: datetime
    event: str
    actor: str
    account_id: int | None
    order_id: int | None
    request_id: str | None
    details_text: str
    prev_hash: bytes
    hash: bytes
    chain: int = 0
    """Which chain the row joined (not hashed: the links bind a row to its chain)."""
    seq: int | None = None
    """Its position in the chain; None for rows from before migration 014 (see position)."""

    @property
    def position(self) -> int:
        """The row's position in its chain: ``seq``, or the id of a row written when there
        was one chain, whose ids were its positions."""
        return self.id if self.seq is None else self.seq

    @cached_property
    def details(self) -> dict[str, JsonValue]:
        """``details_text`` parsed (the operator tools' reading of the row)."""
        parsed: dict[str, JsonValue] = json.loads(self.details_text)
        return parsed


def _field(value: str | None) -> bytes:
    if value is None:
        return b"-"
    raw = value.encode()
    return str(len(raw)).encode() + b":" + raw


def _micros(at: datetime) -> int:
    return (at - _EPOCH) // timedelta(microseconds=1)


def content_bytes(row: ChainRow) -> bytes:
    """The hashed content of ``row``, as schema.sql's ``acme_ca_audit_hash`` builds it."""
    parts = (
        str(row.id),
        str(_micros(row.at)),
        row.event,
        row.actor,
        None if row.account_id is None else str(row.account_id),
        None if row.order_id is None else str(row.order_id),
        row.request_id,
        row.details_text,
    )
    return b"".join(_field(p) for p in parts)


def row_hash(prev_hash: bytes, row: ChainRow) -> bytes:
    return hashlib.sha256(prev_hash + content_bytes(row)).digest()


_COLUMNS = (
    "id, at, event, actor, account_id, order_id, request_id, details::text AS details_text, "
    "prev_hash, hash, chain, seq"
)
AUDIT_ROWS = f"SELECT {_COLUMNS} FROM audit_events"  # noqa: S608 - constant names


def chain_row(r: asyncpg.Record) -> ChainRow:
    """The :class:`ChainRow` of a row selected by :data:`AUDIT_ROWS`."""
    return ChainRow(
        id=r["id"],
        at=r["at"],
        event=r["event"],
        actor=r["actor"],
        account_id=r["account_id"],
        order_id=r["order_id"],
        request_id=r["request_id"],
        details_text=r["details_text"],
        prev_hash=bytes(r["prev_hash"]),
        hash=bytes(r["hash"]),
        chain=r["chain"],
        seq=r["seq"],
    )


async def chain_rows(
    pool: asyncpg.Pool,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    batch: int = _BATCH,
) -> AsyncIterator[ChainRow]:
    """Rows in chain (id) order, ``since <= at < until`` when given, read in batches by id."""
    query = (
        AUDIT_ROWS + " WHERE id > $1 "
        "AND ($2::timestamptz IS NULL OR at >= $2) AND ($3::timestamptz IS NULL OR at < $3) "
        "ORDER BY id LIMIT $4"
    )
    async for r in rows_by_id(pool, query, since, until, batch=batch):
        yield chain_row(r)


@dataclass(frozen=True)
class ChainBreak:
    """The first row that does not fit its chain, and why."""

    id: int
    reason: str


@dataclass(frozen=True)
class ChainReport:
    rows: int
    first_id: int | None
    last_id: int | None
    anchor: str
    """What each chain's first row's ``prev_hash`` was checked against."""
    broken: ChainBreak | None

    @property
    def ok(self) -> bool:
        return self.broken is None


@dataclass(frozen=True)
class RetiredRun:
    """Rows of one chain retired with an archived month, linked one to the next: the hash
    the run continued from and the hash (and id) of its last row."""

    chain: int
    first: int
    last: int
    entry_hash: bytes
    last_hash: bytes

    def to_json(self) -> dict[str, JsonValue]:
        return {
            "chain": self.chain,
            "first": self.first,
            "last": self.last,
            "prev_hash": self.entry_hash.hex(),
            "last_hash": self.last_hash.hex(),
        }


class _Retired:
    """The retired runs (from the ``audit.partition_retired`` rows), by chain and entry hash:
    a live row may continue from a run's last hash when the runs bridge from its chain's
    previous live row (or from GENESIS) to it."""

    def __init__(self, runs: Sequence[RetiredRun]) -> None:
        self._by_entry = {(r.chain, r.entry_hash): r for r in runs}

    def bridge(self, chain: int, start: bytes, end: bytes) -> RetiredRun | None:
        """The last of the retired runs leading from ``start`` to ``end`` in ``chain``, or
        None when no such runs were retired."""
        run = self._by_entry.get((chain, start))
        seen = 0
        while run is not None and seen <= len(self._by_entry):
            if run.last_hash == end:
                return run
            run = self._by_entry.get((chain, run.last_hash))
            seen += 1
        return None


async def _retired(pool: asyncpg.Pool) -> _Retired:
    runs: list[RetiredRun] = []
    for r in await pool.fetch(
        "SELECT details FROM audit_events WHERE event = $1 ORDER BY id", RETIRED_EVENT
    ):
        details = r["details"]
        if isinstance(details, str):  # a pool without the JSON codecs (db/pool.py)
            details = json.loads(details)
        for run in details.get("chain_runs", []):
            runs.append(
                RetiredRun(
                    chain=int(run["chain"]),
                    first=int(run["first"]),
                    last=int(run["last"]),
                    entry_hash=bytes.fromhex(run["prev_hash"]),
                    last_hash=bytes.fromhex(run["last_hash"]),
                )
            )
    return _Retired(runs)


async def verify_chain(pool: asyncpg.Pool) -> ChainReport:
    """Recompute every row's hash and every chain's links; the first row that does not fit
    is named.

    Each chain starts at GENESIS; a row links to the previous live row of its chain, or, where
    rows between them (or before the first) were retired with archived months, to the last
    of the retired runs that lead on from it. Each chain head must name its chain's last row
    (or, with no live rows, the end of what was retired), so rows removed from the end of
    any chain are found too.
    """
    retired = await _retired(pool)
    count = 0
    first_id: int | None = None
    last_id: int | None = None
    anchors: set[str] = set()
    last: dict[int, ChainRow] = {}

    def broken(row_id: int, reason: str) -> ChainReport:
        return ChainReport(count, first_id, row_id, _anchor(anchors), ChainBreak(row_id, reason))

    async for row in chain_rows(pool):
        count += 1
        first_id = row.id if first_id is None else first_id
        last_id = row.id
        prev = last.get(row.chain)
        start = GENESIS if prev is None else prev.hash
        if row.prev_hash != start:
            run = retired.bridge(row.chain, start, row.prev_hash)
            if run is None:
                if prev is None:
                    return broken(row.id, f"first row of chain {row.chain} has no anchor")
                return broken(
                    row.id,
                    f"prev_hash does not match the hash of row {prev.id}, the one before it "
                    f"in chain {row.chain}: a row between them was removed or altered",
                )
            if prev is None:
                anchors.add(f"retired row {run.last}")
        elif prev is None:
            anchors.add("genesis")
        if row_hash(row.prev_hash, row) != row.hash:
            return broken(row.id, "content does not match its hash: the row was altered")
        last[row.chain] = row
    heads = await pool.fetch(
        "SELECT chain, last_id, last_hash FROM audit_chain_head ORDER BY chain"
    )
    for head in heads:
        chain, head_hash = head["chain"], bytes(head["last_hash"])
        tail = last.get(chain)
        if tail is not None and (head["last_id"], head_hash) == (tail.id, tail.hash):
            continue
        if tail is None and (
            head_hash == GENESIS or retired.bridge(chain, GENESIS, head_hash) is not None
        ):
            continue
        return broken(
            head["last_id"],
            f"the head of chain {chain} names row {head['last_id']} but its last row is "
            f"{'none' if tail is None else tail.id}: rows were removed from the end",
        )
    return ChainReport(count, first_id, last_id, _anchor(anchors), None)


def _anchor(anchors: set[str]) -> str:
    """How the chains were anchored: ``genesis`` when every one starts at GENESIS."""
    if not anchors:
        return "genesis"
    return ", ".join(sorted(anchors, key=lambda a: (a != "genesis", a)))


# --- months: partitions and retention ---------------------------------------------------


@dataclass(frozen=True)
class Partition:
    name: str
    start: datetime
    end: datetime


def _month_after(start: datetime) -> datetime:
    return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)


async def partitions(pool: asyncpg.Pool, table: str = AUDIT_TABLE) -> list[Partition]:
    """``table``'s live monthly partitions, oldest first (the default partition is not one)."""
    found: list[Partition] = []
    for r in await pool.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = $1::regclass",
        table,
    ):
        match = _PARTITION.match(r["relname"])
        if match and match[1] == table:
            start = datetime(int(match[2]), int(match[3]), 1, tzinfo=UTC)
            found.append(Partition(r["relname"], start, _month_after(start)))
    return sorted(found, key=lambda p: p.start)


async def ensure_partitions(pool: asyncpg.Pool, now: datetime, months: int = 3) -> int:
    """Create the partitions of this month and the next ``months - 1`` for ``audit_events``
    and ``requests``; returns how many."""
    async with pool.acquire() as conn, conn.transaction():
        audit: int = await conn.fetchval(
            "SELECT acme_ca_audit_ensure_partitions($1, $2)", now, months
        )
        requests: int = await conn.fetchval(
            "SELECT count(*) FROM acme_ca_month_partitions($1, $2, $3)",
            REQUESTS_TABLE,
            now,
            months,
        )
    if audit or requests:
        log.info("audit.partitions_created", count=audit + requests, requests=requests)
    return audit + requests


@dataclass(frozen=True)
class RetiredPartition:
    name: str
    start: datetime
    end: datetime
    rows: int
    archived_as: str | None
    """``audit_archive.<name>`` once moved; None for a dry run."""


Summary = Callable[[asyncpg.Connection, str], Awaitable[tuple[int, dict[str, JsonValue]]]]
"""A retiring month's row count and what its retirement row records of it."""


async def _audit_summary(conn: asyncpg.Connection, name: str) -> tuple[int, dict[str, JsonValue]]:
    """The retired rows as runs per chain (rows each linked to the one before), with the hash
    each run continued from and its last row's hash (for verify_chain)."""
    rows = await conn.fetch(
        f'SELECT id, chain, prev_hash, hash FROM "{name}" ORDER BY id'  # noqa: S608
    )
    runs: list[RetiredRun] = []
    current: dict[int, int] = {}  # chain -> index in runs of its run still open
    for r in rows:
        chain, prev_hash, hash = r["chain"], bytes(r["prev_hash"]), bytes(r["hash"])
        at = current.get(chain)
        if at is not None and runs[at].last_hash == prev_hash:
            runs[at] = replace(runs[at], last=r["id"], last_hash=hash)
        else:
            current[chain] = len(runs)
            runs.append(RetiredRun(chain, r["id"], r["id"], prev_hash, hash))
    return len(rows), {"chain_runs": [run.to_json() for run in runs]}


async def _requests_summary(
    conn: asyncpg.Connection, name: str
) -> tuple[int, dict[str, JsonValue]]:
    """The first and last request id."""
    r = await conn.fetchrow(
        f'SELECT count(*) AS n, min(id) AS first, max(id) AS last FROM "{name}"'  # noqa: S608
    )
    assert r is not None
    return r["n"], {"first_id": r["first"], "last_id": r["last"]}


_RETIREMENTS: dict[str, tuple[str, Summary]] = {
    AUDIT_TABLE: (RETIRED_EVENT, _audit_summary),
    REQUESTS_TABLE: (REQUESTS_RETIRED_EVENT, _requests_summary),
}
"""Each retiring table's audit event and summary."""


async def retire_partitions(
    pool: asyncpg.Pool,
    now: datetime,
    retention: timedelta,
    *,
    actor: str,
    dry_run: bool = False,
    table: str = AUDIT_TABLE,
) -> list[RetiredPartition]:
    """Move each month of ``table`` (``audit_events`` or ``requests``) wholly older than
    ``now - retention`` to the ``audit_archive`` schema.

    Never earlier: a month leaves only when its last instant is past the retention period.
    The partition is detached (no row trigger fires: rows are not deleted one by one) and
    kept in ``audit_archive`` for the operator to export and drop. In the same transaction
    an audit row records the move: ``audit.partition_retired`` with the retired rows as runs
    per chain (first and last id, the hash the run continued from and its last row's hash),
    which :func:`verify_chain` uses to check the link across the gap;
    ``requests.partition_retired`` with the first and last request id.
    """
    event, summary = _RETIREMENTS[table]
    if retention < RETENTION_FLOOR:
        raise ValueError(
            f"retention of {retention.days} days is below {RETENTION_FLOOR.days} "
            "(CP 5.4.3: audit records are kept at least seven years)"
        )
    cutoff = now - retention
    done: list[RetiredPartition] = []
    for part in await partitions(pool, table):
        if part.end > cutoff:
            break
        archived_as = f"{ARCHIVE_SCHEMA}.{part.name}"
        async with pool.acquire() as conn, conn.transaction():
            count, details = await summary(conn, part.name)
            if dry_run:
                done.append(RetiredPartition(part.name, part.start, part.end, count, None))
                continue
            await conn.execute(f'ALTER TABLE {table} DETACH PARTITION "{part.name}"')
            await conn.execute(f'ALTER TABLE "{part.name}" SET SCHEMA {ARCHIVE_SCHEMA}')
            await record_event(
                conn,
                event,
                at=now,
                actor=actor,
                details={
                    "partition": part.name,
                    "archived_as": archived_as,
                    "month_start": part.start.isoformat(),
                    "month_end": part.end.isoformat(),
                    "rows": count,
                    "retention_days": retention.days,
                    **details,
                },
            )
        log.info(event, partition=part.name, rows=count, archived_as=archived_as)
        done.append(RetiredPartition(part.name, part.start, part.end, count, archived_as))
    return done


class AuditChain:
    """The functions above over one pool, for rooms that hold no pool of their own (admin)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    def rows(
        self, *, since: datetime | None = None, until: datetime | None = None
    ) -> AsyncIterator[ChainRow]:
        return chain_rows(self._pool, since=since, until=until)

    async def verify(self) -> ChainReport:
        return await verify_chain(self._pool)

    async def ensure_partitions(self, now: datetime, months: int = 3) -> int:
        return await ensure_partitions(self._pool, now, months)

    async def retire(
        self, now: datetime, retention: timedelta, *, actor: str, dry_run: bool = False
    ) -> list[RetiredPartition]:
        return await retire_partitions(self._pool, now, retention, actor=actor, dry_run=dry_run)

    async def retire_requests(
        self, now: datetime, retention: timedelta, *, actor: str, dry_run: bool = False
    ) -> list[RetiredPartition]:
        return await retire_partitions(
            self._pool, now, retention, actor=actor, dry_run=dry_run, table=REQUESTS_TABLE
        )
