"""``acme-ca admin order|account|search|certs`` over a real front end's database (issue 16).

The full certbot issuance and revocation timeline is integration/test_admin_timeline.py;
these check the lookups on an account with a pending order: by id and key thumbprint, by a
request id the client saw, by name (``notexample.com`` is not under ``example.com``), and
the not-found answers; ``search --since`` leaves out older orders.
"""

from __future__ import annotations

import io
import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import asyncpg

from acme_ca.acme.jwk import jwk_from_key
from acme_ca.admin.commands import run_async
from acme_ca.cli import parse_args
from acme_ca.config import Config
from tests.fixtures import CaFactory, RunningCa
from tests.support.orders import Subscriber


async def admin(dsn: str, tmp_path: Path, *argv: str) -> tuple[int, str]:
    config = replace(Config(), database_url=dsn, home=tmp_path / "home")
    out = io.StringIO()
    status = await run_async(config, parse_args(["admin", *argv]), out)
    return status, out.getvalue()


def test_admin_key_thumbprint_beginning_with_a_dash() -> None:
    """A base64url thumbprint begins with "-" one time in 64 (a CI run drew one): given after
    ``--key-thumbprint`` as a separate word or joined with "=", it is the option's value."""
    thumbprint = "-A3BPh5isi6NhdWCITIYgNMCJsZnT433LO4COhqGPco"
    for argv in (["--key-thumbprint", thumbprint], [f"--key-thumbprint={thumbprint}"]):
        args = parse_args(["admin", "account", *argv, "--json"])
        assert args.key_thumbprint == thumbprint and args.json and args.account_id is None


async def test_admin_account_by_id_and_key_thumbprint(
    dsn: str, tmp_path: Path, va_ca: RunningCa, sub: Subscriber
) -> None:
    order = await sub.new_order("lookup.example.com")
    assert order.status == 201
    account_id = int(sub.account_url.rsplit("/", 1)[1])
    status, text = await admin(dsn, tmp_path, "account", str(account_id), "--json")
    assert status == 0, text
    doc = json.loads(text)
    assert doc["status"] == "valid"
    assert [o["status"] for o in doc["orders"]] == ["pending"]
    assert {a["event"] for a in doc["audit"]} >= {"account.created", "order.created"}
    thumbprint = jwk_from_key(sub.key.public_key()).thumbprint_b64()
    status, again = await admin(dsn, tmp_path, "account", "--key-thumbprint", thumbprint, "--json")
    assert status == 0 and json.loads(again)["account_id"] == account_id
    status, human = await admin(dsn, tmp_path, "account", str(account_id))
    assert status == 0 and f"account {account_id}  status valid" in human
    assert (await admin(dsn, tmp_path, "account", "999999"))[0] == 1


async def test_admin_order_by_request_id_and_search_by_name(
    dsn: str,
    tmp_path: Path,
    pool: asyncpg.Pool,
    ca_factory: CaFactory,
    va_ca: RunningCa,
    sub: Subscriber,
) -> None:
    mine = await sub.new_order("www.example.com")
    other = await sub.new_order("notexample.com")
    assert mine.status == other.status == 201
    order_id = int(mine.headers["Location"].rsplit("/", 1)[1])
    seen = await sub.get(mine.body["authorizations"][0])  # an authz request names no order
    await ca_factory.close()  # stopping writes the queued request rows

    status, text = await admin(dsn, tmp_path, "order", "--request-id", seen.headers["X-Request-ID"])
    assert status == 0, text
    assert text.startswith(f"order {order_id} ")
    assert f"request_id={mine.headers['X-Request-ID']}" in text  # its newOrder request
    assert "order.created by account:" in text

    status, text = await admin(dsn, tmp_path, "search", "--domain", "example.com", "--json")
    assert status == 0
    assert [o["order_id"] for o in json.loads(text)] == [order_id]
    # --since: only orders created since then (the order is from a moment ago).
    created = await pool.fetchval("SELECT created_at FROM orders WHERE id = $1", order_id)
    for since, found in ((created, [order_id]), (created + timedelta(seconds=1), [])):
        status, text = await admin(
            dsn, tmp_path, "search", "--domain", "example.com", "--since", since.isoformat(),
            "--json",
        )  # fmt: skip
        assert status == 0 and [o["order_id"] for o in json.loads(text)] == found, since
    status, _ = await admin(dsn, tmp_path, "search", "--domain", "exa_mple.com%")
    assert status == 2
    assert (await admin(dsn, tmp_path, "order", "--request-id", "0000"))[0] == 1
    assert (await admin(dsn, tmp_path, "order", "--serial", "zz"))[0] == 2
    status, csv_text = await admin(dsn, tmp_path, "certs", "--issued-since", "2020-01-01")
    assert status == 0 and csv_text.splitlines() == [
        "serial,issuer,issued_at,not_before,not_after,names,account_id,order_id,status,"
        "revoked_at,revocation_reason,spki_sha256"
    ]


async def test_issue_16_timeline_validation_names_method_adn_addresses_and_result(
    dsn: str, tmp_path: Path, ca_factory: CaFactory, va_ca: RunningCa, sub: Subscriber
) -> None:
    """An http-01 validation's timeline entry names the method, the ADN, the addresses tried
    (what the certbot timeline's dns-01 cannot show) and the result; the requests carry
    their method, status and problem."""
    order = await sub.new_order("addr.example.com")
    order_id = int(order.headers["Location"].rsplit("/", 1)[1])
    authz_url = order.body["authorizations"][0]
    await sub.answer(authz_url, "http-01")
    assert (await sub.wait_authz(authz_url))["status"] == "valid"
    await sub.post(order.body["finalize"], {"csr": "AA"})  # a bad CSR: a problem to store
    await ca_factory.close()  # stopping writes the queued request rows

    status, text = await admin(dsn, tmp_path, "order", str(order_id), "--json")
    assert status == 0, text
    timeline = json.loads(text)["timeline"]
    dcv = [e for e in timeline if e["kind"] == "validation"]
    assert dcv, timeline
    assert all(e["details"]["method"] == "http-01" for e in dcv)
    assert dcv[-1]["details"]["adn"] == "addr.example.com"
    assert dcv[-1]["details"]["result"] == "pass"
    assert dcv[-1]["details"]["addresses"] and "addresses=" in dcv[-1]["summary"]
    requests = {e["details"]["path"]: e["details"] for e in timeline if e["kind"] == "request"}
    assert requests["/acme/new-order"]["status"] == 201
    assert requests["/acme/new-order"]["method"] == "POST"
    finalize = next(d for p, d in requests.items() if p.endswith("/finalize"))
    assert finalize["status"] == 400 and finalize["problem"] == "badCSR", finalize
