"""A CRL of 100,000 entries (issue 18 item 7): built in linear time, off the signing worker's
event loop, byte for byte what cryptography's builder would write (BR-CRL-2, BR-CRL-3).

The revocations are made in the real PostgreSQL with generate_series; the CRL is built,
linted and signed with the development hierarchy's software keys, as tests/test_crl.py does.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from cryptography import x509
from structlog.testing import capture_logs

from acme_ca.ca.der import split_signed, throwaway_signed_crl
from acme_ca.db.status import RevokedEntries, RevokedEntry
from acme_ca.status import crl as crl_module
from acme_ca.status import updater as updater_module
from acme_ca.status.crl import (
    CRL_REASONS,
    crl_builder,
    draw_up_crl,
    encode_crl_entry,
    publish_crl,
    specimen_indexes,
)
from tests.support import status as status_support
from tests.support.status import ISSUERS, StatusEnv

# The shared fixtures of the status tests.
status_config = status_support.status_config
env = status_support.env

T = TypeVar("T")

#: Revoked, unexpired certificates; with LONE_PRECERTIFICATES, the CRL's 100,000 entries.
REVOKED_CERTIFICATES = 99_000
#: Revoked precertificates whose certificate was never stored: listed as themselves (KC-4).
LONE_PRECERTIFICATES = 1_000
#: Revoked precertificates whose certificate is stored (and revoked): listed once, not twice.
PAIRED_PRECERTIFICATES = 1_000
ENTRIES = REVOKED_CERTIFICATES + LONE_PRECERTIFICATES
#: The ticker's period: it runs while the work does, which is the work off the event loop
#: (the worker threads are asserted; the ticks' lateness is printed).
TICK = 0.010
#: Entries cryptography's (quadratic) builder may be given: one per encoding shape (serial
#: of 1-20 octets, UTCTime or GeneralizedTime, six reasonCode encodings) plus the first and
#: the last, the lint specimens (specimen_indexes); far below ENTRIES.
MAX_SPECIMENS = 20 * 2 * 6 + 2


# ------------------------------------------------------------------ the 100,000 revocations

#: Serial {n} (1-based) in lower-case hex: 128 bits from md5 (about half with the high bit set,
#: so a 17-octet INTEGER), every 1000th a short one, so the CRL holds several entry shapes.
_SERIAL_SQL = "CASE WHEN {n} % 1000 = 0 THEN to_hex({n}) ELSE md5('crl-scale-' || {n}) END"
#: RFC 5280 reasons cycling through NULL/unspecified and BR 7.2.2's 1, 3, 4, 5, 9.
_REASON_SQL = "(ARRAY[NULL, 0, 1, 3, 4, 5, 9]::smallint[])[i % 7 + 1]"


async def make_revocations(env: StatusEnv, issuer: str) -> None:
    """ENTRIES revocations of ``issuer`` and rows that must not be listed, in a few statements.

    Certificates 1..REVOKED_CERTIFICATES are revoked (the first PAIRED_PRECERTIFICATES with a
    revoked precertificate of the same serial); then 500 unrevoked and 500 revoked but
    expired certificates; then LONE_PRECERTIFICATES revoked precertificates of failed orders.
    """
    expired_from = REVOKED_CERTIFICATES + 500
    async with env.pool.acquire() as conn, conn.transaction():
        await conn.execute(
            f"""WITH p AS (SELECT $3::timestamptz AS now, $4::int AS revoked, $5::int AS expired)
                INSERT INTO certificates (account_id, serial, issuer, der, not_before, not_after,
                                          revoked_at, revocation_reason, created_at)
                SELECT $1, {_SERIAL_SQL.format(n="i")}, $2, '\\x3000', now - interval '30 days',
                       CASE WHEN i > expired THEN now - interval '1 second'
                            ELSE now + interval '60 days' END,
                       CASE WHEN i <= revoked OR i > expired THEN now - i * interval '1 second' END,
                       CASE WHEN i <= revoked OR i > expired THEN {_REASON_SQL} END,
                       now - interval '30 days'
                FROM p, generate_series(1, expired + 500) AS i""",
            env.account_id,
            issuer,
            env.clock.now(),
            REVOKED_CERTIFICATES,
            expired_from,
        )
        # A precertificate needs a job, and a job an order of its own.
        await conn.execute(
            f"""WITH p AS (SELECT $3::timestamptz AS now, $5::int AS paired),
                o AS (
                    INSERT INTO orders (account_id, status, identifiers, expires_at,
                                        created_at, updated_at)
                    SELECT $1, 'invalid', '[]', now, now, now FROM p, generate_series(1, $4)
                    RETURNING id),
                j AS (
                    INSERT INTO issuance_jobs (order_id, account_id, csr_der, names, status,
                                               created_at, updated_at)
                    SELECT id, $1, '', '[]', 'failed', now, now FROM p, o
                    RETURNING id, order_id),
                n AS (SELECT id, order_id, row_number() OVER (ORDER BY id) AS k FROM j)
                INSERT INTO precertificates (job_id, order_id, account_id, serial, issuer, der,
                                             not_before, not_after, created_at, revoked_at,
                                             revocation_reason)
                SELECT n.id, n.order_id, $1,
                       CASE WHEN k <= paired THEN {_SERIAL_SQL.format(n="k")}
                            ELSE 'ffff' || to_hex(k) END,
                       $2, '\\x3000', now - interval '30 days', now + interval '60 days',
                       now - interval '30 days', now - k * interval '1 second', 4
                FROM p, n""",
            env.account_id,
            issuer,
            env.clock.now(),
            PAIRED_PRECERTIFICATES + LONE_PRECERTIFICATES,
            PAIRED_PRECERTIFICATES,
        )


async def expected_entries(env: StatusEnv, issuer: str) -> dict[int, tuple[datetime, int]]:
    """serial -> (revocationDate, reason), read from the tables, not from the view the CRL
    reads: a certificate's row wins over its precertificate's."""
    rows = await env.pool.fetch(
        """SELECT serial, revoked_at, coalesce(revocation_reason, 0) AS reason
           FROM certificates WHERE issuer = $1 AND revoked_at IS NOT NULL AND not_after > $2
           UNION ALL
           SELECT p.serial, p.revoked_at, coalesce(p.revocation_reason, 0) FROM precertificates p
           WHERE p.issuer = $1 AND p.revoked_at IS NOT NULL AND p.not_after > $2
             AND NOT EXISTS (SELECT 1 FROM certificates c WHERE c.serial = p.serial)""",
        issuer,
        env.clock.now(),
    )
    return {int(r["serial"], 16): (r["revoked_at"], r["reason"]) for r in rows}


# ------------------------------------------------------------------ the loop's pulse


@asynccontextmanager
async def loop_pulse() -> AsyncIterator[list[float]]:
    """Tick every TICK seconds meanwhile; yields the list of each tick's lateness."""
    loop = asyncio.get_running_loop()
    delays: list[float] = []
    stop = asyncio.Event()

    async def tick() -> None:
        while not stop.is_set():
            asked = loop.time()
            await asyncio.sleep(TICK)
            delays.append(loop.time() - asked - TICK)

    task = asyncio.create_task(tick())
    await asyncio.sleep(TICK)  # the ticker is running before the work starts
    try:
        yield delays
    finally:
        stop.set()
        await task


async def timed(work: Awaitable[T]) -> tuple[T, float]:
    started = time.monotonic()
    result = await work
    return result, time.monotonic() - started


# ------------------------------------------------------------------ tests


async def test_br_crl_3_crl_of_100000_entries_built_off_the_loop_in_time(
    env: StatusEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(a) all 100,000 entries listed once, as the tables say; (b) drawn up in a worker
    thread, the event loop ticking meanwhile; (c) cryptography's builder, quadratic in its
    entries (~20 s for these), given only the lint specimens, every other entry encoded
    directly.  The time taken is printed, not asserted: timings belong in benchmarks."""
    issuer = ISSUERS[0]
    await make_revocations(env, issuer)
    expected = await expected_entries(env, issuer)
    assert len(expected) == ENTRIES

    drawn_in: list[threading.Thread] = []
    built: list[threading.Thread] = []
    monkeypatch.setattr(crl_module, "draw_up_crl", _in_thread(draw_up_crl, drawn_in))
    monkeypatch.setattr(crl_module, "crl_entry", _in_thread(crl_module.crl_entry, built))
    async with loop_pulse() as delays:
        record, seconds = await timed(
            publish_crl(
                env.repository,
                env.authority(issuer),
                clock=env.clock,
                validity=env.settings.crl_validity,
                linter=env.linter,
            )
        )
    print(
        f"{ENTRIES} entries published in {seconds:.1f} s; loop tick delay max {max(delays):.3f} s"
    )
    assert record is not None and record.entries == ENTRIES
    assert drawn_in and threading.main_thread() not in drawn_in, drawn_in
    assert len(delays) > 10, "the ticker did not run during the publication"
    assert 0 < len(built) <= MAX_SPECIMENS, f"cryptography's builder got {len(built)} entries"

    crl = x509.load_der_x509_crl(record.der)
    assert crl.is_signature_valid(env.authority(issuer).signer.public_key)
    listed = [entry.serial_number for entry in crl]
    assert listed == sorted(expected), "entries out of serial order, missing or listed twice"
    for entry in crl:
        revoked_at, reason = expected[entry.serial_number]
        assert entry.revocation_date_utc == revoked_at.replace(microsecond=0)
        extensions = list(entry.extensions)
        if reason in CRL_REASONS:
            assert [(e.value.reason, e.critical) for e in extensions] == [
                (CRL_REASONS[reason], False)
            ]
        else:
            assert extensions == [], "reasonCode written for unspecified (BR 7.2.2)"


async def test_br_crl_1_updater_compares_100000_entries_off_the_loop(
    env: StatusEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The updater's periodic pass reads and digests the entries to decide whether the CRL
    is current: with 100,000 entries, neither the first publication nor the comparison
    holds the event loop."""
    issuer = ISSUERS[0]
    await make_revocations(env, issuer)
    updater = env.updater()
    threads: dict[str, list[threading.Thread]] = {"draw_up_crl": [], "entries_digest": []}
    for module, name in ((crl_module, "draw_up_crl"), (updater_module, "entries_digest")):
        monkeypatch.setattr(module, name, _in_thread(getattr(module, name), threads[name]))
    with capture_logs() as logs:
        async with loop_pulse() as delays:
            await updater.publish_due_crls()  # none yet: every CRL is published
            await updater.publish_due_crls()  # all current: the digests match
    print(f"loop tick delay max {max(delays):.3f} s")
    published = [e for e in logs if e["event"] == "crl.published"]
    assert sorted(e["issuer"] for e in published) == sorted(
        [*ISSUERS, *(r.name for r in env.roots)]
    )
    assert next(e for e in published if e["issuer"] == issuer)["entries"] == ENTRIES
    for name, ran_in in threads.items():
        assert ran_in and threading.main_thread() not in ran_in, (name, ran_in)


def _in_thread(function: Callable[..., T], threads: list[threading.Thread]) -> Callable[..., T]:
    """``function``, noting the thread of each call."""

    def noted(*args: Any) -> T:
        threads.append(threading.current_thread())
        return function(*args)

    return noted


def _shaped_entries(now: datetime) -> list[RevokedEntry]:
    """Entries of every shape: serials of 1 to 20 octets with and without the high bit,
    revocation dates before and from 2050 (UTCTime, GeneralizedTime), every reason 0-10."""
    entries: list[RevokedEntry] = []
    seen: set[int] = {0}
    for octets in range(1, 21):
        for high_bit in (False, True):
            for reason in range(11):
                value = 0
                while value in seen:  # unique serials; 0 is not one
                    value = secrets.randbits(8 * octets - 1) | 1
                    if high_bit and octets < 20:
                        value |= 1 << (8 * octets - 1)
                seen.add(value)
                at = now - timedelta(seconds=secrets.randbelow(10**7), microseconds=123)
                if reason % 2:
                    at = datetime(2050 + reason, 1, 1, 0, 0, 1, tzinfo=UTC)
                entries.append(RevokedEntry(format(value, "x"), at, reason))
    return entries


@pytest.mark.parametrize("name", ISSUERS)
async def test_br_crl_2_entries_encoded_byte_for_byte_as_cryptography(
    env: StatusEnv, name: str
) -> None:
    """The TBSCertList made in linear time equals the one cryptography's builder makes from
    the same entries (serial sizes, both Time types, every reason, unsorted input)."""
    now = env.clock.now()
    entries = _shaped_entries(now)
    authority = env.authority(name)
    this_update, next_update = now, now + timedelta(hours=96)
    drawn = draw_up_crl(authority, 42, RevokedEntries.of(entries), this_update, next_update)
    reference = throwaway_signed_crl(
        crl_builder(authority, 42, entries, this_update, next_update),
        authority.signer,
        authority.hash,
    )
    assert drawn.tbs == reference.tbs_certlist_bytes
    assert drawn.entries == len(entries)

    # The lint copy: the same header, one entry per shape (and the first and last).
    lint_copy = x509.load_der_x509_crl(drawn.lint_copy)
    assert split_signed(drawn.lint_copy)[0] != drawn.tbs
    assert lint_copy.issuer == reference.issuer
    assert list(lint_copy.extensions) == list(reference.extensions)
    ordered = sorted(entries, key=lambda e: int(e.serial, 16))
    encoded = [encode_crl_entry(int(e.serial, 16), e.revoked_at, e.reason) for e in ordered]
    picked = specimen_indexes(encoded)
    assert [e.serial_number for e in lint_copy] == [int(ordered[i].serial, 16) for i in picked]

    def shape(e: RevokedEntry) -> tuple[int, bool, int]:
        """INTEGER length, GeneralizedTime or not, reasonCode written (0: none)."""
        return (
            int(e.serial, 16).bit_length() // 8 + 1,
            e.revoked_at.year >= 2050,
            e.reason if e.reason in CRL_REASONS else 0,
        )

    shapes = {shape(e) for e in entries}
    assert {shape(ordered[i]) for i in picked} == shapes
    assert len(picked) <= len(shapes) + 2 < len(entries)


async def test_br_crl_2_empty_crl_equals_cryptography(env: StatusEnv) -> None:
    """No entries: no revokedCertificates field at all, as cryptography writes it."""
    now = env.clock.now()
    authority = env.authority(ISSUERS[1])
    drawn = draw_up_crl(authority, 1, RevokedEntries(), now, now + timedelta(hours=1))
    reference = crl_builder(authority, 1, [], now, now + timedelta(hours=1))
    copy = throwaway_signed_crl(reference, authority.signer, authority.hash)
    assert drawn.tbs == copy.tbs_certlist_bytes
    assert split_signed(drawn.lint_copy)[0] == drawn.tbs  # nothing left out of the lint


@pytest.mark.parametrize(
    ("serial", "problem"),
    [(0, "positive"), (1 << 160, "20 octets")],
)
def test_br_crl_3_serial_outside_rfc_5280_refused(serial: int, problem: str) -> None:
    """RFC 5280 4.1.2.2: a serial is positive and at most 20 octets; nothing else is encoded."""
    with pytest.raises(ValueError, match=problem):
        encode_crl_entry(serial, datetime.now(UTC), 0)


async def test_br_crl_3_duplicate_serial_refused(env: StatusEnv) -> None:
    """A serial listed twice (whatever the source) stops the CRL before anything is signed."""
    now = env.clock.now()
    twice = [RevokedEntry("0abc", now, 1), RevokedEntry("abc", now, 4)]
    with pytest.raises(ValueError, match="listed twice"):
        draw_up_crl(
            env.authority(ISSUERS[0]), 1, RevokedEntries.of(twice), now, now + timedelta(hours=1)
        )
