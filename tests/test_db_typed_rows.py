"""db/ answers in protocol types (issue 18 item 1), with the stored JSON unchanged.

Each test writes through a repository, reads the row back both ways (the repository's typed
value and the raw column), and checks that the codec at the repository edge neither changed
what is stored nor lost anything on the way back.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import asyncpg
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from acme_ca.acme import problems
from acme_ca.acme.b64 import b64url_encode
from acme_ca.acme.jwk import Jwk, jwk_from_key, parse_jwk
from acme_ca.acme.problems import Identifier
from acme_ca.acme.status import AccountStatus, AuthorizationStatus, ChallengeStatus, OrderStatus
from acme_ca.db.accounts import Account, AccountRepository
from acme_ca.db.authorizations import NewAuthorization, ValidationOutcome
from acme_ca.db.orders import OrderRepository

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(days=1)

#: RFC 7638 §3.1: the example RSA key (members beyond the required ones dropped) and the
#: thumbprint the RFC gives for it.
RFC7638_JWK = {
    "kty": "RSA",
    "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6t"
    "Soc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YG"
    "jQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-b"
    "FTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
    "e": "AQAB",
}
RFC7638_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


async def _stored_key(pool: asyncpg.Pool, account_id: int) -> tuple[object, bytes]:
    row = await pool.fetchrow("SELECT jwk, key_thumbprint FROM accounts WHERE id = $1", account_id)
    return row["jwk"], bytes(row["key_thumbprint"])


async def _new_account(accounts: AccountRepository) -> Account:
    """A fresh P-256 account with no contact, as newAccount stores one."""
    return await accounts.create(
        jwk=jwk_from_key(ec.generate_private_key(ec.SECP256R1()).public_key()),
        contact=(),
        tos_agreed=True,
        eab_kid=None,
        now=NOW,
    )


async def test_acme_chal_4_account_key_is_parsed_once_and_stored_as_sent(
    pool: asyncpg.Pool,
) -> None:
    """The account comes back with its key parsed (no room parses it again); the column holds
    the members the client sent and ``key_thumbprint`` is their RFC 7638 thumbprint, the one
    key authorizations are built from."""
    accounts = AccountRepository(pool)
    jwk = parse_jwk(RFC7638_JWK)
    created = await accounts.create(jwk=jwk, contact=(), tos_agreed=True, eab_kid=None, now=NOW)
    assert isinstance(created.jwk, Jwk) and isinstance(created.jwk.key, rsa.RSAPublicKey)
    assert created.status is AccountStatus.VALID
    assert b64url_encode(created.key_thumbprint) == RFC7638_THUMBPRINT
    assert await _stored_key(pool, created.id) == (RFC7638_JWK, created.key_thumbprint)

    read = await accounts.get(created.id)
    assert read is not None
    assert read.jwk.to_json() == RFC7638_JWK
    assert read.jwk.key.public_numbers() == jwk.key.public_numbers()
    assert read.jwk.thumbprint_b64() == RFC7638_THUMBPRINT
    assert (await accounts.get_by_thumbprint(jwk.thumbprint())) == read

    new_key = jwk_from_key(ec.generate_private_key(ec.SECP256R1()).public_key())
    rolled = await accounts.change_key(
        created.id, old_thumbprint=created.key_thumbprint, new_jwk=new_key, now=NOW
    )
    assert rolled.jwk.to_json() == new_key.to_json()
    assert await _stored_key(pool, created.id) == (new_key.to_json(), new_key.thumbprint())
    assert await accounts.get_by_thumbprint(jwk.thumbprint()) is None

    deactivated = await accounts.deactivate(created.id, NOW)
    assert deactivated.status is AccountStatus.DEACTIVATED


async def test_acme_chal_1_challenge_error_and_records_come_back_typed(
    pool: asyncpg.Pool,
) -> None:
    """A failed validation stores its problem (subproblems and identifier included) and the
    records as JSON; the challenge reads back with a ``ChallengeStatus``, the same
    ``Problem`` and the records as written, and the order failed with that problem."""
    accounts, orders = AccountRepository(pool), OrderRepository(pool)
    account = await _new_account(accounts)
    names = [Identifier("dns", "a.typed.example.com"), Identifier("dns", "b.typed.example.com")]
    order = await orders.create_order(
        account_id=account.id,
        identifiers=names,
        expires_at=LATER,
        reuse=[None, None],
        new_authzs=[
            NewAuthorization(n.value, False, LATER, (("http-01", os.urandom(16).hex()),))
            for n in names
        ],
        now=NOW,
    )
    assert order.identifiers == tuple(names)
    stored = await pool.fetchval("SELECT identifiers FROM orders WHERE id = $1", order.id)
    assert stored == [{"type": "dns", "value": n.value} for n in names]

    authz = await orders.get_authorization(order.authz_ids[0])
    assert authz is not None and authz.status is AuthorizationStatus.PENDING
    challenge = authz.challenges[0]
    assert challenge.status is ChallengeStatus.PENDING
    assert challenge.error is None and challenge.validation_records == ()
    assert await orders.start_challenge(challenge.id, now=NOW, lease=timedelta(minutes=1))

    problem = problems.compound(
        "no perspective could fetch the key authorization",
        subproblems=(
            problems.connection(
                "connection refused", identifier=Identifier("dns", "a.typed.example.com")
            ),
        ),
    )
    records = [{"method": "http-01", "hostname": "a.typed.example.com", "addresses": ["192.0.2.1"]}]
    outcome = ValidationOutcome(False, records, problem, None)
    assert await orders.finish_validation(challenge.id, outcome, NOW) == [order.id]

    found = await orders.get_challenge(challenge.id)
    assert found is not None
    failed, _ = found
    assert failed.status is ChallengeStatus.INVALID
    assert failed.error == problem
    assert failed.validation_records == tuple(records)
    row = await pool.fetchrow(
        "SELECT error, validation_records FROM challenges WHERE id = $1", challenge.id
    )
    assert row["error"] == problem.to_json() and row["validation_records"] == records

    invalid = await orders.get_order(order.id)
    assert invalid is not None
    assert invalid.status is OrderStatus.INVALID and invalid.error == problem


async def test_acme_authz_3_deactivation_stores_the_same_problem_document(
    pool: asyncpg.Pool,
) -> None:
    """The problem an authorization's deactivation gives its orders is built by the factory
    and stored as the document it always was: type, detail and status 403."""
    accounts, orders = AccountRepository(pool), OrderRepository(pool)
    account = await _new_account(accounts)
    order = await orders.create_order(
        account_id=account.id,
        identifiers=[Identifier("dns", "d.typed.example.com")],
        expires_at=LATER,
        reuse=[None],
        new_authzs=[NewAuthorization("d.typed.example.com", False, LATER, (("dns-01", "t" * 22),))],
        now=NOW,
    )
    assert await orders.deactivate_authorization(order.authz_ids[0], NOW)
    stored = await pool.fetchval("SELECT error FROM orders WHERE id = $1", order.id)
    assert stored == {
        "type": "urn:ietf:params:acme:error:unauthorized",
        "status": 403,
        "detail": "an authorization of this order was deactivated",
    }
    read = await orders.get_order(order.id)
    assert read is not None
    assert read.error == problems.unauthorized("an authorization of this order was deactivated")
