-- 015: a challenge's start in one round trip (issue 20): acme_ca_start_challenge() takes the
-- authorization's lock and then moves the challenge with its audit row, as the transaction
-- of BEGIN, SELECT ... FOR UPDATE, the move and COMMIT did in four. Also in schema.sql.

-- A challenge pending -> processing (issue 20; db/orders.start_challenge), in one round trip:
-- the authorization's row lock first, so two challenges of one authorization started at
-- once serialize; then, in a statement of its own with its own snapshot (READ COMMITTED, a
-- VOLATILE function), the move, only while the authorization is pending and unexpired and
-- none of its challenges is processing (a challenge started meanwhile is seen), with its
-- audit row. Returns the account id, or NULL when nothing moved (nothing audited).
CREATE OR REPLACE FUNCTION acme_ca_start_challenge(
    p_challenge bigint, p_now timestamptz, p_lease interval, p_holder text, p_request text
) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    account bigint;
BEGIN
    PERFORM 1 FROM authorizations
        WHERE id = (SELECT authz_id FROM challenges WHERE id = p_challenge) FOR UPDATE;
    WITH u AS (
        UPDATE challenges c SET status = 'processing', attempts = attempts + 1,
               lease_until = p_now + p_lease, lease_holder = p_holder, updated_at = p_now
        FROM authorizations a
        WHERE c.id = p_challenge AND c.status = 'pending' AND a.id = c.authz_id
          AND a.status = 'pending' AND a.expires_at > p_now
          AND NOT EXISTS (SELECT 1 FROM challenges o
                          WHERE o.authz_id = c.authz_id AND o.status = 'processing')
        RETURNING a.account_id, a.id AS authz_id, c.type),
    e AS (
        INSERT INTO audit_events (at, event, actor, account_id, order_id, request_id, details)
        SELECT p_now, 'challenge.processing', 'account:' || u.account_id, u.account_id, NULL,
               p_request,
               jsonb_build_object('challenge_id', p_challenge, 'authz_id', u.authz_id,
                                  'type', u.type)
        FROM u)
    SELECT u.account_id INTO account FROM u;
    RETURN account;
END
$$;
