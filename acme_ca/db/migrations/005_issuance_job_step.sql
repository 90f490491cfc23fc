-- Issuance jobs record the step they have reached (issue 18 item 2): queued -> prepared ->
-- precert_signed -> scts_collected -> issued, instead of leaving it to the NULL-ness of the
-- columns each step fills. Older jobs get the step their recorded columns show.

ALTER TABLE issuance_jobs ADD COLUMN IF NOT EXISTS step text;

-- Jobs prepared by a worker without Certificate Transparency (before CT was always on): their
-- TBS carries no poison and their serial may be signed already, so they can never become a
-- precertificate. The worker used to fail them when it took them; now the migration does,
-- with the same problem, audit row and order event (processing -> invalid).
WITH legacy AS (
    UPDATE issuance_jobs
       SET status = 'failed', locked_by = NULL, locked_until = NULL, updated_at = now(),
           error = jsonb_build_object('reason', 'prepared without certificate transparency',
                                      'serial', serial)
     WHERE status IN ('queued', 'running') AND serial IS NOT NULL AND precert_tbs_der IS NULL
    RETURNING order_id, account_id, serial
), failed_orders AS (
    UPDATE orders o
       SET status = 'invalid', updated_at = now(),
           error = coalesce(o.error, jsonb_build_object(
               'type', 'urn:ietf:params:acme:error:serverInternal', 'status', 500,
               'detail', 'issuance was prepared without Certificate Transparency; order again'))
      FROM legacy
     WHERE o.id = legacy.order_id AND o.status = 'processing'
    RETURNING o.id
)
INSERT INTO audit_events (at, event, actor, account_id, order_id, details)
SELECT now(), 'issuance.failed', 'ca', legacy.account_id, legacy.order_id,
       jsonb_build_object('reason', 'prepared without certificate transparency',
                          'serial', legacy.serial, 'migration', 5)
  FROM legacy;

UPDATE issuance_jobs j SET step = CASE
    WHEN j.status = 'done'
         OR EXISTS (SELECT 1 FROM certificates c WHERE c.order_id = j.order_id) THEN 'issued'
    WHEN j.scts IS NOT NULL AND j.tbs_der IS NOT NULL AND j.precert_der IS NOT NULL
        THEN 'scts_collected'
    WHEN j.precert_der IS NOT NULL THEN 'precert_signed'
    WHEN j.serial IS NOT NULL THEN 'prepared'
    ELSE 'queued'
END
WHERE j.step IS NULL;

ALTER TABLE issuance_jobs ALTER COLUMN step SET DEFAULT 'queued';
ALTER TABLE issuance_jobs ALTER COLUMN step SET NOT NULL;
ALTER TABLE issuance_jobs ADD CONSTRAINT issuance_jobs_step CHECK (
    step IN ('queued', 'prepared', 'precert_signed', 'scts_collected', 'issued'));
ALTER TABLE issuance_jobs ADD CONSTRAINT issuance_jobs_step_recorded CHECK (
    status NOT IN ('queued', 'running') OR (
        (step IN ('queued', 'issued') OR (serial IS NOT NULL AND not_before IS NOT NULL
            AND not_after IS NOT NULL AND precert_tbs_der IS NOT NULL
            AND precert_lint_der IS NOT NULL))
        AND (step NOT IN ('precert_signed', 'scts_collected')
             OR (precert_der IS NOT NULL AND ct_submitted_at IS NOT NULL))
        AND (step <> 'scts_collected'
             OR (scts IS NOT NULL AND tbs_der IS NOT NULL AND lint_der IS NOT NULL))));
