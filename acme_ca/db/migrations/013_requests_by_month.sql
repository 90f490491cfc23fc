-- 013: stored requests kept by month, like audit_events (issue 16; CP 5.4.3, 5.5.2).
-- `requests` becomes a table partitioned by month of `at`, so `acme-ca audit retention`
-- moves a month past audit_retention_days whole to audit_archive (DETACH PARTITION) instead
-- of the table growing for ever. Existing rows are carried over with their ids; a database
-- older than the requests table gets an empty stand-in first. acme_ca_audit_ensure_partitions
-- now builds on acme_ca_month_partitions, shared by both tables. Everything here is also in
-- schema.sql, written to be replayed.

ALTER TABLE IF EXISTS requests RENAME TO requests_before_013;
CREATE TABLE IF NOT EXISTS requests_before_013 (
    id bigint, at timestamptz, method text, path text, status smallint, problem text,
    duration_ms real, user_agent text, source text, request_id text, account_id bigint,
    order_id bigint, authz_id bigint, challenge_id bigint, certificate_id bigint
);
-- Free the names the new table's constraint and indexes take.
ALTER TABLE requests_before_013 DROP CONSTRAINT IF EXISTS requests_pkey;
DROP INDEX IF EXISTS requests_request_id, requests_order, requests_authz, requests_challenge,
    requests_certificate, requests_account;

CREATE SEQUENCE IF NOT EXISTS requests_ids AS bigint;
CREATE TABLE requests (
    id              bigint NOT NULL DEFAULT nextval('requests_ids'),
    at              timestamptz NOT NULL,
    method          text NOT NULL,
    path            text NOT NULL,
    status          smallint NOT NULL,
    problem         text,
    duration_ms     real NOT NULL,
    user_agent      text NOT NULL DEFAULT '',
    source          text,
    request_id      text NOT NULL,
    account_id      bigint,
    order_id        bigint,
    authz_id        bigint,
    challenge_id    bigint,
    certificate_id  bigint,
    PRIMARY KEY (id, at)
) PARTITION BY RANGE (at);
CREATE TABLE requests_default PARTITION OF requests DEFAULT;
CREATE INDEX requests_request_id ON requests (request_id);
CREATE INDEX requests_order ON requests (order_id) WHERE order_id IS NOT NULL;
CREATE INDEX requests_authz ON requests (authz_id) WHERE authz_id IS NOT NULL;
CREATE INDEX requests_challenge ON requests (challenge_id) WHERE challenge_id IS NOT NULL;
CREATE INDEX requests_certificate ON requests (certificate_id)
    WHERE certificate_id IS NOT NULL;
CREATE INDEX requests_account ON requests (account_id, at) WHERE account_id IS NOT NULL;

CREATE OR REPLACE FUNCTION acme_ca_month_partitions(parent text, start timestamptz,
                                                    months integer)
RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    first   timestamp := date_trunc('month', start AT TIME ZONE 'UTC');
    lower   timestamp;
    upper   timestamp;
    name    text;
    taken   boolean;
BEGIN
    FOR i IN 0 .. months - 1 LOOP
        lower := first + make_interval(months => i);
        upper := lower + interval '1 month';
        name := parent || '_y' || to_char(lower, 'YYYY') || 'm' || to_char(lower, 'MM');
        CONTINUE WHEN to_regclass(name) IS NOT NULL;
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I WHERE at >= $1 AND at < $2)',
                       parent || '_default')
            INTO taken USING lower AT TIME ZONE 'UTC', upper AT TIME ZONE 'UTC';
        CONTINUE WHEN taken;
        EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                       name, parent, lower AT TIME ZONE 'UTC', upper AT TIME ZONE 'UTC');
        RETURN NEXT name;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION acme_ca_audit_ensure_partitions(start timestamptz, months integer)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    name    text;
    created integer := 0;
BEGIN
    FOR name IN SELECT acme_ca_month_partitions('audit_events', start, months) LOOP
        EXECUTE format('CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON %I '
                       'FOR EACH STATEMENT EXECUTE FUNCTION acme_ca_audit_immutable()', name);
        created := created + 1;
    END LOOP;
    RETURN created;
END
$$;

-- A partition for every month from the oldest row to three months ahead, then the rows.
SELECT count(*)
FROM (SELECT COALESCE(min(at), now()) AT TIME ZONE 'UTC' AS oldest,
             now() AT TIME ZONE 'UTC' AS today
      FROM requests_before_013) AS o,
     LATERAL acme_ca_month_partitions(
         'requests', o.oldest AT TIME ZONE 'UTC',
         (12 * (extract(year FROM o.today) - extract(year FROM o.oldest))
          + extract(month FROM o.today) - extract(month FROM o.oldest))::integer + 3);

INSERT INTO requests (id, at, method, path, status, problem, duration_ms, user_agent, source,
                      request_id, account_id, order_id, authz_id, challenge_id, certificate_id)
    SELECT id, at, method, path, status, problem, duration_ms, user_agent, source, request_id,
           account_id, order_id, authz_id, challenge_id, certificate_id
    FROM requests_before_013 ORDER BY id;
SELECT setval('requests_ids', COALESCE((SELECT max(id) FROM requests), 0) + 1, false);

DROP TABLE requests_before_013;
