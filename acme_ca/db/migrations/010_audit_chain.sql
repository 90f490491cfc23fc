-- 010: the tamper-evident audit trail (issue 16; CP 5.4.1, 5.4.3, 5.5.2).
-- audit_events becomes a table partitioned by month of `at` whose rows carry
-- prev_hash/hash (a SHA-256 chain computed by a trigger), refuse UPDATE, DELETE and
-- TRUNCATE, and leave only as whole months (the retention job). Existing rows are carried
-- over in id order, keeping their ids, and chained as they are inserted. Everything here
-- is also in schema.sql, written to be replayed.

ALTER TABLE audit_events RENAME TO audit_events_before_010;
ALTER INDEX IF EXISTS audit_events_account RENAME TO audit_events_before_010_account;
ALTER INDEX IF EXISTS audit_events_pkey RENAME TO audit_events_before_010_pkey;

CREATE TABLE audit_events (
    id          bigint NOT NULL,
    at          timestamptz NOT NULL,
    event       text NOT NULL,
    actor       text NOT NULL,
    account_id  bigint,
    order_id    bigint,
    request_id  text,
    details     jsonb NOT NULL DEFAULT '{}',
    prev_hash   bytea NOT NULL,
    hash        bytea NOT NULL,
    PRIMARY KEY (id, at)
) PARTITION BY RANGE (at);
CREATE TABLE audit_events_default PARTITION OF audit_events DEFAULT;
CREATE INDEX audit_events_account ON audit_events (account_id, at);
CREATE INDEX audit_events_order ON audit_events (order_id) WHERE order_id IS NOT NULL;
CREATE INDEX audit_events_request ON audit_events (request_id) WHERE request_id IS NOT NULL;
CREATE INDEX audit_events_id ON audit_events (id);
-- What `acme-ca admin order` looks up: challenge rows name their authorization, issuance
-- and revocation rows their serial.
CREATE INDEX audit_events_authz ON audit_events (((details->>'authz_id')::bigint))
    WHERE details ? 'authz_id';
CREATE INDEX audit_events_serial ON audit_events ((details->>'serial'))
    WHERE details ? 'serial';

-- The end of the hash chain: the last row's id and hash (32 zero bytes before any row).
-- Its row lock serializes the writers of audit rows: see acme_ca_audit_chain().
CREATE TABLE IF NOT EXISTS audit_chain_head (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    last_id    bigint NOT NULL,
    last_hash  bytea NOT NULL CHECK (length(last_hash) = 32)
);
INSERT INTO audit_chain_head (singleton, last_id, last_hash)
    VALUES (true, 0, '\x0000000000000000000000000000000000000000000000000000000000000000')
    ON CONFLICT DO NOTHING;

-- One field of a row's hashed content: '-' for NULL, else its UTF-8 length, ':' and the
-- text, so no two rows share a content (db/audit_chain.content_bytes computes the same).
CREATE OR REPLACE FUNCTION acme_ca_audit_field(v text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN v IS NULL THEN '-' ELSE octet_length(v)::text || ':' || v END
$$;

-- hash = SHA-256(prev_hash || content): id, `at` in microseconds since the Unix epoch,
-- event, actor, account_id, order_id, request_id and details as jsonb's canonical text.
CREATE OR REPLACE FUNCTION acme_ca_audit_hash(
    prev bytea, id bigint, at timestamptz, event text, actor text, account_id bigint,
    order_id bigint, request_id text, details jsonb
) RETURNS bytea
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT sha256(prev || convert_to(
        acme_ca_audit_field(id::text)
        || acme_ca_audit_field(((extract(epoch FROM at) * 1000000)::bigint)::text)
        || acme_ca_audit_field(event) || acme_ca_audit_field(actor)
        || acme_ca_audit_field(account_id::text) || acme_ca_audit_field(order_id::text)
        || acme_ca_audit_field(request_id) || acme_ca_audit_field(details::text), 'UTF8'))
$$;

-- Chains each new row to the one before. The head's row lock (FOR UPDATE) is held until the
-- inserting transaction ends, so concurrent writers take their turn: each reads the head
-- the previous writer committed (READ COMMITTED re-reads the locked row), and one that
-- rolls back leaves the head as it was. Ids are therefore the chain's order, without gaps.
-- The cost: transactions that write audit rows serialize from that insert to their commit.
CREATE OR REPLACE FUNCTION acme_ca_audit_chain() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    head record;
BEGIN
    SELECT last_id, last_hash INTO head FROM audit_chain_head FOR UPDATE;
    NEW.id := GREATEST(head.last_id + 1, COALESCE(NEW.id, 0));
    NEW.prev_hash := head.last_hash;
    NEW.hash := acme_ca_audit_hash(NEW.prev_hash, NEW.id, NEW.at, NEW.event, NEW.actor,
        NEW.account_id, NEW.order_id, NEW.request_id, NEW.details);
    UPDATE audit_chain_head SET last_id = NEW.id, last_hash = NEW.hash;
    RETURN NEW;
END
$$;

-- Rows never change and never go one by one: months leave whole, by DETACH PARTITION
-- (the retention job), which fires no trigger.
CREATE OR REPLACE FUNCTION acme_ca_audit_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events rows are never changed or deleted (%)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

-- The head moves only from acme_ca_audit_chain() (trigger depth 2), never by hand.
CREATE OR REPLACE FUNCTION acme_ca_audit_head_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND pg_trigger_depth() > 1 THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit_chain_head moves only with a new audit row (%)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'audit_events_chain'
                   AND tgrelid = 'audit_events'::regclass) THEN
        CREATE TRIGGER audit_events_chain BEFORE INSERT ON audit_events
            FOR EACH ROW EXECUTE FUNCTION acme_ca_audit_chain();
        CREATE TRIGGER audit_events_immutable BEFORE UPDATE OR DELETE ON audit_events
            FOR EACH ROW EXECUTE FUNCTION acme_ca_audit_immutable();
        CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
            FOR EACH STATEMENT EXECUTE FUNCTION acme_ca_audit_immutable();
        CREATE TRIGGER audit_chain_head_guard BEFORE UPDATE OR DELETE ON audit_chain_head
            FOR EACH ROW EXECUTE FUNCTION acme_ca_audit_head_guard();
        CREATE TRIGGER audit_chain_head_no_truncate BEFORE TRUNCATE ON audit_chain_head
            FOR EACH STATEMENT EXECUTE FUNCTION acme_ca_audit_head_guard();
        CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events_default
            FOR EACH STATEMENT EXECUTE FUNCTION acme_ca_audit_immutable();
    END IF;
END $$;

-- One partition per calendar month (UTC), audit_events_yYYYYmMM, for `months` months from
-- the month of `start`. A month whose rows already went to the default partition (a clock
-- far off, or no run for months) keeps them there: the default partition is never retired.
CREATE OR REPLACE FUNCTION acme_ca_audit_ensure_partitions(start timestamptz, months integer)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    first   timestamp := date_trunc('month', start AT TIME ZONE 'UTC');
    lower   timestamp;
    upper   timestamp;
    name    text;
    created integer := 0;
BEGIN
    FOR i IN 0 .. months - 1 LOOP
        lower := first + make_interval(months => i);
        upper := lower + interval '1 month';
        name := 'audit_events_y' || to_char(lower, 'YYYY') || 'm' || to_char(lower, 'MM');
        CONTINUE WHEN to_regclass(name) IS NOT NULL;
        CONTINUE WHEN EXISTS (SELECT 1 FROM audit_events_default
                              WHERE at >= lower AT TIME ZONE 'UTC'
                                AND at < upper AT TIME ZONE 'UTC');
        EXECUTE format('CREATE TABLE %I PARTITION OF audit_events FOR VALUES FROM (%L) TO (%L)',
                       name, lower AT TIME ZONE 'UTC', upper AT TIME ZONE 'UTC');
        -- TRUNCATE of one partition does not fire the parent's statement trigger.
        EXECUTE format('CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON %I '
                       'FOR EACH STATEMENT EXECUTE FUNCTION acme_ca_audit_immutable()', name);
        created := created + 1;
    END LOOP;
    RETURN created;
END
$$;

-- A partition for every month from the oldest row to three months ahead, then the rows.
SELECT acme_ca_audit_ensure_partitions(
    date_trunc('month', COALESCE(min(at), now()) AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
    (12 * (extract(year FROM now() AT TIME ZONE 'UTC')
              - extract(year FROM COALESCE(min(at), now()) AT TIME ZONE 'UTC'))
     + extract(month FROM now() AT TIME ZONE 'UTC')
     - extract(month FROM COALESCE(min(at), now()) AT TIME ZONE 'UTC'))::integer + 3)
FROM audit_events_before_010;

INSERT INTO audit_events (id, at, event, actor, account_id, order_id, request_id, details)
    SELECT id, at, event, actor, account_id, order_id, request_id, details
    FROM audit_events_before_010 ORDER BY id;

DROP TABLE audit_events_before_010;

CREATE SCHEMA IF NOT EXISTS audit_archive;
