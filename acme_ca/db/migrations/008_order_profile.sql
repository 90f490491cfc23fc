-- Certificate profiles (issue 15, draft-ietf-acme-profiles): every order names the profile it
-- is issued under, and its issuance job carries it to the signing worker. Orders and jobs from
-- before profiles were all issued under the CP's DV profile, `dv`; the column default keeps a
-- process of the previous release (which names no profile) writing `dv` during an upgrade.
UPDATE orders SET profile = 'dv' WHERE profile IS NULL;
ALTER TABLE orders ALTER COLUMN profile SET DEFAULT 'dv';
ALTER TABLE orders ALTER COLUMN profile SET NOT NULL;
ALTER TABLE issuance_jobs ADD COLUMN IF NOT EXISTS profile text NOT NULL DEFAULT 'dv';
