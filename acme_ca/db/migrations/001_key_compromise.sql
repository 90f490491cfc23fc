-- 001: key compromise and precertificate revocation (issue 19).
-- SPKI hashes for every certificate and precertificate (generated from the stored DER, so
-- this backfills existing rows: a rewrite of both tables), precertificates revocable on their
-- own, the revocation time in OCSP rows, and the durable key-compromise sweep queue.
-- Everything here is also in schema.sql, written to be replayed.

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

-- Revoked responses stored before this migration state their certificate's revocation time
-- (it could not change until now).
UPDATE ocsp_responses r SET revoked_at = s.revoked_at
FROM certificate_statuses s
WHERE r.status = 'revoked' AND r.revoked_at IS NULL
  AND s.issuer = r.issuer AND s.serial = r.serial;

-- Keys blocked for keyCompromise before sweeps existed get theirs now: other certificates
-- with those keys were never revoked.
INSERT INTO key_compromise_sweeps (spki_sha256, compromised_at, requested_by, reason, status,
                                   run_after, created_at)
SELECT b.spki_sha256, b.added_at, b.source, 'migration 001: ' || b.reason, 'queued', now(), now()
FROM blocked_keys b
WHERE b.reason LIKE 'keyCompromise%';

-- A certificate revoked before this migration revoked its serial; its precertificate row now
-- says so too (revocations are written to both from now on).
UPDATE precertificates p SET revoked_at = c.revoked_at, revocation_reason = c.revocation_reason
FROM certificates c
WHERE c.serial = p.serial AND c.revoked_at IS NOT NULL AND p.revoked_at IS NULL;
