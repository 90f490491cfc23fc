-- acme_ca schema: the whole current schema, applied idempotently (CREATE ... IF NOT EXISTS).
-- A fresh database gets this file and is marked as having every numbered migration in
-- acme_ca/db/migrations/; an older database gets only the migrations it lacks.
-- Times are timestamptz, stored at microsecond precision (db/ alone rounds them).

CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

-- The HMAC secret that authenticates Replay-Nonces, shared by every server process.
CREATE TABLE IF NOT EXISTS nonce_secrets (
    id          smallint PRIMARY KEY,
    secret      bytea NOT NULL CHECK (length(secret) >= 32),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Redeemed nonces: the primary key makes each nonce single-use across processes.
CREATE TABLE IF NOT EXISTS redeemed_nonces (
    nonce_id    bytea PRIMARY KEY,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS redeemed_nonces_expires_at ON redeemed_nonces (expires_at);

-- External Account Binding MAC keys (RFC 8555 §7.3.4); each binds at most one account.
CREATE TABLE IF NOT EXISTS eab_keys (
    kid         text PRIMARY KEY,
    hmac_key    bytea NOT NULL CHECK (length(hmac_key) >= 32),
    comment     text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL,
    revoked_at  timestamptz,
    account_id  bigint UNIQUE,
    bound_at    timestamptz
);

CREATE TABLE IF NOT EXISTS accounts (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- RFC 7638 SHA-256 thumbprint: one account per key (RFC 8555 §7.3.1, §11.1).
    key_thumbprint  bytea NOT NULL UNIQUE,
    jwk             jsonb NOT NULL,
    contact         jsonb NOT NULL DEFAULT '[]',
    status          text NOT NULL CHECK (status IN ('valid', 'deactivated', 'revoked')),
    tos_agreed_at   timestamptz,
    eab_kid         text UNIQUE REFERENCES eab_keys (kid),
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);

DO $$ BEGIN
    ALTER TABLE eab_keys ADD CONSTRAINT eab_keys_account_fk
        FOREIGN KEY (account_id) REFERENCES accounts (id);
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;

CREATE TABLE IF NOT EXISTS orders (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id      bigint NOT NULL REFERENCES accounts (id),
    status          text NOT NULL
                    CHECK (status IN ('pending', 'ready', 'processing', 'valid', 'invalid')),
    identifiers     jsonb NOT NULL,
    not_before      timestamptz,
    not_after       timestamptz,
    profile         text,
    replaces        text,
    error           jsonb,
    expires_at      timestamptz NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_account_id ON orders (account_id, id);

-- Audit trail: every state change, with who, what and the request it came from.
CREATE TABLE IF NOT EXISTS audit_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL,
    event       text NOT NULL,
    actor       text NOT NULL,
    account_id  bigint,
    order_id    bigint,
    request_id  text,
    details     jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS audit_events_account ON audit_events (account_id, at);
