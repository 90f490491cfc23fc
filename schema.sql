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

-- Organizations vetted by an operator (CP 3.2.2.1(2), 3.2.2.3, 3.2.5): the only source of an
-- OV certificate's subject C, ST, L and O. Rows are never edited: a change is a new row and the
-- old one revoked. vetted_at starts the BR 4.2.1 reuse period (ra/br_schedule.py).
CREATE TABLE IF NOT EXISTS organizations (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL CHECK (name <> ''),
    country     text NOT NULL CHECK (country ~ '^[A-Z]{2}$'),
    state       text NOT NULL CHECK (state <> ''),
    locality    text NOT NULL CHECK (locality <> ''),
    evidence    text NOT NULL CHECK (evidence <> ''),
    vetted_by   text NOT NULL CHECK (vetted_by <> ''),
    vetted_at   timestamptz NOT NULL,
    status      text NOT NULL DEFAULT 'valid' CHECK (status IN ('valid', 'revoked')),
    revoked_at  timestamptz,
    created_at  timestamptz NOT NULL,
    CHECK ((status = 'revoked') = (revoked_at IS NOT NULL))
);

-- External Account Binding MAC keys (RFC 8555 §7.3.4); each binds at most one account, and
-- with organization_id set binds that account to a vetted organization (OV profile).
CREATE TABLE IF NOT EXISTS eab_keys (
    kid             text PRIMARY KEY,
    hmac_key        bytea NOT NULL CHECK (length(hmac_key) >= 32),
    comment         text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL,
    revoked_at      timestamptz,
    account_id      bigint UNIQUE,
    bound_at        timestamptz,
    organization_id bigint REFERENCES organizations (id)
);
CREATE INDEX IF NOT EXISTS eab_keys_organization ON eab_keys (organization_id)
    WHERE organization_id IS NOT NULL;

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
    -- The certificate profile (acme_ca/profiles.py); `dv` for orders from before profiles.
    profile         text NOT NULL DEFAULT 'dv',
    replaces        text,
    error           jsonb,
    expires_at      timestamptz NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_account_id ON orders (account_id, id);

-- Audit trail: every state change, with who, what and the request it came from. A hash
-- chain, never updated, kept by month (CP 5.4, 5.5): see "The audit trail" at the end.
CREATE TABLE IF NOT EXISTS audit_events (
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
    chain       smallint NOT NULL DEFAULT 0,
    seq         bigint,
    PRIMARY KEY (id, at)
) PARTITION BY RANGE (at);
CREATE TABLE IF NOT EXISTS audit_events_default PARTITION OF audit_events DEFAULT;
CREATE INDEX IF NOT EXISTS audit_events_account ON audit_events (account_id, at);
CREATE INDEX IF NOT EXISTS audit_events_order ON audit_events (order_id)
    WHERE order_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS audit_events_request ON audit_events (request_id)
    WHERE request_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS audit_events_id ON audit_events (id);
-- What `acme-ca admin order` looks up: challenge rows name their authorization, issuance
-- and revocation rows their serial.
CREATE INDEX IF NOT EXISTS audit_events_authz ON audit_events (((details->>'authz_id')::bigint))
    WHERE details ? 'authz_id';
CREATE INDEX IF NOT EXISTS audit_events_serial ON audit_events ((details->>'serial'))
    WHERE details ? 'serial';

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
    -- The last CAA recheck that allowed issuance (BR 3.2.2.8), by the signing worker; the
    -- validation's own CAA check is the time of its CAA records.
    caa_checked_at  timestamptz,
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
    type                text NOT NULL CHECK (
        type IN ('http-01', 'dns-01', 'tls-alpn-01', 'dns-account-01', 'dns-persist-01')),
    token               text NOT NULL UNIQUE,
    status              text NOT NULL CHECK (status IN ('pending', 'processing', 'valid', 'invalid')),
    validated_at        timestamptz,
    error               jsonb,
    validation_records  jsonb NOT NULL DEFAULT '[]',
    attempts            integer NOT NULL DEFAULT 0,
    lease_until         timestamptz,
    -- the validating process, `<hostname>:<pid>`: a process on that host that sees it gone
    -- takes the validation over at once (migration 012)
    lease_holder        text,
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
-- certificate's TBS and linted copy (tbs_der / lint_der).
-- A job whose SCTs fell short goes back to `queued` until retry_at (deferrals counts those
-- returns, which are not faults).
ALTER TABLE issuance_jobs ADD COLUMN IF NOT EXISTS precert_tbs_der bytea;
ALTER TABLE issuance_jobs ADD COLUMN IF NOT EXISTS precert_lint_der bytea;
ALTER TABLE issuance_jobs ADD COLUMN IF NOT EXISTS precert_der bytea;
ALTER TABLE issuance_jobs ADD COLUMN IF NOT EXISTS ct_submitted_at timestamptz;
ALTER TABLE issuance_jobs ADD COLUMN IF NOT EXISTS scts jsonb;
ALTER TABLE issuance_jobs ADD COLUMN IF NOT EXISTS retry_at timestamptz;
ALTER TABLE issuance_jobs ADD COLUMN IF NOT EXISTS deferrals integer NOT NULL DEFAULT 0;
-- The profile the job issues under (the order's; migration 008).
ALTER TABLE issuance_jobs ADD COLUMN IF NOT EXISTS profile text NOT NULL DEFAULT 'dv';

-- The step a job has reached (docs/architecture.md, "The signing worker's steps"): queued ->
-- prepared -> precert_signed -> scts_collected -> issued. Each recording moves it on with a
-- conditional update (WHERE step = the one before); a job a worker may still take has every
-- column its step needs (the worker reads it as that step's typed view). Migration 005.
ALTER TABLE issuance_jobs ADD COLUMN IF NOT EXISTS step text NOT NULL DEFAULT 'queued'
    CONSTRAINT issuance_jobs_step
    CHECK (step IN ('queued', 'prepared', 'precert_signed', 'scts_collected', 'issued'));
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'issuance_jobs_step_recorded') THEN
        ALTER TABLE issuance_jobs ADD CONSTRAINT issuance_jobs_step_recorded CHECK (
            status NOT IN ('queued', 'running') OR (
                (step IN ('queued', 'issued') OR (serial IS NOT NULL AND not_before IS NOT NULL
                    AND not_after IS NOT NULL AND precert_tbs_der IS NOT NULL
                    AND precert_lint_der IS NOT NULL))
                AND (step NOT IN ('precert_signed', 'scts_collected')
                     OR (precert_der IS NOT NULL AND ct_submitted_at IS NOT NULL))
                AND (step <> 'scts_collected'
                     OR (scts IS NOT NULL AND tbs_der IS NOT NULL AND lint_der IS NOT NULL))));
    END IF;
END
$$;

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

-- ---------------------------------------------------------------------------------------
-- Key compromise (BR 4.9.1.1 #3, 4.9.12, 6.1.1.3(4), 7.2.2) and precertificate revocation
-- (BR 7.1.2.9, 4.9.9: a precertificate's serial is a certificate's for revocation).

-- SHA-256 of the DER SubjectPublicKeyInfo of a DER Certificate (precertificates included):
-- the same id blocked_keys uses. Walks the DER: Certificate SEQUENCE, TBSCertificate
-- SEQUENCE, optional [0] version, serialNumber, signature, issuer, validity, subject, then
-- subjectPublicKeyInfo. NULL for bytes that are not a certificate (never for what the
-- signer stored; the sweep logs certificates without a hash, see status/key_compromise.py).
CREATE OR REPLACE FUNCTION acme_ca_spki_sha256(der bytea) RETURNS bytea
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    total  integer := length(der);
    pos    integer := 0;  -- 0-based offset of the current TLV
    depth  integer := 0;  -- 0: Certificate, 1: TBSCertificate, 2: inside the TBSCertificate
    field  integer := 0;  -- TBSCertificate fields seen, version excluded
    tag    integer;
    len    integer;
    head   integer;
    octets integer;
BEGIN
    LOOP
        IF pos + 2 > total THEN
            RETURN NULL;
        END IF;
        tag := get_byte(der, pos);
        len := get_byte(der, pos + 1);
        head := 2;
        IF len >= 128 THEN
            octets := len - 128;
            IF octets < 1 OR octets > 3 OR pos + 2 + octets > total THEN
                RETURN NULL;
            END IF;
            len := 0;
            FOR i IN 0 .. octets - 1 LOOP
                len := len * 256 + get_byte(der, pos + 2 + i);
            END LOOP;
            head := 2 + octets;
        END IF;
        IF pos + head + len > total THEN
            RETURN NULL;
        END IF;
        IF depth < 2 THEN
            IF tag <> 48 THEN  -- SEQUENCE
                RETURN NULL;
            END IF;
            depth := depth + 1;
            pos := pos + head;
        ELSIF field = 0 AND tag = 160 THEN  -- [0] EXPLICIT version
            pos := pos + head + len;
        ELSE
            field := field + 1;
            IF field = 1 AND tag <> 2 THEN  -- serialNumber INTEGER
                RETURN NULL;
            END IF;
            IF field = 6 THEN
                IF tag <> 48 THEN
                    RETURN NULL;
                END IF;
                RETURN sha256(substring(der FROM pos + 1 FOR head + len));
            END IF;
            pos := pos + head + len;
        END IF;
    END LOOP;
END
$$;

-- Every certificate and precertificate is found by its key (the key-compromise sweep).
-- Generated, so every insert path fills it and existing rows are backfilled when the column
-- is added (a table rewrite: see the migration note in docs/operations.md).
ALTER TABLE certificates ADD COLUMN IF NOT EXISTS spki_sha256 bytea
    GENERATED ALWAYS AS (acme_ca_spki_sha256(der)) STORED;
CREATE INDEX IF NOT EXISTS certificates_spki ON certificates (spki_sha256);

-- A precertificate is revocable by itself: its order may have failed (CT deadline) and no
-- certificate will ever carry its serial.
ALTER TABLE precertificates ADD COLUMN IF NOT EXISTS revoked_at timestamptz;
ALTER TABLE precertificates ADD COLUMN IF NOT EXISTS revocation_reason smallint;
ALTER TABLE precertificates ADD COLUMN IF NOT EXISTS spki_sha256 bytea
    GENERATED ALWAYS AS (acme_ca_spki_sha256(der)) STORED;
CREATE INDEX IF NOT EXISTS precertificates_spki ON precertificates (spki_sha256);
CREATE INDEX IF NOT EXISTS precertificates_revoked ON precertificates (issuer, not_after)
    WHERE revoked_at IS NOT NULL;

-- The revocation time an OCSP response states, so a changed revocationDate (BR 7.2.2:
-- keyCompromise backdating) is re-signed like a changed status or reason.
ALTER TABLE ocsp_responses ADD COLUMN IF NOT EXISTS revoked_at timestamptz;

-- A certificate stored after its precertificate's serial was revoked is stored revoked (the
-- serial is what was revoked). FOR SHARE waits for a revocation of that serial in flight.
CREATE OR REPLACE FUNCTION acme_ca_certificate_inherits_revocation() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    pre record;
BEGIN
    SELECT revoked_at, revocation_reason INTO pre FROM precertificates
        WHERE serial = NEW.serial FOR SHARE;
    IF FOUND AND pre.revoked_at IS NOT NULL
       AND (NEW.revoked_at IS NULL OR NEW.revoked_at > pre.revoked_at) THEN
        NEW.revoked_at := pre.revoked_at;
        NEW.revocation_reason := pre.revocation_reason;
    END IF;
    RETURN NEW;
END
$$;
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'certificates_inherit_revocation') THEN
        CREATE TRIGGER certificates_inherit_revocation BEFORE INSERT ON certificates
            FOR EACH ROW EXECUTE FUNCTION acme_ca_certificate_inherits_revocation();
    END IF;
END $$;

-- What CRLs and OCSP answer for: every certificate, and every precertificate whose
-- certificate is not stored (yet, or ever). From signing on a precertificate's serial counts
-- as issued (BR 7.1.2.9, 4.9.9), so "unknown" is never the answer, and it is revocable:
-- revoking a serial revokes both rows (db/certificates.py).
CREATE OR REPLACE VIEW certificate_statuses AS
    SELECT 0 AS kind, id, issuer, serial, not_after, revoked_at, revocation_reason
    FROM certificates
    UNION ALL
    SELECT 1 AS kind, p.id, p.issuer, p.serial, p.not_after, p.revoked_at, p.revocation_reason
    FROM precertificates p
    WHERE NOT EXISTS (SELECT 1 FROM certificates c WHERE c.serial = p.serial);

-- Durable key-compromise sweeps: each revokes every unexpired certificate and precertificate
-- with the key, of any account, with reason keyCompromise (BR 4.9.1.1 #3: within 24 hours),
-- and moves an earlier revocation of another reason to keyCompromise. Queued in the
-- transaction that blocks the key; run by the signing workers (status/key_compromise.py)
-- under a lease (locked_by / locked_until), retried with backoff (run_after) after a failure.
-- revocationDate of what it revokes: compromised_at, never before the certificate's notBefore
-- and never later than an earlier revocation (BR 7.2.2 note on backdating).
CREATE TABLE IF NOT EXISTS key_compromise_sweeps (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    spki_sha256     bytea NOT NULL CHECK (length(spki_sha256) = 32),
    compromised_at  timestamptz NOT NULL,
    requested_by    text NOT NULL,
    reason          text NOT NULL,
    status          text NOT NULL CHECK (status IN ('queued', 'done')),
    attempts        integer NOT NULL DEFAULT 0,
    run_after       timestamptz NOT NULL,
    locked_by       text,
    locked_until    timestamptz,
    revoked         integer NOT NULL DEFAULT 0,
    updated         integer NOT NULL DEFAULT 0,
    last_error      text,
    created_at      timestamptz NOT NULL,
    finished_at     timestamptz
);
CREATE INDEX IF NOT EXISTS key_compromise_sweeps_due ON key_compromise_sweeps (run_after)
    WHERE status = 'queued';
CREATE INDEX IF NOT EXISTS key_compromise_sweeps_key ON key_compromise_sweeps (spki_sha256);

-- ---------------------------------------------------------------------------------------
-- The audit trail (CP 5.4.1, 5.4.3, 5.5.2; issue 16): tamper-evident, never updated, kept
-- by month. db/audit_chain.py verifies, exports and retires it; docs/operations.md.

-- The ends of the hash chains: each chain's last row id, position and hash (32 zero bytes
-- before its first row). There are 8 chains (db/audit_chain.CHAINS); the rows of a
-- transaction join chain coalesce(order_id, account_id, 0) % 8 of its first row. Each
-- head's row lock serializes the writers of its chain only: see acme_ca_audit_chain().
CREATE TABLE IF NOT EXISTS audit_chain_head (
    chain      smallint PRIMARY KEY CHECK (chain >= 0 AND chain < 8),
    last_id    bigint NOT NULL,
    last_seq   bigint NOT NULL,
    last_hash  bytea NOT NULL CHECK (length(last_hash) = 32)
);
INSERT INTO audit_chain_head (chain, last_id, last_seq, last_hash)
    SELECT k, 0, 0, '\x0000000000000000000000000000000000000000000000000000000000000000'
    FROM generate_series(0, 7) AS k
    ON CONFLICT DO NOTHING;
-- Audit row ids, in the order rows took their chain's lock: across chains, about the order
-- in which they were written.
CREATE SEQUENCE IF NOT EXISTS audit_event_ids AS bigint;

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

-- Chains each new row to the one before in its chain. The chain head's row lock (FOR UPDATE)
-- is held until the inserting transaction ends, so concurrent writers of one chain take their
-- turn: each reads the head the previous writer committed (READ COMMITTED re-reads the
-- locked row), and one that rolls back leaves the head as it was. A row's id (from
-- audit_event_ids, taken under the lock) therefore grows along its chain, and `seq` is its
-- position in the chain, without gaps. The cost: transactions that write audit rows to the
-- same chain serialize from that insert to their commit (WAL flush included); eight chains
-- let the writers of eight orders commit at once (issue 20, docs/performance.md).
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

-- One partition per calendar month (UTC) of `parent` (audit_events, requests), named
-- <parent>_yYYYYmMM, for `months` months from the month of `start`; returns the names made.
-- A month whose rows already went to the default partition (a clock far off, or no run for
-- months) keeps them there: the default partition is never retired.
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

-- audit_events' months, each refusing TRUNCATE: TRUNCATE of one partition does not fire
-- the parent's statement trigger.
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
SELECT acme_ca_audit_ensure_partitions(now(), 3);

-- Where the retention job moves months past audit_retention_days (CP 5.4.3, 5.5.2), for the
-- operator to archive and drop: detached, read-only by default privileges, still chained.
CREATE SCHEMA IF NOT EXISTS audit_archive;

-- ---------------------------------------------------------------------------------------
-- ACME requests, one compact row each (issue 16): what `acme-ca admin order` shows as the
-- requests that touched an order. Written in batches off the response path
-- (db/requests.RequestRecorder); the ids come from the URL and from what the handler bound.
-- Part of the RA's record (CP 5.4.3, 5.5.2), so kept like audit_events: by month, a month
-- moved whole to audit_archive by `acme-ca audit retention` once past audit_retention_days
-- (migration 013). The id comes from a sequence (PostgreSQL 15 has no identity column on a
-- partitioned table).
CREATE SEQUENCE IF NOT EXISTS requests_ids AS bigint;
CREATE TABLE IF NOT EXISTS requests (
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
CREATE TABLE IF NOT EXISTS requests_default PARTITION OF requests DEFAULT;
CREATE INDEX IF NOT EXISTS requests_request_id ON requests (request_id);
CREATE INDEX IF NOT EXISTS requests_order ON requests (order_id) WHERE order_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS requests_authz ON requests (authz_id) WHERE authz_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS requests_challenge ON requests (challenge_id)
    WHERE challenge_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS requests_certificate ON requests (certificate_id)
    WHERE certificate_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS requests_account ON requests (account_id, at)
    WHERE account_id IS NOT NULL;
SELECT count(*) FROM acme_ca_month_partitions('requests', now(), 3);

-- ---------------------------------------------------------------------------------------
-- Rate limits (issue 16; docs/operations.md, "Rate limits"). One GCRA bucket per limit and
-- key (account id, registered domain, name-set digest, account:hostname, address range):
-- its theoretical arrival time `tat`, moved by one INSERT ... ON CONFLICT DO UPDATE per
-- request (db/ratelimits.py), with the count/period it was last judged by. A bucket whose
-- tat has passed is full and is purged.
CREATE TABLE IF NOT EXISTS rate_limit_buckets (
    limit_name      text NOT NULL,
    bucket_key      text NOT NULL,
    count           integer NOT NULL CHECK (count >= 0),
    period_seconds  integer NOT NULL CHECK (period_seconds > 0),
    tat             timestamptz NOT NULL,
    allowed         boolean NOT NULL,
    PRIMARY KEY (limit_name, bucket_key)
);
CREATE INDEX IF NOT EXISTS rate_limit_buckets_tat ON rate_limit_buckets (tat);

-- Per-key overrides set by `acme-ca admin limits set` (count 0 blocks the key); each change
-- is an audit row (ratelimit.override_set / ratelimit.override_cleared).
CREATE TABLE IF NOT EXISTS rate_limit_overrides (
    limit_name      text NOT NULL,
    bucket_key      text NOT NULL,
    count           integer NOT NULL CHECK (count >= 0),
    period_seconds  integer NOT NULL CHECK (period_seconds > 0),
    comment         text NOT NULL DEFAULT '',
    actor           text NOT NULL,
    created_at      timestamptz NOT NULL,
    PRIMARY KEY (limit_name, bucket_key)
);
