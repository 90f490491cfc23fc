"""Orders, authorizations and challenges: one table family, one transaction per state change.

Races are settled in SQL: a challenge moves to ``processing`` only from ``pending``, and a
validation result is written only while the challenge is still ``processing``.  Order and
authorization statuses move only by events of the tables in :mod:`acme_ca.acme.states`, each
applied by a conditional update whose allowed states are the event's sources in that table
(:mod:`acme_ca.db.order_events`); reads never write (expiry is derived by whoever reads,
from the row and the clock).  A validation's result (the challenge, its authorization and
the orders that move with it) is written by :mod:`acme_ca.db.validation_results`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

import asyncpg

from acme_ca.acme import problems
from acme_ca.acme.problems import Identifier
from acme_ca.acme.states import (
    AUTHORIZATIONS,
    ORDERS,
    AuthorizationEvent,
    authorizations_event,
    authz_status,
)
from acme_ca.acme.status import AuthorizationStatus, OrderStatus
from acme_ca.db.audit import current_request_id, record_event
from acme_ca.db.authorizations import (
    VALIDATION_ARRAYS,
    Authorization,
    AuthzValidation,
    Challenge,
    NewAuthorization,
    ValidationOutcome,
    load_authorization,
    load_authorization_redeeming,
    load_challenge,
    load_challenge_redeeming,
    order_validations,
    validations_from_arrays,
)
from acme_ca.db.certificates import CertificateRecord, CertificateRepository
from acme_ca.db.nonces import Redeemed, Redemption, fetch_redeeming
from acme_ca.db.order_events import ORDER_SELECT, Order, advance_orders, order_from_row
from acme_ca.db.replacements import AlreadyReplaced, Replacement, replacing_order
from acme_ca.db.validation_results import record_validation_result

#: An order ($1) and its validations (finalize's CAA recheck) in one statement.
_ORDER_TO_FINALIZE = (
    "SELECT q.*, v.* FROM (" + ORDER_SELECT + " WHERE o.id = $1) AS q "  # noqa: S608
    "LEFT JOIN LATERAL (" + VALIDATION_ARRAYS + ") AS v ON true"
)

#: A new order in one statement (issue 20): the order, its new authorizations (``a``, created
#: in position order, so their ids rank them), their challenges in the order offered, the
#: order's links to its authorizations (``p``: reused ones as given, ``$14``; new ones by rank,
#: ``$15``) and the audit row, which runs last (it reads ``c`` and ``l``).  Returns the order
#: row with its authorizations' ids in position order.
_CREATE_ORDER = """
    WITH o AS (
        INSERT INTO orders (account_id, status, identifiers, expires_at, replaces, profile,
                            created_at, updated_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
        RETURNING *),
    a AS (
        INSERT INTO authorizations (account_id, identifier, wildcard, status, expires_at,
                                    created_at, updated_at)
        SELECT $1, n.identifier, n.wildcard, 'pending', n.expires_at, $7, $7
        FROM unnest($8::text[], $9::boolean[], $10::timestamptz[]) WITH ORDINALITY
             AS n(identifier, wildcard, expires_at, rank)
        ORDER BY n.rank
        RETURNING id),
    r AS (SELECT id, row_number() OVER (ORDER BY id) AS rank FROM a),
    c AS (
        INSERT INTO challenges (authz_id, type, token, status, created_at, updated_at)
        SELECT (SELECT r.id FROM r WHERE r.rank = x.rank), x.type, x.token, 'pending', $7, $7
        FROM unnest($11::int[], $12::text[], $13::text[]) WITH ORDINALITY
             AS x(rank, type, token, ord)
        ORDER BY x.ord
        RETURNING id),
    p AS (
        SELECT (x.pos - 1)::int AS position,
               coalesce(x.reused, (SELECT r.id FROM r WHERE r.rank = x.rank)) AS authz_id
        FROM unnest($14::bigint[], $15::int[]) WITH ORDINALITY AS x(reused, rank, pos)),
    l AS (
        INSERT INTO order_authorizations (order_id, authz_id, position)
        SELECT o.id, p.authz_id, p.position FROM o, p ORDER BY p.position
        RETURNING position),
    e AS (
        INSERT INTO audit_events (at, event, actor, account_id, order_id, request_id, details)
        SELECT $7, 'order.created', $16::text, $1, o.id, $17::text, $18::jsonb
        FROM o, (SELECT count(*) FROM c) AS cc, (SELECT count(*) FROM l) AS lc)
    SELECT o.*, array(SELECT p.authz_id FROM p ORDER BY p.position) AS authz_ids FROM o
"""


#: How long ago a challenge of this process must have been started before it counts as
#: orphaned here (not validating): far more than the moment between a start's commit and
#: the spawn of its validation.
ORPHAN_AGE = timedelta(seconds=5)


class OrderRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    # ------------------------------------------------------------------ reads
    async def get_order(self, order_id: int) -> Order | None:
        row = await self._pool.fetchrow(ORDER_SELECT + " WHERE o.id = $1", order_id)
        return order_from_row(row) if row else None

    async def get_order_redeeming(
        self, order_id: int, redemption: Redemption
    ) -> tuple[Order | None, Redeemed]:
        """:meth:`get_order` with the request's nonce redeemed in the same round trip."""
        row, redeemed = await fetch_redeeming(
            self._pool, ORDER_SELECT + " WHERE o.id = $1", (order_id,), redemption
        )
        return (order_from_row(row) if row is not None else None), redeemed

    async def get_order_to_finalize_redeeming(
        self, order_id: int, redemption: Redemption
    ) -> tuple[tuple[Order, list[AuthzValidation]] | None, Redeemed]:
        """:meth:`get_order_redeeming` with the order's :meth:`validations` (finalize's CAA
        recheck) from the same statement: one round trip for the nonce, the order and them."""
        row, redeemed = await fetch_redeeming(
            self._pool,
            _ORDER_TO_FINALIZE,
            (order_id,),
            redemption,
        )
        if row is None:
            return None, redeemed
        return (order_from_row(row), validations_from_arrays(row)), redeemed

    async def get_authorization(self, authz_id: int) -> Authorization | None:
        async with self._pool.acquire() as conn:
            return await load_authorization(conn, authz_id)

    async def get_authorization_redeeming(
        self, authz_id: int, redemption: Redemption
    ) -> tuple[Authorization | None, Redeemed]:
        """:meth:`get_authorization` with the request's nonce redeemed in the same round trip."""
        return await load_authorization_redeeming(self._pool, authz_id, redemption)

    async def get_challenge(self, challenge_id: int) -> tuple[Challenge, Authorization] | None:
        async with self._pool.acquire() as conn:
            return await load_challenge(conn, challenge_id)

    async def get_challenge_redeeming(
        self, challenge_id: int, redemption: Redemption
    ) -> tuple[tuple[Challenge, Authorization] | None, Redeemed]:
        """:meth:`get_challenge` with the request's nonce redeemed in the same round trip."""
        return await load_challenge_redeeming(self._pool, challenge_id, redemption)

    async def validations(self, order_id: int) -> list[AuthzValidation]:
        """Identifier, validation time and method of each of the order's authorizations."""
        return await order_validations(self._pool, order_id)

    async def reusable_authorization(
        self,
        account_id: int,
        identifier: str,
        wildcard: bool,
        *,
        now: datetime,
        valid_not_before: datetime,
        min_remaining: timedelta,
        method_not_before: Mapping[str, datetime] | None = None,
    ) -> int | None:
        """A valid authorization validated after ``valid_not_before``, or a pending one.

        ``method_not_before`` holds stricter bounds by the type of the challenge that
        validated it (BR 3.2.2.4.22: a dns-persist-01 validation is reused 10 days at most).
        """
        capped = method_not_before or {}
        authz_id: int | None = await self._pool.fetchval(
            """SELECT a.id FROM authorizations a
               WHERE a.account_id = $1 AND a.identifier = $2 AND a.wildcard = $3
                 AND ((a.status = 'valid' AND a.validated_at >= $4
                       AND a.expires_at > $5::timestamptz + $6::interval
                       AND NOT EXISTS (
                           SELECT 1 FROM challenges c
                             JOIN unnest($7::text[], $8::timestamptz[]) AS cap(type, since)
                               ON c.type = cap.type
                            WHERE c.authz_id = a.id AND c.status = 'valid'
                              AND a.validated_at < cap.since))
                      OR (a.status = 'pending' AND a.expires_at > $5::timestamptz + $6::interval))
               ORDER BY (a.status = 'valid') DESC, a.expires_at DESC LIMIT 1""",
            account_id,
            identifier,
            wildcard,
            valid_not_before,
            now,
            min_remaining,
            list(capped),
            list(capped.values()),
        )
        return authz_id

    async def certificate_by_serial(self, serial: str) -> CertificateRecord | None:
        """A certificate an order may name in ``replaces`` (serial as stored)."""
        return await CertificateRepository(self._pool).get_by_serial(serial)

    # ------------------------------------------------------------------ writes
    async def create_order(
        self,
        *,
        account_id: int,
        identifiers: Sequence[Identifier],
        expires_at: datetime,
        reuse: Sequence[int | None],
        new_authzs: Sequence[NewAuthorization | None],
        now: datetime,
        replaces: Replacement | None = None,
        profile: str = "dv",
    ) -> Order:
        """Create the order, its new authorizations and challenges, atomically.

        ``reuse[i]`` names an existing authorization for position ``i``; otherwise
        ``new_authzs[i]`` describes one to create.  The order starts ``pending`` and moves by
        the event its authorizations amount to (all reused and valid: ``ready``).  With
        ``replaces``, raises :class:`AlreadyReplaced` if an order that is not invalid
        already replaces that certificate; the certificate row is locked meanwhile, so two
        concurrent replacements cannot both be accepted.  Returns the order as inserted.

        The order, its authorizations, challenges, links and audit row are one statement
        (issue 20); an order that reuses authorizations or replaces a certificate reads and
        locks those first, in the same transaction.
        """
        reused_ids = [r for r in reuse if r is not None]
        async with contextlib.AsyncExitStack() as stack:
            conn = await stack.enter_async_context(self._pool.acquire())
            reused: dict[int, tuple[AuthorizationStatus, datetime]] = {}
            if replaces is not None or reused_ids:
                await stack.enter_async_context(conn.transaction())
            if replaces is not None:
                await conn.execute(
                    "SELECT 1 FROM certificates WHERE id = $1 FOR UPDATE",
                    replaces.certificate_id,
                )
                other = await replacing_order(conn, replaces, now)
                if other is not None:
                    raise AlreadyReplaced(other)
            if reused_ids:
                # The reused authorizations as they are now, share-locked until this order
                # is stored: a concurrent validation or deactivation either commits first
                # and is read here, or waits and then finds this order to move
                # (advance_orders).
                reused = {
                    r["id"]: (AuthorizationStatus(r["status"]), r["expires_at"])
                    for r in await conn.fetch(
                        "SELECT id, status, expires_at FROM authorizations "
                        "WHERE id = ANY($1::bigint[]) ORDER BY id FOR SHARE",
                        reused_ids,
                    )
                }
            states = [
                reused[existing]
                if existing is not None
                else (AuthorizationStatus.PENDING, _new(new).expires_at)
                for existing, new in zip(reuse, new_authzs, strict=True)
            ]
            event = authorizations_event(authz_status(st, exp, now) for st, exp in states)
            status = ORDERS.apply(OrderStatus.PENDING, [event] if event else [])
            identifiers_json = [i.to_json() for i in identifiers]
            # Position i takes reuse[i], or the k-th authorization created (k counted from 1
            # over the positions that create one, in position order).
            new_rank: list[int | None] = []
            created: list[NewAuthorization] = []
            for existing, new in zip(reuse, new_authzs, strict=True):
                if existing is None:
                    created.append(_new(new))
                    new_rank.append(len(created))
                else:
                    new_rank.append(None)
            challenge_rows = [
                (rank, kind, token)
                for rank, new in enumerate(created, start=1)
                for kind, token in new.challenges
            ]
            row = await conn.fetchrow(
                _CREATE_ORDER,
                account_id,
                status,
                identifiers_json,
                expires_at,
                replaces.cert_id if replaces else None,
                profile,
                now,
                [n.identifier for n in created],
                [n.wildcard for n in created],
                [n.expires_at for n in created],
                [rank for rank, _, _ in challenge_rows],
                [kind for _, kind, _ in challenge_rows],
                [token for _, _, token in challenge_rows],
                list(reuse),
                new_rank,
                f"account:{account_id}",
                current_request_id(),
                {
                    "identifiers": identifiers_json,
                    "status": status,
                    "reused_authzs": reused_ids,
                    "profile": profile,
                    **({"replaces": replaces.cert_id} if replaces else {}),
                },
            )
        return order_from_row(
            {
                **dict(row),
                "certificate_id": None,
                "authz_statuses": [st for st, _ in states],
                "authz_expiries": [exp for _, exp in states],
            }
        )

    async def start_challenge(
        self, challenge_id: int, *, now: datetime, lease: timedelta, holder: str | None = None
    ) -> bool:
        """pending → processing, only while the authorization is pending and unexpired and
        none of its challenges is being validated (one validation per authorization at a
        time, as Boulder's authz-level beganProcessing): the authorization row is locked
        first, so two challenges of one authorization started at once serialize.  The lock
        is a statement of its own: the move's check of the other challenges must start after
        it is granted to see a challenge started meanwhile; the move and its audit row are
        then one statement.  Both run in schema.sql's ``acme_ca_start_challenge``, a VOLATILE
        function whose statements each take a fresh snapshot: one round trip instead of
        BEGIN, lock, move and COMMIT (issue 20)."""
        account_id = await self._pool.fetchval(
            "SELECT acme_ca_start_challenge($1, $2, $3, $4, $5)",
            challenge_id,
            now,
            lease,
            holder,
            current_request_id(),
        )
        return account_id is not None

    async def claim_stale_challenges(
        self,
        *,
        now: datetime,
        lease: timedelta,
        holder: str | None = None,
        dead: Sequence[str] = (),
        running: Sequence[int] | None = None,
        limit: int = 10,
    ) -> list[int]:
        """Take over processing challenges whose validator went away: the lease lapsed, or
        its holder is one of ``dead`` (a process on this host that no longer exists), or,
        given ``running`` (what ``holder`` is validating now), ``holder``'s own ones that
        it is not validating, started over ORPHAN_AGE ago (a start whose commit went
        through while its answer was lost to a database outage: nothing runs them)."""
        rows = await self._pool.fetch(
            """UPDATE challenges SET lease_until = $1::timestamptz + $2::interval,
                      lease_holder = $4
               WHERE id IN (SELECT id FROM challenges
                            WHERE status = 'processing'
                              AND (lease_until < $1 OR lease_holder = ANY($5::text[])
                                   OR ($6::bigint[] IS NOT NULL AND lease_holder = $4
                                       AND NOT id = ANY($6::bigint[])
                                       AND lease_until < $1::timestamptz + $2::interval
                                                         - $7::interval))
                            ORDER BY lease_until LIMIT $3 FOR UPDATE SKIP LOCKED)
               RETURNING id""",
            now,
            lease,
            limit,
            holder,
            list(dead),
            None if running is None else list(running),
            ORPHAN_AGE,
        )
        return [r["id"] for r in rows]

    async def challenge_lease_holders(self, prefix: str, *, now: datetime) -> list[str]:
        """Processes named ``prefix...`` validating a challenge under a lease not lapsed."""
        rows = await self._pool.fetch(
            """SELECT DISTINCT lease_holder FROM challenges
               WHERE status = 'processing' AND lease_until >= $2
                 AND starts_with(lease_holder, $1)""",
            prefix,
            now,
        )
        return [r["lease_holder"] for r in rows]

    async def renew_challenge_lease(
        self, challenge_id: int, *, now: datetime, lease: timedelta
    ) -> bool:
        """Extend the lease of a validation still processing; False once it is not."""
        updated = await self._pool.execute(
            """UPDATE challenges SET lease_until = $2::timestamptz + $3::interval
               WHERE id = $1 AND status = 'processing'""",
            challenge_id,
            now,
            lease,
        )
        return bool(updated.endswith(" 1"))

    async def finish_validation(
        self, challenge_id: int, outcome: ValidationOutcome, now: datetime
    ) -> list[int]:
        """Write a validation result and move the authorization and its orders along
        (:func:`acme_ca.db.validation_results.record_validation_result`): the ids of the
        orders whose status changed, ``[]`` if another run finished first."""
        return await record_validation_result(self._pool, challenge_id, outcome, now)

    async def deactivate_authorization(self, authz_id: int, now: datetime) -> bool:
        """valid/pending → deactivated (§7.5.2); orders depending on it become invalid."""
        async with self._pool.acquire() as conn, conn.transaction():
            event = AuthorizationEvent.DEACTIVATED
            account_id = await conn.fetchval(
                "UPDATE authorizations SET status = $3, updated_at = $2 "
                "WHERE id = $1 AND status = ANY($4::text[]) RETURNING account_id",
                authz_id,
                now,
                AUTHORIZATIONS.target(event),
                list(AUTHORIZATIONS.sources(event)),
            )
            if account_id is None:
                return False
            error = problems.unauthorized("an authorization of this order was deactivated")
            changed = await advance_orders(conn, authz_id, now, error)
            await record_event(
                conn,
                "authz.deactivated",
                at=now,
                actor=f"account:{account_id}",
                account_id=account_id,
                details={"authz_id": authz_id, "orders_changed": changed},
            )
        return True


def _new(new: NewAuthorization | None) -> NewAuthorization:
    if new is None:
        raise ValueError("each position needs an authorization to reuse or one to create")
    return new
