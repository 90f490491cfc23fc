"""The order and authorization state machines (RFC 8555 §7.1.6; ACME-ORD-3, ACME-AUTHZ-1).

The tables in :mod:`acme_ca.acme.states` are checked row by row, and every pair that is not a
row is checked to move nothing.  Then, against a real PostgreSQL, each event is applied to an
order stored in each status (a conditional update moves exactly the table's rows), reads are
shown to write nothing, and racing writers are shown to leave what the table says.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import aiohttp
import asyncpg
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from acme_ca.acme import problems
from acme_ca.acme.problems import Identifier
from acme_ca.acme.states import (
    AUTHORIZATIONS,
    ORDERS,
    AuthorizationEvent,
    OrderEvent,
    StateMachine,
    authorizations_event,
    authz_status,
    order_status,
)
from acme_ca.acme.status import AuthorizationStatus, OrderStatus
from acme_ca.clock import FixedClock
from acme_ca.db.audit_chain import verify_chain
from acme_ca.db.authorizations import NewAuthorization, ValidationOutcome
from acme_ca.db.issuance import IssuanceRepository
from acme_ca.db.order_events import Order, apply_order_event
from acme_ca.db.orders import OrderRepository
from acme_ca.db.pool import create_pool
from tests.fixtures import CaFactory
from tests.support.jws import JwsClient
from tests.support.problems import ERR

S = OrderStatus
E = OrderEvent
AS = AuthorizationStatus
AE = AuthorizationEvent
NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(days=1)
EARLIER = NOW - timedelta(seconds=1)
T = TypeVar("T")

#: RFC 8555 §7.1.6 Figure 10 and §7.3.6, written out here independently of the module.
ORDER_ROWS = [
    (S.PENDING, E.AUTHORIZATIONS_VALID, S.READY),
    (S.PENDING, E.AUTHORIZATION_FAILED, S.INVALID),
    (S.PENDING, E.EXPIRED, S.INVALID),
    (S.PENDING, E.ACCOUNT_DEACTIVATED, S.INVALID),
    (S.READY, E.AUTHORIZATION_FAILED, S.INVALID),
    (S.READY, E.EXPIRED, S.INVALID),
    (S.READY, E.ACCOUNT_DEACTIVATED, S.INVALID),
    (S.READY, E.FINALIZED, S.PROCESSING),
    (S.PROCESSING, E.ISSUED, S.VALID),
    (S.PROCESSING, E.ISSUANCE_FAILED, S.INVALID),
]
ORDER_NON_ROWS = [
    (s, e)
    for s, e in itertools.product(OrderStatus, OrderEvent)
    if (s, e) not in {(r[0], r[1]) for r in ORDER_ROWS}
]

#: RFC 8555 §7.1.6 Figure 9 (no server-side revocation of authorizations here).
AUTHZ_ROWS = [
    (AS.PENDING, AE.VALIDATED, AS.VALID),
    (AS.PENDING, AE.VALIDATION_FAILED, AS.INVALID),
    (AS.PENDING, AE.DEACTIVATED, AS.DEACTIVATED),
    (AS.PENDING, AE.EXPIRED, AS.EXPIRED),
    (AS.VALID, AE.DEACTIVATED, AS.DEACTIVATED),
    (AS.VALID, AE.EXPIRED, AS.EXPIRED),
]
AUTHZ_NON_ROWS = [
    (s, e)
    for s, e in itertools.product(AuthorizationStatus, AuthorizationEvent)
    if (s, e) not in {(r[0], r[1]) for r in AUTHZ_ROWS}
]


def _id(value: object) -> str:
    """AS parameter's part of a test id: the status or event, or the time relative to NOW."""
    if isinstance(value, datetime):
        return {LATER: "later", NOW: "now", EARLIER: "earlier"}[value]
    return str(value)


# --------------------------------------------------------------------------- the tables


@pytest.mark.parametrize(("status", "event", "expected"), ORDER_ROWS, ids=_id)
def test_acme_ord_3_transition(status: S, event: E, expected: S) -> None:
    assert ORDERS.next(status, event) is expected
    assert status in ORDERS.sources(event)
    assert ORDERS.target(event) is expected


@pytest.mark.parametrize(("status", "event"), ORDER_NON_ROWS, ids=_id)
def test_acme_ord_3_no_transition(status: S, event: E) -> None:
    """valid and invalid are final; nothing but FINALIZED leaves ready for processing."""
    assert ORDERS.next(status, event) is None
    assert status not in ORDERS.sources(event)
    assert ORDERS.apply(status, [event]) is status


def test_acme_ord_3_table_is_exactly_the_rows() -> None:
    assert dict(ORDERS.table) == {(s, e): t for s, e, t in ORDER_ROWS}


@pytest.mark.parametrize(("status", "event", "expected"), AUTHZ_ROWS, ids=_id)
def test_acme_authz_1_transition(status: AS, event: AE, expected: AS) -> None:
    assert AUTHORIZATIONS.next(status, event) is expected
    assert status in AUTHORIZATIONS.sources(event)


@pytest.mark.parametrize(("status", "event"), AUTHZ_NON_ROWS, ids=_id)
def test_acme_authz_1_no_transition(status: AS, event: AE) -> None:
    assert AUTHORIZATIONS.next(status, event) is None


def test_acme_authz_1_table_is_exactly_the_rows() -> None:
    assert dict(AUTHORIZATIONS.table) == {(s, e): t for s, e, t in AUTHZ_ROWS}


def test_an_event_with_two_targets_is_refused() -> None:
    """Storage moves an event's sources to one target, so a table must not fork."""
    with pytest.raises(ValueError, match="more than one status"):
        StateMachine({(S.PENDING, E.EXPIRED): S.INVALID, (S.READY, E.EXPIRED): S.VALID})


# --------------------------------------------------------------------------- derivation

ALL_VALID = [(AS.VALID, LATER), (AS.VALID, LATER)]


@pytest.mark.parametrize(
    ("stored", "expires_at", "authzs", "expected"),
    [
        (S.PENDING, LATER, [(AS.VALID, LATER), (AS.PENDING, LATER)], S.PENDING),
        (S.PENDING, LATER, ALL_VALID, S.READY),
        (S.READY, LATER, ALL_VALID, S.READY),
        (S.PENDING, NOW, [(AS.PENDING, LATER)], S.INVALID),
        (S.READY, EARLIER, ALL_VALID, S.INVALID),
        (S.PENDING, LATER, [(AS.VALID, LATER), (AS.VALID, NOW)], S.INVALID),
        (S.READY, LATER, [(AS.VALID, LATER), (AS.DEACTIVATED, LATER)], S.INVALID),
        (S.PENDING, LATER, [(AS.PENDING, LATER), (AS.INVALID, LATER)], S.INVALID),
        (S.PROCESSING, EARLIER, [(AS.VALID, EARLIER)], S.PROCESSING),
        (S.VALID, EARLIER, [(AS.DEACTIVATED, EARLIER)], S.VALID),
        (S.INVALID, LATER, ALL_VALID, S.INVALID),
    ],
    ids=[
        "pending-while-an-authorization-is-pending",
        "pending-becomes-ready-when-all-valid",
        "ready-stays-ready",
        "pending-expires-at-its-expires",
        "ready-expired",
        "an-authorization-expired",
        "an-authorization-deactivated",
        "an-authorization-invalid",
        "processing-is-not-expired-by-the-clock",
        "valid-is-final",
        "invalid-is-final",
    ],
)
def test_acme_ord_3_status_derived_on_read(
    stored: S, expires_at: datetime, authzs: list[tuple[AS, datetime]], expected: S
) -> None:
    assert order_status(stored, expires_at, authzs, NOW) is expected


@pytest.mark.parametrize(
    ("stored", "expires_at", "expected"),
    [
        (AS.PENDING, LATER, AS.PENDING),
        (AS.PENDING, NOW, AS.EXPIRED),
        (AS.VALID, EARLIER, AS.EXPIRED),
        (AS.INVALID, EARLIER, AS.INVALID),
        (AS.DEACTIVATED, EARLIER, AS.DEACTIVATED),
    ],
    ids=_id,
)
def test_acme_authz_1_expired_derived_on_read(
    stored: AS, expires_at: datetime, expected: AS
) -> None:
    assert authz_status(stored, expires_at, NOW) is expected


def test_acme_ord_3_authorizations_event() -> None:
    assert authorizations_event([AS.VALID, AS.VALID]) is E.AUTHORIZATIONS_VALID
    assert authorizations_event([AS.VALID, AS.PENDING]) is None
    assert authorizations_event([AS.PENDING, AS.REVOKED]) is E.AUTHORIZATION_FAILED
    assert authorizations_event([]) is None


# --------------------------------------------------------------------------- storage


async def _account(conn: asyncpg.Connection) -> int:
    account_id: int = await conn.fetchval(
        """INSERT INTO accounts (key_thumbprint, jwk, status, tos_agreed_at,
                                 created_at, updated_at)
           VALUES ($1, $2, 'valid', $3, $3, $3) RETURNING id""",
        os.urandom(32),
        {"kty": "EC", "crv": "P-256", "x": os.urandom(8).hex(), "y": os.urandom(8).hex()},
        NOW,
    )
    return account_id


async def _order(
    conn: asyncpg.Connection, account_id: int, status: str, expires_at: datetime = LATER
) -> int:
    order_id: int = await conn.fetchval(
        """INSERT INTO orders (account_id, status, identifiers, expires_at,
                               created_at, updated_at)
           VALUES ($1, $2, '[{"type": "dns", "value": "states.example.com"}]', $3, $4, $4)
           RETURNING id""",
        account_id,
        status,
        expires_at,
        NOW - timedelta(hours=1),
    )
    return order_id


@pytest.mark.parametrize("event", list(OrderEvent), ids=str)
async def test_acme_ord_3_storage_moves_exactly_the_table_rows(
    pool: asyncpg.Pool, event: E
) -> None:
    """The conditional update of each event moves an order stored in each status iff the
    table has that row, to the row's target, and returns the row it wrote."""
    async with pool.acquire() as conn, conn.transaction():
        account_id = await _account(conn)
        ids = {s: await _order(conn, account_id, s) for s in OrderStatus}
        error = problems.server_internal("test")
        moved = await apply_order_event(conn, event, list(ids.values()), NOW, error=error)
    by_id = {o.id: o for o in moved}
    for status, order_id in ids.items():
        stored = await pool.fetchrow("SELECT * FROM orders WHERE id = $1", order_id)
        expected = ORDERS.next(status, event)
        if expected is None:
            assert order_id not in by_id
            assert stored["status"] == status and stored["updated_at"] < NOW
        else:
            assert by_id[order_id].status is expected
            assert stored["status"] == expected and stored["updated_at"] == NOW
            assert stored["error"] == error.to_json()
            assert by_id[order_id].error == error


async def test_acme_ord_3_expired_ready_order_cannot_be_finalized(pool: asyncpg.Pool) -> None:
    """An order stored ready but past its expires is invalid to every reader, so the
    FINALIZED update does not move it and no issuance job is queued."""
    async with pool.acquire() as conn:
        account_id = await _account(conn)
        order_id = await _order(conn, account_id, "ready", expires_at=EARLIER)
        assert await apply_order_event(conn, E.FINALIZED, [order_id], NOW) == []
    queued = await IssuanceRepository(pool).enqueue(
        order_id=order_id,
        account_id=account_id,
        csr_der=b"unused",
        names=["states.example.com"],
        issuer="unused",
        now=NOW,
    )
    assert queued is None
    assert await pool.fetchval("SELECT status FROM orders WHERE id = $1", order_id) == "ready"
    assert await pool.fetchval("SELECT count(*) FROM issuance_jobs") == 0


async def test_acme_ord_3_finalize_returns_the_row_it_wrote(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        account_id = await _account(conn)
        order_id = await _order(conn, account_id, "ready")
    queued = await IssuanceRepository(pool).enqueue(
        order_id=order_id,
        account_id=account_id,
        csr_der=b"csr",
        names=["states.example.com"],
        issuer="issuer",
        now=NOW,
    )
    assert queued is not None and queued.id == order_id
    assert queued.status is S.PROCESSING
    assert queued == await OrderRepository(pool).get_order(order_id)


def _pending(name: str, expires_at: datetime = LATER) -> NewAuthorization:
    return NewAuthorization(name, False, expires_at, (("http-01", os.urandom(16).hex()),))


async def test_acme_ord_3_new_order_on_valid_authorizations_is_ready(pool: asyncpg.Pool) -> None:
    """newOrder reusing only valid authorizations stores ready and returns the inserted row."""
    repo = OrderRepository(pool)
    async with pool.acquire() as conn:
        account_id = await _account(conn)
    first = await repo.create_order(
        account_id=account_id,
        identifiers=[Identifier("dns", "a.example.com")],
        expires_at=LATER,
        reuse=[None],
        new_authzs=[_pending("a.example.com")],
        now=NOW,
    )
    assert first.status is S.PENDING
    assert first == await repo.get_order(first.id)
    authz = await repo.get_authorization(first.authz_ids[0])
    assert authz is not None
    assert await repo.start_challenge(authz.challenges[0].id, now=NOW, lease=timedelta(1))
    outcome = ValidationOutcome(True, [], None, LATER)
    assert await repo.finish_validation(authz.challenges[0].id, outcome, NOW) == [first.id]

    second = await repo.create_order(
        account_id=account_id,
        identifiers=[Identifier("dns", "a.example.com")],
        expires_at=LATER,
        reuse=[authz.id],
        new_authzs=[None],
        now=NOW,
    )
    assert second.status is S.READY
    assert second == await repo.get_order(second.id)


async def test_acme_ord_3_racing_validations_leave_the_order_ready(pool: asyncpg.Pool) -> None:
    """Two validations finishing an order's last two authorizations at once: whichever
    commits second sees the first's authorization valid and moves the order to ready."""
    repo = OrderRepository(pool)
    async with pool.acquire() as conn:
        account_id = await _account(conn)
    for attempt in range(5):
        names = [f"{attempt}-{i}.race.example.com" for i in range(2)]
        order = await repo.create_order(
            account_id=account_id,
            identifiers=[Identifier("dns", n) for n in names],
            expires_at=LATER,
            reuse=[None, None],
            new_authzs=[_pending(n) for n in names],
            now=NOW,
        )
        challenge_ids = []
        for authz_id in order.authz_ids:
            authz = await repo.get_authorization(authz_id)
            assert authz is not None
            challenge_ids.append(authz.challenges[0].id)
            assert await repo.start_challenge(challenge_ids[-1], now=NOW, lease=timedelta(1))
        outcome = ValidationOutcome(True, [], None, LATER)
        await asyncio.gather(*(repo.finish_validation(c, outcome, NOW) for c in challenge_ids))
        stored = await repo.get_order(order.id)
        assert stored is not None and stored.status is S.READY


async def test_acme_ord_3_reading_an_expired_order_writes_nothing(
    ca_factory: CaFactory, session: aiohttp.ClientSession, pool: asyncpg.Pool
) -> None:
    """POST-as-GET of an order past its expires answers invalid (with a problem) and leaves
    the row as it was; finalize refuses it as not ready, and still writes nothing."""
    clock = FixedClock(datetime.now(UTC))
    ca = await ca_factory.start(clock=clock)
    client = JwsClient(session, ca.directory_url, ec.generate_private_key(ec.SECP256R1()))
    await client.load_directory()
    assert (await client.register()).status == 201
    created = await client.post(
        client.directory["newOrder"],
        {"identifiers": [{"type": "dns", "value": "late.example.com"}]},
    )
    assert created.status == 201 and created.body["status"] == "pending"
    order_url = created.headers["Location"]
    order_id = int(order_url.rsplit("/", 1)[1])
    before = await pool.fetchrow("SELECT * FROM orders WHERE id = $1", order_id)

    clock.advance(timedelta(days=8))
    for _ in range(2):
        read = await client.post(order_url, None)
        assert read.status == 200
        assert read.body["status"] == "invalid"
        assert read.body["error"]["type"] == ERR + "unauthorized"
    refused = await client.post(created.body["finalize"], {"csr": "AAAA"})
    assert refused.status == 403 and refused.body["type"] == ERR + "orderNotReady"
    assert await pool.fetchrow("SELECT * FROM orders WHERE id = $1", order_id) == before


async def _statements_of(
    dsn: str,
    work: Callable[[OrderRepository], Awaitable[T]],
    warm: Callable[[OrderRepository], Awaitable[object]] | None = None,
) -> tuple[T, list[str]]:
    """``work`` on a repository whose pool is one connection, with the statements it sent,
    after ``warm`` (by default ``work`` itself), which lets asyncpg introspect the types."""
    sent: list[str] = []
    one = await create_pool(dsn, max_size=1)
    try:
        await (warm or work)(OrderRepository(one))
        async with one.acquire() as conn:
            conn.add_query_logger(lambda q: sent.append(q.query))
        result = await work(OrderRepository(one))
        await asyncio.sleep(0)  # the logger runs from the loop, after each statement
    finally:
        await one.close()
    return result, sent


async def test_cp_5_4_1_new_order_in_one_statement_with_its_authorizations_and_audit_row(
    pool: asyncpg.Pool, dsn: str
) -> None:
    """newOrder's writes (issue 20): the order, its new authorizations and their challenges
    (in the order offered), its links by position (a reused authorization among them) and
    the ``order.created`` audit row; one statement when nothing is reused."""
    repo = OrderRepository(pool)
    async with pool.acquire() as conn:
        account_id = await _account(conn)
    kinds = ("http-01", "dns-01", "tls-alpn-01")
    made: list[tuple[NewAuthorization, NewAuthorization]] = []

    def create(r: OrderRepository) -> Awaitable[Order]:
        tokens = [os.urandom(16).hex() for _ in range(4)]
        new = NewAuthorization(
            "b.example.com", False, LATER, tuple(zip(kinds, tokens[:3], strict=True))
        )
        wild = NewAuthorization("c.example.com", True, LATER, (("dns-01", tokens[3]),))
        made.append((new, wild))
        return r.create_order(
            account_id=account_id,
            identifiers=[Identifier("dns", "b.example.com"), Identifier("dns", "*.c.example.com")],
            expires_at=LATER,
            reuse=[None, None],
            new_authzs=[new, wild],
            now=NOW,
        )

    lone, sent = await _statements_of(dsn, create)
    new, wild = made[-1]
    assert len(sent) == 1 and sent[0].lstrip().startswith("WITH o AS")
    assert lone.status is S.PENDING and lone == await repo.get_order(lone.id)
    first, second = [await repo.get_authorization(i) for i in lone.authz_ids]
    assert first is not None and second is not None
    assert (first.identifier, first.wildcard, second.identifier, second.wildcard) == (
        "b.example.com",
        False,
        "c.example.com",
        True,
    )
    assert [(c.type, c.token, c.status) for c in first.challenges] == [
        (k, t, "pending") for k, t in new.challenges
    ]
    assert [(c.type, c.token) for c in second.challenges] == list(wild.challenges)
    assert first.account_id == second.account_id == account_id
    assert first.expires_at == second.expires_at == LATER and first.status is AS.PENDING

    # Validate the first, then an order reusing it between two new authorizations.
    assert await repo.start_challenge(first.challenges[0].id, now=NOW, lease=timedelta(1))
    outcome = ValidationOutcome(True, [], None, LATER)
    assert await repo.finish_validation(first.challenges[0].id, outcome, NOW) == []
    names = ["d.example.com", "b.example.com", "e.example.com"]
    mixed = await repo.create_order(
        account_id=account_id,
        identifiers=[Identifier("dns", n) for n in names],
        expires_at=LATER,
        reuse=[None, first.id, None],
        new_authzs=[_pending("d.example.com"), None, _pending("e.example.com")],
        now=NOW,
        profile="dv",
    )
    assert mixed == await repo.get_order(mixed.id)
    assert mixed.authz_ids[1] == first.id and mixed.status is S.PENDING
    assert [s for s, _ in mixed.authz_states] == [AS.PENDING, AS.VALID, AS.PENDING]
    stored = [await repo.get_authorization(i) for i in mixed.authz_ids]
    assert [a.identifier for a in stored if a is not None] == names
    links = await pool.fetch(
        "SELECT authz_id, position FROM order_authorizations WHERE order_id = $1 ORDER BY position",
        mixed.id,
    )
    assert [(r["authz_id"], r["position"]) for r in links] == [
        (authz_id, position) for position, authz_id in enumerate(mixed.authz_ids)
    ]
    rows = await pool.fetch("SELECT * FROM audit_events WHERE event = 'order.created' ORDER BY id")
    assert len(rows) == 3  # _statements_of's first run, lone, mixed
    assert [r["order_id"] for r in rows[1:]] == [lone.id, mixed.id]
    assert {(r["account_id"], r["actor"]) for r in rows} == {(account_id, f"account:{account_id}")}
    assert rows[-2]["at"] == NOW and rows[-1]["details"] == {
        "identifiers": [{"type": "dns", "value": n} for n in names],
        "status": "pending",
        "reused_authzs": [first.id],
        "profile": "dv",
    }
    assert (await verify_chain(pool)).ok


async def _started(repo: OrderRepository, account_id: int, names: list[str]) -> list[int]:
    """A new order for ``names`` with the first challenge of each authorization started."""
    order = await repo.create_order(
        account_id=account_id,
        identifiers=[Identifier("dns", n) for n in names],
        expires_at=LATER,
        reuse=[None] * len(names),
        new_authzs=[_pending(n) for n in names],
        now=NOW,
    )
    started = []
    for authz_id in order.authz_ids:
        authz = await repo.get_authorization(authz_id)
        assert authz is not None
        started.append(authz.challenges[0].id)
        assert await repo.start_challenge(started[-1], now=NOW, lease=timedelta(1))
    return [order.id, *started]


async def test_cp_5_4_1_validation_result_in_two_statements_with_its_orders_and_audit_row(
    pool: asyncpg.Pool, dsn: str
) -> None:
    """finish_validation (issue 20): the challenge and authorization, then the orders and the
    audit row (with orders_changed), one transaction of two statements for an order of one
    name; an order with other authorizations reads them after its lock, as before."""
    repo = OrderRepository(pool)
    async with pool.acquire() as conn:
        account_id = await _account(conn)
    ok = ValidationOutcome(True, [{"url": "http://x/"}], None, LATER)
    warm_order, warm_challenge = await _started(repo, account_id, ["warm.example.com"])
    order_id, challenge_id = await _started(repo, account_id, ["one.example.com"])
    changed, sent = await _statements_of(
        dsn,
        lambda r: r.finish_validation(challenge_id, ok, NOW),
        warm=lambda r: r.finish_validation(warm_challenge, ok, NOW),
    )
    assert changed == [order_id]
    assert [q.split()[0] for q in sent] == ["BEGIN;", "WITH", "WITH", "COMMIT;"]
    stored = await repo.get_order(order_id)
    assert stored is not None and stored.status is S.READY
    assert await repo.finish_validation(challenge_id, ok, NOW) == []  # finished already

    # Two names: the first valid leaves the order pending, the second makes it ready
    # (read after the lock); a failed validation fails an order of two names at once.
    two, first, second = await _started(
        repo, account_id, ["a.two.example.com", "b.two.example.com"]
    )
    assert await repo.finish_validation(first, ok, NOW) == []
    assert await repo.finish_validation(second, ok, NOW) == [two]
    bad, third, _ = await _started(repo, account_id, ["a.bad.example.com", "b.bad.example.com"])
    refused = problems.unauthorized("no")
    failure = ValidationOutcome(False, [], refused, None)
    assert await repo.finish_validation(third, failure, NOW) == [bad]
    failed = await repo.get_order(bad)
    assert failed is not None and failed.status is S.INVALID
    assert failed.error is not None and failed.error.detail == "no"
    rows = await pool.fetch(
        "SELECT event, actor, account_id, order_id, details FROM audit_events "
        "WHERE event LIKE 'challenge.%' AND event <> 'challenge.processing' ORDER BY id"
    )
    assert [
        (r["event"], r["details"]["challenge_id"], r["details"]["orders_changed"]) for r in rows
    ] == [
        ("challenge.valid", warm_challenge, [warm_order]),
        ("challenge.valid", challenge_id, [order_id]),
        ("challenge.valid", first, []),
        ("challenge.valid", second, [two]),
        ("challenge.invalid", third, [bad]),
    ]
    assert {(r["actor"], r["account_id"], r["order_id"]) for r in rows} == {
        ("va", account_id, None)
    }
    assert rows[1]["details"]["records"] == [{"url": "http://x/"}]
    assert rows[4]["details"]["error"] == refused.to_json()
    assert (await verify_chain(pool)).ok


async def test_cp_5_4_1_challenge_started_with_its_audit_row_in_one_statement_after_the_lock(
    pool: asyncpg.Pool, dsn: str
) -> None:
    """start_challenge (issue 20): one round trip, schema.sql's acme_ca_start_challenge: the
    authorization's lock, then the move and the ``challenge.processing`` audit row in one
    statement; a sibling challenge of an authorization being validated, or the same one
    again, does not start and audits nothing."""
    repo = OrderRepository(pool)
    async with pool.acquire() as conn:
        account_id = await _account(conn)
    two_kinds = NewAuthorization(
        "start.example.com",
        False,
        LATER,
        (("http-01", "t1-" + os.urandom(8).hex()), ("dns-01", "t2-" + os.urandom(8).hex())),
    )
    warm = await _started(repo, account_id, ["warm-start.example.com"])
    order = await repo.create_order(
        account_id=account_id,
        identifiers=[Identifier("dns", "start.example.com")],
        expires_at=LATER,
        reuse=[None],
        new_authzs=[two_kinds],
        now=NOW,
    )
    authz = await repo.get_authorization(order.authz_ids[0])
    assert authz is not None
    first, sibling = (c.id for c in authz.challenges)
    started, sent = await _statements_of(
        dsn,
        lambda r: r.start_challenge(first, now=NOW, lease=timedelta(1), holder="h"),
        warm=lambda r: r.start_challenge(warm[1], now=NOW, lease=timedelta(1), holder="h"),
    )
    assert started
    assert [q.split()[0] for q in sent] == ["SELECT"]
    assert "acme_ca_start_challenge" in sent[0]
    assert not await repo.start_challenge(sibling, now=NOW, lease=timedelta(1), holder="h")
    assert not await repo.start_challenge(first, now=NOW, lease=timedelta(1), holder="h")
    rows = await pool.fetch(
        "SELECT actor, account_id, details FROM audit_events "
        "WHERE event = 'challenge.processing' ORDER BY id"
    )
    assert [dict(r) for r in rows][-1] == {
        "actor": f"account:{account_id}",
        "account_id": account_id,
        "details": {"challenge_id": first, "authz_id": authz.id, "type": "http-01"},
    }
    assert len(rows) == 2  # warm-start's and the first's
    assert (await verify_chain(pool)).ok


async def test_conc_1_sibling_challenges_started_at_once_only_one_starts(
    pool: asyncpg.Pool,
) -> None:
    """acme_ca_start_challenge's check of the other challenges is a statement after the
    authorization's lock, with its own snapshot: of two challenges of one authorization
    started at the same moment, exactly one moves to processing and is audited, every time."""
    repo = OrderRepository(pool)
    async with pool.acquire() as conn:
        account_id = await _account(conn)
    pairs = []
    for i in range(12):
        name = f"race{i}.example.com"
        order = await repo.create_order(
            account_id=account_id,
            identifiers=[Identifier("dns", name)],
            expires_at=LATER,
            reuse=[None],
            new_authzs=[
                NewAuthorization(
                    name,
                    False,
                    LATER,
                    (
                        ("http-01", "a-" + os.urandom(8).hex()),
                        ("dns-01", "b-" + os.urandom(8).hex()),
                    ),
                )
            ],
            now=NOW,
        )
        authz = await repo.get_authorization(order.authz_ids[0])
        assert authz is not None
        pairs.append(tuple(c.id for c in authz.challenges))
    results = await asyncio.gather(
        *(
            repo.start_challenge(c, now=NOW, lease=timedelta(1), holder="h")
            for pair in pairs
            for c in pair
        )
    )
    assert [sum(results[2 * i : 2 * i + 2]) for i in range(len(pairs))] == [1] * len(pairs)
    audited = await pool.fetchval(
        "SELECT count(*) FROM audit_events WHERE event = 'challenge.processing'"
    )
    assert audited == len(pairs)
    assert (await verify_chain(pool)).ok
