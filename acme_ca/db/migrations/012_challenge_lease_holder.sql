-- Issue 17: a validation's lease names its holder (`<hostname>:<pid>`), so a process on the
-- same host that sees the holder gone takes the validation over at once instead of waiting
-- for the lease to lapse. Validations started before this migration have no holder and are
-- taken over when their lease lapses, as before.
ALTER TABLE challenges ADD COLUMN IF NOT EXISTS lease_holder text;
