"""Certificate Transparency for the issuance path (RFC 6962; BR 7.1.2.9; CP 4.3.1).

* :mod:`.sct`: Signed Certificate Timestamps in their TLS encoding, the data a log signs
  (RFC 6962 §3.2), their verification, and the DER surgery that turns a precertificate TBS
  into the final certificate's (poison out, SCT list in, every other byte unchanged);
* :mod:`.loglist`: Chrome's v3 log list (``operators[].logs`` and ``operators[].tiled_logs``),
  reloaded from its file when it changes;
* :mod:`.policy`: how many SCTs from how many operators a certificate needs, and which logs
  may give them;
* :mod:`.submit`: ``add-pre-chain`` / ``add-chain`` to the chosen logs, concurrently with a
  stagger, with per-log timeouts and retries, every SCT verified before it is kept.

The signing worker's steps (:mod:`acme_ca.ca.issuance_steps`) drive these and record each.
"""
