-- schema.sql as it was before migration 001 (commit c9db75c): tests/test_key_compromise.py
-- applies the numbered migrations to a database created from it.
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

-- Authorizations (RFC 8555 §7.1.4): `identifier` is the base name; a wildcard order's
-- authorization has wildcard = true and offers dns-01 only.
CREATE TABLE IF NOT EXISTS authorizations (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id      bigint NOT NULL REFERENCES accounts (id),
    identifier      text NOT NULL,
    wildcard        boolean NOT NULL,
    status          text NOT NULL CHECK (status IN
                    ('pending', 'valid', 'invalid', 'deactivated', 'expired', 'revoked')),
    expires_at      timestamptz NOT NULL,
    validated_at    timestamptz,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS authorizations_reuse
    ON authorizations (account_id, identifier, wildcard, status, expires_at);

CREATE TABLE IF NOT EXISTS order_authorizations (
    order_id    bigint NOT NULL REFERENCES orders (id),
    authz_id    bigint NOT NULL REFERENCES authorizations (id),
    position    integer NOT NULL,
    PRIMARY KEY (order_id, authz_id)
);
CREATE INDEX IF NOT EXISTS order_authorizations_authz ON order_authorizations (authz_id);

-- Challenges (§7.1.5, §8). A challenge in `processing` is owned by a validator until
-- `lease_until`; after that any server process picks it up again (crash recovery).
CREATE TABLE IF NOT EXISTS challenges (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    authz_id            bigint NOT NULL REFERENCES authorizations (id),
    type                text NOT NULL CHECK (type IN ('http-01', 'dns-01')),
    token               text NOT NULL UNIQUE,
    status              text NOT NULL CHECK (status IN ('pending', 'processing', 'valid', 'invalid')),
    validated_at        timestamptz,
    error               jsonb,
    validation_records  jsonb NOT NULL DEFAULT '[]',
    attempts            integer NOT NULL DEFAULT 0,
    lease_until         timestamptz,
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS challenges_authz ON challenges (authz_id);
CREATE INDEX IF NOT EXISTS challenges_processing ON challenges (lease_until)
    WHERE status = 'processing';

-- Issued certificates (and, once CT lands, precertificates): the serial is unique by
-- constraint, in lower-case hex of its DER INTEGER content.
CREATE TABLE IF NOT EXISTS certificates (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id            bigint REFERENCES orders (id),
    account_id          bigint NOT NULL REFERENCES accounts (id),
    serial              text NOT NULL UNIQUE,
    issuer              text NOT NULL,
    der                 bytea NOT NULL,
    not_before          timestamptz NOT NULL,
    not_after           timestamptz NOT NULL,
    -- PEM of the chain served with it (leaf excluded) and of alternate chains (§7.4.2),
    -- fixed at issuance so the front end never needs the issuer's key material.
    chain_pem           text NOT NULL DEFAULT '',
    alternate_chains    jsonb NOT NULL DEFAULT '[]',
    revoked_at          timestamptz,
    revocation_reason   smallint,
    created_at          timestamptz NOT NULL
);
-- One certificate per order: a retried issuance job can never store a second one.
CREATE UNIQUE INDEX IF NOT EXISTS certificates_order ON certificates (order_id);

-- Keys this CA refuses in CSRs (revoked for keyCompromise, reported compromised):
-- SHA-256 of the DER SubjectPublicKeyInfo.
CREATE TABLE IF NOT EXISTS blocked_keys (
    spki_sha256     bytea PRIMARY KEY,
    reason          text NOT NULL,
    added_at        timestamptz NOT NULL,
    source          text NOT NULL
);

-- Issuance jobs (one per finalized order), taken by signing workers with
-- FOR UPDATE SKIP LOCKED. Every step is recorded before the next one runs: the serial,
-- validity and the exact TBS bytes are fixed once (and the linted copy stored) before the
-- signer is asked for anything, so a worker killed at any point leaves a job the next
-- worker finishes with the same serial, and anything signed can be found and revoked.
CREATE TABLE IF NOT EXISTS issuance_jobs (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id        bigint NOT NULL UNIQUE REFERENCES orders (id),
    account_id      bigint NOT NULL REFERENCES accounts (id),
    csr_der         bytea NOT NULL,
    names           jsonb NOT NULL,
    status          text NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    issuer          text,
    serial          text UNIQUE,
    not_before      timestamptz,
    not_after       timestamptz,
    tbs_der         bytea,
    lint_der        bytea,
    error           jsonb,
    locked_by       text,
    locked_until    timestamptz,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS issuance_jobs_runnable ON issuance_jobs (id)
    WHERE status IN ('queued', 'running');

-- ---------------------------------------------------------------------------------------
-- Revocation status (CP 4.9.7, 4.9.9, 7.2, 7.3; BR 4.9.7, 4.9.10, 7.2, 7.3): signed by the
-- signing workers, which hold the keys; served from here by any `acme-ca serve` process.

-- Revoked certificates per issuer (CRL entries until expiry) and the OCSP refresh scan.
CREATE INDEX IF NOT EXISTS certificates_revoked ON certificates (issuer, not_after)
    WHERE revoked_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS certificates_not_after ON certificates (not_after);

-- The last CRL Number handed out per CRL issuer (issuing CA or root). Allocated with
-- UPDATE ... RETURNING under the row lock, so numbers strictly increase across restarts and
-- across workers (BR 7.2.2: CRLNumber strictly increasing, below 2^159); a number whose CRL
-- was never published (lint or signer failure) is simply skipped.
CREATE TABLE IF NOT EXISTS crl_numbers (
    issuer       text PRIMARY KEY,
    last_number  bigint NOT NULL CHECK (last_number > 0)
);

-- Every CRL published (history kept); the latest per issuer is the highest number.
-- entries_digest fingerprints the revoked entries so a poll can see whether the latest CRL
-- still lists exactly the current revocations.
CREATE TABLE IF NOT EXISTS crls (
    issuer          text NOT NULL,
    number          bigint NOT NULL CHECK (number > 0),
    this_update     timestamptz NOT NULL,
    next_update     timestamptz NOT NULL,
    der             bytea NOT NULL,
    entries         integer NOT NULL CHECK (entries >= 0),
    entries_digest  bytea NOT NULL,
    created_at      timestamptz NOT NULL,
    PRIMARY KEY (issuer, number),
    CHECK (next_update > this_update)
);

-- Pre-produced OCSP responses (RFC 5019): the current one per certificate and CertID hash
-- algorithm (SHA-1 and SHA-256, RFC 5019bis 3.1.1). A revoked response is never replaced by
-- a good one, whatever order two workers store them in.
CREATE TABLE IF NOT EXISTS ocsp_responses (
    issuer             text NOT NULL,
    serial             text NOT NULL,
    hash_algorithm     text NOT NULL CHECK (hash_algorithm IN ('sha1', 'sha256')),
    status             text NOT NULL CHECK (status IN ('good', 'revoked')),
    revocation_reason  smallint,
    der                bytea NOT NULL,
    this_update        timestamptz NOT NULL,
    next_update        timestamptz NOT NULL,
    produced_at        timestamptz NOT NULL,
    PRIMARY KEY (issuer, serial, hash_algorithm),
    CHECK (next_update > this_update)
);

-- ---------------------------------------------------------------------------------------
-- Certificate Transparency (RFC 6962; BR 7.1.2.9; CP 4.3.1: CT before issuance).

-- The CT steps of an issuance job, each recorded before the next one runs: the
-- precertificate's TBS and linted copy (with serial and validity, at prepare), the signed
-- precertificate and when submission began, then the verified SCTs together with the final
-- certificate's TBS and linted copy (tbs_der / lint_der, as for a job without CT).
-- A job whose SCTs fell short goes back to `queued` until retry_at (deferrals counts those
-- returns, which are not faults).
ALTER TABLE issuance_jobs ADD COLUMN IF NOT EXISTS precert_tbs_der bytea;
ALTER TABLE issuance_jobs ADD COLUMN IF NOT EXISTS precert_lint_der bytea;
ALTER TABLE issuance_jobs ADD COLUMN IF NOT EXISTS precert_der bytea;
ALTER TABLE issuance_jobs ADD COLUMN IF NOT EXISTS ct_submitted_at timestamptz;
ALTER TABLE issuance_jobs ADD COLUMN IF NOT EXISTS scts jsonb;
ALTER TABLE issuance_jobs ADD COLUMN IF NOT EXISTS retry_at timestamptz;
ALTER TABLE issuance_jobs ADD COLUMN IF NOT EXISTS deferrals integer NOT NULL DEFAULT 0;

-- Signed precertificates. A precertificate counts as issued (BR 7.1.2.9, 4.9.9): its serial
-- is assigned from the moment it is recorded, so OCSP answers for it (as for the final
-- certificate, which shares its serial, once that exists). At most one per job.
CREATE TABLE IF NOT EXISTS precertificates (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id      bigint NOT NULL UNIQUE REFERENCES issuance_jobs (id),
    order_id    bigint NOT NULL REFERENCES orders (id),
    account_id  bigint NOT NULL REFERENCES accounts (id),
    serial      text NOT NULL UNIQUE,
    issuer      text NOT NULL,
    der         bytea NOT NULL,
    not_before  timestamptz NOT NULL,
    not_after   timestamptz NOT NULL,
    created_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS precertificates_not_after ON precertificates (not_after);

-- The SCTs embedded in each certificate: log, operator, timestamp and the SCT itself.
ALTER TABLE certificates ADD COLUMN IF NOT EXISTS scts jsonb NOT NULL DEFAULT '[]';

-- What OCSP answers for: every certificate, and every precertificate whose certificate is not
-- stored (yet, or ever): from signing on its serial counts as issued (BR 7.1.2.9, 4.9.9), so
-- "unknown" is never the answer. A precertificate is not revoked on its own: revoking the
-- certificate revokes the serial.
CREATE OR REPLACE VIEW certificate_statuses AS
    SELECT 0 AS kind, id, issuer, serial, not_after, revoked_at, revocation_reason
    FROM certificates
    UNION ALL
    SELECT 1 AS kind, p.id, p.issuer, p.serial, p.not_after, NULL::timestamptz,
           NULL::smallint
    FROM precertificates p
    WHERE NOT EXISTS (SELECT 1 FROM certificates c WHERE c.serial = p.serial);
