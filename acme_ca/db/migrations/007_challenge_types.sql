-- The validation methods of issue 14 (va/registry.py): tls-alpn-01 (BR 3.2.2.4.20),
-- dns-account-01 (BR 3.2.2.4.21) and dns-persist-01 (BR 3.2.2.4.22) join http-01 and dns-01
-- as challenge types. Which of them are offered is configuration (challenge_types); the
-- column only refuses a type no version of the CA knows.
ALTER TABLE challenges DROP CONSTRAINT IF EXISTS challenges_type_check;
ALTER TABLE challenges ADD CONSTRAINT challenges_type_check CHECK (
    type IN ('http-01', 'dns-01', 'tls-alpn-01', 'dns-account-01', 'dns-persist-01'));
