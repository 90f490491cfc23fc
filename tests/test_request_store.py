"""Every ACME request stored as a compact row (issue 16: requests stored, not only logged).

Through the real front end: the row's request id is the ``X-Request-ID`` the client got, its
ids come from the URL and from what the handler bound (newOrder's order, JWS's account), a
problem is stored by type, and stopping the app writes the rows still queued. The recorder's
batching is checked on its own against PostgreSQL.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg

from acme_ca.db.requests import RequestRecorder, RequestRow, requests_where
from tests.fixtures import CaFactory, RunningCa
from tests.support.orders import Subscriber


async def test_requests_are_stored_with_request_id_ids_and_problem(
    pool: asyncpg.Pool, ca_factory: CaFactory, va_ca: RunningCa, sub: Subscriber
) -> None:
    order = await sub.new_order("stored.example.com")
    assert order.status == 201
    order_url = order.headers["Location"]
    order_id = int(order_url.rsplit("/", 1)[1])
    authz_url = order.body["authorizations"][0]
    fetched = await sub.get(order_url)
    authz = await sub.get(authz_url)
    missing = await sub.get(va_ca.base_url + "/acme/order/999999")
    assert missing.status == 404
    await ca_factory.close()  # shutdown writes what is still queued

    new_order_row = (await requests_where(pool, request_id=order.headers["X-Request-ID"]))[0]
    assert new_order_row.method == "POST" and new_order_row.path == "/acme/new-order"
    assert new_order_row.status == 201 and new_order_row.problem is None
    assert new_order_row.order_id == order_id  # bound by the handler, not in the URL
    assert new_order_row.account_id == int(sub.account_url.rsplit("/", 1)[1])
    assert new_order_row.source == "127.0.0.1"
    assert new_order_row.user_agent.startswith("Python")

    get_row = (await requests_where(pool, request_id=fetched.headers["X-Request-ID"]))[0]
    assert get_row.order_id == order_id
    authz_row = (await requests_where(pool, request_id=authz.headers["X-Request-ID"]))[0]
    assert authz_row.authz_id == int(authz_url.rsplit("/", 1)[1])

    problem_row = (await requests_where(pool, request_id=missing.headers["X-Request-ID"]))[0]
    assert (problem_row.status, problem_row.problem) == (404, "malformed")
    assert problem_row.order_id == 999999  # the id the request named, even though unknown
    # The order's requests: newOrder, the order GET; the authz is tied to it by its id.
    by_order = await requests_where(pool, order_id=order_id)
    assert [r.path for r in by_order] == ["/acme/new-order", f"/acme/order/{order_id}"]
    # Every request has a row: directory, nonces, account, ... (more than the four above).
    assert await pool.fetchval("SELECT count(*) FROM requests") >= 6


async def test_recorder_batches_and_flushes_on_close(pool: asyncpg.Pool) -> None:
    recorder = RequestRecorder(pool, interval=60.0, batch=3)
    recorder.start()
    now = datetime.now(UTC)

    def row(i: int) -> RequestRow:
        return RequestRow(now, "POST", f"/p/{i}", 200, None, 1.0, "ua", "::1", f"r{i}")

    for i in range(3):  # a full batch wakes the writer at once, long before its interval
        recorder.record(row(i))
    for _ in range(100):
        if await pool.fetchval("SELECT count(*) FROM requests") == 3:
            break
        await asyncio.sleep(0.02)
    assert await pool.fetchval("SELECT count(*) FROM requests") == 3
    recorder.record(row(3))  # not a batch: written only by close
    await recorder.aclose()
    assert await pool.fetchval("SELECT count(*) FROM requests") == 4
