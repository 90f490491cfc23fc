-- Organization Validation (issue 15; CP 3.2.2.1(2), BR 4.2.1): vetted organizations, and EAB
-- keys that bind their account to one. Same definitions as schema.sql.
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
ALTER TABLE eab_keys
    ADD COLUMN IF NOT EXISTS organization_id bigint REFERENCES organizations (id);
