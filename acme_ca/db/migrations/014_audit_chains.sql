-- 014: eight audit chains instead of one (issue 20; CP 5.4.1). The rows of a transaction
-- join chain coalesce(order_id, account_id, 0) % 8 of its first row and are chained to that
-- chain's previous row, so the writers of different orders no longer wait for each other's
-- commit, and a transaction holds one chain's head at most (no deadlock between two). Ids come from the
-- sequence audit_event_ids, taken under the chain's lock; `seq` is a row's position in its
-- chain. Rows already written stay as they are: chain 0, `seq` NULL (their position is their
-- id), their hashes unchanged (neither column is hashed content: the links bind a row to its
-- chain). Chain 0 continues from the old head; chains 1-7 start from 32 zero bytes.
-- Everything here is also in schema.sql.

ALTER TABLE audit_events ADD COLUMN IF NOT EXISTS chain smallint NOT NULL DEFAULT 0;
ALTER TABLE audit_events ADD COLUMN IF NOT EXISTS seq bigint;

CREATE SEQUENCE IF NOT EXISTS audit_event_ids AS bigint;
SELECT setval('audit_event_ids', greatest(last_id, 1), last_id > 0) FROM audit_chain_head;

ALTER TABLE audit_chain_head ADD COLUMN chain smallint NOT NULL DEFAULT 0;
ALTER TABLE audit_chain_head DROP CONSTRAINT audit_chain_head_pkey;
ALTER TABLE audit_chain_head DROP COLUMN singleton;
ALTER TABLE audit_chain_head ADD PRIMARY KEY (chain);
ALTER TABLE audit_chain_head ADD CHECK (chain >= 0 AND chain < 8);
-- Chain 0's position goes on from the last old row's id (the old chain's position); the
-- head's guard admits moves only from the chaining trigger, so it is off for this
-- statement of the migration's own transaction.
ALTER TABLE audit_chain_head ADD COLUMN last_seq bigint NOT NULL DEFAULT 0;
ALTER TABLE audit_chain_head DISABLE TRIGGER audit_chain_head_guard;
UPDATE audit_chain_head SET last_seq = last_id WHERE chain = 0;
ALTER TABLE audit_chain_head ENABLE TRIGGER audit_chain_head_guard;
ALTER TABLE audit_chain_head ALTER COLUMN last_seq DROP DEFAULT;
INSERT INTO audit_chain_head (chain, last_id, last_seq, last_hash)
    SELECT k, 0, 0, '\x0000000000000000000000000000000000000000000000000000000000000000'
    FROM generate_series(1, 7) AS k;

CREATE OR REPLACE FUNCTION acme_ca_audit_chain() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    head record;
BEGIN
    -- One chain per transaction: its first row's, so a transaction holds one chain head
    -- at most and two writers can never wait for each other's heads (no deadlock).
    NEW.chain := nullif(current_setting('acme_ca.audit_chain', true), '')::smallint;
    IF NEW.chain IS NULL THEN
        NEW.chain := coalesce(NEW.order_id, NEW.account_id, 0) % 8;
        PERFORM set_config('acme_ca.audit_chain', NEW.chain::text, true);
    END IF;
    SELECT last_seq, last_hash INTO head FROM audit_chain_head WHERE chain = NEW.chain
        FOR UPDATE;
    NEW.id := nextval('audit_event_ids');
    NEW.seq := head.last_seq + 1;
    NEW.prev_hash := head.last_hash;
    NEW.hash := acme_ca_audit_hash(NEW.prev_hash, NEW.id, NEW.at, NEW.event, NEW.actor,
        NEW.account_id, NEW.order_id, NEW.request_id, NEW.details);
    UPDATE audit_chain_head SET last_id = NEW.id, last_seq = NEW.seq, last_hash = NEW.hash
        WHERE chain = NEW.chain;
    RETURN NEW;
END
$$;
