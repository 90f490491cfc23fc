-- BR 3.2.2.8: the signing worker rechecks CAA older than 8 hours just before it signs a
-- precertificate, and records when a recheck allowed issuance.
ALTER TABLE authorizations ADD COLUMN IF NOT EXISTS caa_checked_at timestamptz;
