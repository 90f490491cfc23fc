"""The configuration keys: one frozen :class:`Config` of flat TOML keys and what derives from them.

Every key has a default and a docstring (the ``doc`` metadata), so a new key deploys with an
old configuration, and ``docs/configuration.md`` is generated from these declarations
(``acme-ca config-doc``, :mod:`acme_ca.config.reference`).  A key's name is a contract: the
TOML key, its ``ACME_CA_*`` variable and its CLI flag are spelled from it.  Loading is
:mod:`acme_ca.config.load`, the invariants :mod:`acme_ca.config.checks`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from acme_ca.config.base import doc_key, split_host_port
from acme_ca.config.checks import check
from acme_ca.config.keys_service import ServiceKeys
from acme_ca.profiles import (
    DEFAULT_PROFILE,
    Inherited,
    Profile,
    ProfileSpec,
    resolve_profiles,
)

ENV_PREFIX = "ACME_CA_"
#: Where each process serves /metrics when ``metrics_listen`` is unset: distinct ports, so
#: serve, worker and a remote VA can run on one host.
DEFAULT_METRICS_LISTEN = {
    "serve": "127.0.0.1:14090",
    "worker": "127.0.0.1:14091",
    "remote-va": "127.0.0.1:14092",
}


@dataclass(frozen=True)
class Config(ServiceKeys):
    """Every setting of the CA: :class:`ServiceKeys`, then the issuance, status, test-mode,
    MPIC, CT and logging keys below.  Field docs are the operator documentation."""

    pki_dir: Path | None = doc_key(
        None,
        "Directory of the issuing hierarchy: `issuers.toml` (which issuers exist, their "
        "certificates, keys and URLs) and the certificates it names. Default: `home/pki`, "
        "created by `acme-ca init` (and by `serve` on first start with embedded defaults).",
    )
    pkcs11_module: str | None = doc_key(
        None,
        "Path of the PKCS#11 module of the HSM (e.g. /usr/lib/softhsm/libsofthsm2.so). Unset: "
        "issuer keys are software keys under `pki_dir` (development only; logged loudly).",
    )
    pkcs11_token_label: str = doc_key("acme-ca", "Label of the HSM token holding the CA keys.")
    pkcs11_pin: str | None = doc_key(
        None, "User PIN of the token. Prefer `pkcs11_pin_file` or the environment."
    )
    pkcs11_pin_file: Path | None = doc_key(None, "File whose first line is the token's user PIN.")
    pkcs11_sessions: int = doc_key(2, "PKCS#11 sessions kept open per issuer key.")
    hsm_session_wait_seconds: int = doc_key(
        10,
        "Longest a signature waits for a free PKCS#11 session; past it the job backs off "
        "like any HSM failure (docs/operations.md, HSM loss).",
    )
    hsm_sign_timeout_seconds: int = doc_key(
        30,
        "Longest one signature may take inside the PKCS#11 module; a call that hangs past it "
        "fails the attempt (the job backs off and the sessions are reopened) instead of "
        "holding the job, whose lease is renewed meanwhile, for ever.",
    )
    hsm_deadline_seconds: int = doc_key(
        3600,
        "How long an order waits in `processing` while the HSM fails or its token is absent "
        "(the job backs off and retries, sessions are reopened when the token returns); "
        "after that the order becomes invalid with serverInternal.",
    )
    rsa_issuer: str = doc_key("dv-rsa", "Issuer (name in issuers.toml) for RSA subscriber keys.")
    ecdsa_issuer: str = doc_key(
        "dv-ecc", "Issuer (name in issuers.toml) for ECDSA subscriber keys."
    )
    status_base_url: str = doc_key(
        "http://pki.acme-ca.example.com",
        "Plain-HTTP base URL of the CRL, OCSP and issuer-certificate repository, written into "
        "certificates (CRL Distribution Points, AIA) by `acme-ca init`. Production: the host "
        "that serves them (the CP's is http://repo.pubcert.jprs.jp). The default is a "
        "documentation name: an internal name or IP address here would fail pre-issuance "
        "linting (cabf.internal_domain_name).",
    )
    policy_oid: str = doc_key(
        "1.3.6.1.4.1.53827.1.1.4",
        "The CA's own certificate policy OID, placed after the CA/B Forum DV OID "
        "2.23.140.1.2.1 (CP 1.2: JPRS CA Certificate Policy).",
    )
    validity_days: int | None = doc_key(
        None,
        "Validity of subscriber certificates in days, counted inclusively. Unset: the BR "
        "SHOULD for the issuance date (199, then 99 from 2027-03-15, 46 from 2029-03-15). "
        "Never above the BR maximum (200/100/47) whatever is set.",
    )
    default_profile: str = doc_key(
        DEFAULT_PROFILE,
        "Profile of orders that name none (draft-ietf-acme-profiles §4); one of `profiles`. "
        "The shipped profiles are `dv` (the CP's DV profile), `tlsserver`, `shortlived` and "
        "`ov` (docs/profiles.md).",
    )
    profiles: tuple[ProfileSpec, ...] = doc_key(
        (),
        "`[profiles.<name>]` tables: each changes the shipped profile of that name or adds "
        "one; its keys are in the profile table below. TOML only (no environment variable).",
    )
    backdate_seconds: int = doc_key(
        60, "How far notBefore lies before the signing time (clock skew of relying parties)."
    )
    include_subject_key_identifier: bool = doc_key(
        False,
        "Put SKI in subscriber certificates. The CP's profile lists it; BR 7.1.2.7.6 makes it "
        "NOT RECOMMENDED, so it is off (see docs/conformance.md).",
    )
    lint_final_certificates: bool = doc_key(
        False,
        "Also run pkilint on each final certificate (DV-FINAL-CERTIFICATE), not only on its "
        "precertificate. BR 4.3.1.2 makes it unnecessary when the final TBS is proven to "
        "match the linted precertificate as RFC 6962 §3.2 describes, which the worker "
        "checks byte for byte before signing; costs one more lint (about a third of the "
        "worker's CPU per certificate).",
    )
    weak_key_blocklists: list[str] = doc_key(
        [],
        "openssl-blacklist format files of Debian weak RSA keys (BR 6.1.1.3), e.g. from "
        "Debian's openssl-blacklist package, named as Debian names them "
        "(`blacklist.RSA-2048`): the name says which RSA size a list covers, and a production "
        "hierarchy refuses RSA keys of sizes no list covers (docs/production.md).",
    )
    serve_worker: bool = doc_key(
        True,
        "Run a signing worker with `acme-ca serve`: a child process of serve (the same "
        "interpreter, configuration and database; stopped with serve), so serve and the worker "
        "use two cores. Production runs `acme-ca worker` as separate processes and sets this "
        "to false.",
    )
    serve_worker_in_process: bool = doc_key(
        False,
        "With `serve_worker`: run the worker as a task inside the serve process instead of as "
        "its child process: one process, one core, one `/metrics` with every family (debugging, "
        "profiling, tests that need a single process).",
    )
    worker_poll_seconds: int = doc_key(
        5, "How often a worker looks for jobs even without a notification (lost NOTIFYs)."
    )
    issuance_lease_seconds: int = doc_key(
        30,
        "How long a worker owns an issuance job without renewing it. The worker renews the "
        "lease every third of this while the job is in flight, also during long HSM and CT "
        "calls; a killed worker's jobs are taken over when it lapses, or at once by a "
        "worker on the same host that sees the holder's process is gone.",
    )
    worker_concurrency: int = doc_key(
        8,
        "Issuance jobs one worker process carries at once. A job spends most of its time "
        "waiting (HSM, CT logs, database), so several in flight keep the process busy; each "
        "holds a lease of its own, so workers on other machines never take the same job.",
    )
    status_listen: str = doc_key(
        "127.0.0.1:14080",
        "HOST:PORT of the plain-HTTP status listener: CRLs, OCSP and issuer certificates "
        "(what `status_base_url` points at). `off` disables it.",
    )
    metrics_listen: str | None = doc_key(
        None,
        "HOST:PORT of this process's Prometheus listener (`GET /metrics`, plain HTTP, never "
        "the ACME port), or `off`. Unset: `127.0.0.1:14090` for `serve` (its status "
        "listener included, and its worker with `serve_worker_in_process`), `127.0.0.1:14091` "
        "for `worker` and for serve's worker child process, `127.0.0.1:14092` for "
        "`remote-va`, so the three can share a host. Set on `serve` (an address or `off`), "
        "serve's worker child serves no metrics. Flag: `--metrics-listen`. See "
        "docs/operations.md, Metrics and alerts.",
    )
    crl_validity_hours: int = doc_key(
        96,
        "nextUpdate - thisUpdate of every CRL: CP Table 7.2.2 gives 96 hours; BR 4.9.7 allows "
        "at most 10 days.",
    )
    crl_interval_hours: int = doc_key(
        24, "A fresh CRL is published at least this often (CP 4.9.7: every 24 hours)."
    )
    crl_publish_dir: Path | None = doc_key(
        None,
        "Directory where every published CRL is also written as `<issuer>.crl` (atomically), "
        "for an operator to hand to a CDN. Default: `home/crl`.",
    )
    audit_retention_days: int = doc_key(
        2557,
        "Days audit rows and stored requests are kept in the live `audit_events` and "
        "`requests` tables before `acme-ca audit retention` moves their month (a whole "
        "partition) to the `audit_archive` schema (CP 5.4.3, 5.5.2: at least seven years; "
        "2557 days always covers seven years). One period for both, so an order's timeline "
        "is never half archived. Values below 2557 are refused.",
    )
    audit_signing_key: Path | None = doc_key(
        None,
        "Ed25519 private key (PEM, PKCS#8) that signs `acme-ca audit export` files. Never an "
        "issuing key: a key of its own, kept by the operator. Default: "
        "`home/audit/export-ed25519.pem`, created (mode 0600) on the first export.",
    )
    ocsp_validity_hours: int = doc_key(
        96, "nextUpdate - thisUpdate of OCSP responses (BR 4.9.10: 8 hours to 10 days)."
    )
    test_mode: bool = doc_key(
        False,
        "Test mode (`serve --test`): starts the challenge test server and uses it as the "
        "resolver and http-01 target, and enables the Pebble-compatible knobs. Never with an "
        "HSM (`pkcs11_module`).",
    )
    challsrv_dns: str = doc_key("127.0.0.1:8053", "Test mode: the challenge test server's DNS.")
    challsrv_management: str = doc_key(
        "127.0.0.1:8055", "Test mode: the pebble-challtestsrv-compatible management API."
    )
    challsrv_http01: str = doc_key(
        "127.0.0.1:5002",
        "Test mode: the challenge test server's own http-01 listener, or `off` so a "
        "standalone client can bind the validation port itself.",
    )
    challsrv_tlsalpn01: str = doc_key(
        "127.0.0.1:5001",
        "Test mode: the challenge test server's own tls-alpn-01 listener (answers with the "
        "certificates of `/add-tlsalpn01`), or `off` so a client that answers the challenge "
        "itself (`lego --tls`) can bind the validation port.",
    )
    challsrv_https01: str = doc_key(
        "127.0.0.1:5003",
        "Test mode: the challenge test server's https-01 listener (http-01 answers over TLS, "
        "pebble-challtestsrv's -https01), or `off`. In test mode the CA's http-01 redirects "
        "to https (port 443) are fetched there.",
    )
    https01_port: int = doc_key(
        443,
        "Port an http-01 redirect to an https URL connects to (BR 3.2.2.4.19 allows 443 only; "
        "test mode moves it to the challenge test server's https-01 listener).",
    )
    management_listen: str = doc_key(
        "127.0.0.1:15000",
        "Test mode: Pebble's management interface (`managementListenAddress`) on its own "
        "listener, HTTPS with the ACME listener's certificate: /roots/N, /root-keys/N, "
        "/intermediates/N, /intermediate-keys/N, /cert-status-by-serial/SERIAL (also on the "
        "challenge test server's management API); `off` disables it.",
    )
    special_use_names: bool = doc_key(
        False,
        "Test mode: accept the special-use names CI suites use (.test, .example, .localhost, "
        ".invalid, and single labels that are not TLDs, such as localhost), waiving only the "
        "internal-name lint finding for them (each waiver logged); every other name rule "
        "stays. On by default in test mode; `false` restores the production name policy. "
        "Refused outside test mode.",
    )
    ephemeral: bool = doc_key(
        False,
        "Test mode (`serve --test --ephemeral`): a throwaway home made for this run (new "
        "hierarchy, TLS certificate and embedded PostgreSQL) and removed at exit, as Pebble "
        "forgets everything. Not with `database_url` or `pki_dir`, which would outlive it.",
    )
    deterministic: bool = doc_key(
        False,
        "Test mode (`serve --test --deterministic`): the reproducible preset: no nonce "
        "rejection, no validation sleep, authorizations always reused, whatever PEBBLE_* "
        "variables say. Refused together with a knob set otherwise.",
    )
    pebble_config: Path | None = doc_key(
        None,
        "Test mode (`serve --test --pebble-config FILE`): a Pebble JSON configuration file; "
        "its members we support set the matching keys (below TOML, env and flags), its "
        "`externalAccountMACKeys` become EAB keys that bind any number of accounts, as in "
        "Pebble, and the members we ignore are logged (`testmode.pebble_config`).",
    )
    alternate_roots: int | None = doc_key(
        None,
        "Test mode: chains besides the primary one (Pebble's PEBBLE_ALTERNATE_ROOTS, 0..63). "
        "With this or `chain_length` set, the generated hierarchy has Pebble's shape: 1 + N "
        "chains, each with its own root, its intermediates and its own certificate for each "
        "issuing CA (same key), the first issued with, the others offered as alternate "
        "chains. Unset (both): the development hierarchy, whose one alternate chain reaches "
        "Root X1 through a cross-certificate. Refused outside test mode and with `pki_dir`.",
    )
    chain_length: int | None = doc_key(
        None,
        "Test mode: certificates between a leaf and its root, the issuing CA's included, the "
        "root's not (Pebble's PEBBLE_CHAIN_LENGTH, 1..10; 1: the root signs the issuing CA). "
        "See `alternate_roots`.",
    )
    nonce_reject_percent: int = doc_key(
        0,
        "Test mode: share of valid nonces rejected with badNonce (Pebble's "
        "PEBBLE_WFE_NONCEREJECT).",
    )
    validation_delay_seconds: int = doc_key(
        0,
        "Test mode: each validation waits a random 0..N seconds first (Pebble sleeps unless "
        "PEBBLE_VA_NOSLEEP is set).",
    )
    always_valid: bool = doc_key(
        False, "Test mode: every validation passes unchecked (PEBBLE_VA_ALWAYS_VALID)."
    )
    authz_reuse_percent: int = doc_key(
        100,
        "Share of newOrder lookups that may reuse an existing authorization (Pebble's "
        "PEBBLE_AUTHZREUSE); below 100 only in test mode.",
    )
    mpic_perspectives_file: Path | None = doc_key(
        None,
        "TOML file listing the remote validation perspectives (BR 3.2.2.9): `[[perspectives]]` "
        "with url, id, rir, latitude, longitude, resolver_latitude, resolver_longitude. "
        "Unset: no corroboration, which a production hierarchy refuses (docs/production.md).",
    )
    mpic_client_cert: Path | None = doc_key(
        None, "PEM client certificate the primary presents to remote VAs (mutual TLS)."
    )
    mpic_client_key: Path | None = doc_key(None, "Private key of `mpic_client_cert`.")
    mpic_server_ca: Path | None = doc_key(
        None, "PEM CA certificate(s) the primary trusts for remote VAs' server certificates."
    )
    mpic_timeout_seconds: int = doc_key(10, "Per-remote timeout of one corroboration request.")
    mpic_grace_milliseconds: int = doc_key(
        250,
        "Once the quorum's outcome cannot change, how long the primary still waits for the "
        "remote perspectives yet to answer, so their results go into the record; the rest are "
        "then cancelled and recorded as not awaited. 0 cancels them at once; at most "
        "`mpic_timeout_seconds`. The decision itself never waits for it.",
    )
    test_perspectives: int = doc_key(
        0,
        "Test mode: start this many local remote VAs (`serve --test --perspectives N`) so "
        "corroboration can be tried on one machine.",
    )
    remote_va_listen: str = doc_key(
        "127.0.0.1:14443", "`acme-ca remote-va`: HOST:PORT of its mutual-TLS listener."
    )
    perspective_id: str = doc_key("", "`acme-ca remote-va`: this perspective's id.")
    perspective_rir: str = doc_key(
        "", "`acme-ca remote-va`: this perspective's RIR (ARIN, RIPE, APNIC, LACNIC, AFRINIC)."
    )
    remote_va_client_ca: Path | None = doc_key(
        None,
        "`acme-ca remote-va`: CA certificate that must have issued the primary's client "
        "certificate; other clients are refused.",
    )
    ct_log_list: Path | None = doc_key(
        None,
        "Certificate Transparency log list in Chrome's v3 JSON format (reloaded when it "
        "changes). Unset on the embedded defaults and in test mode: three in-process test logs "
        "are started and their list written to `home/ct/log_list.json`; they get "
        "precertificates only (final certificates go to the logs of this list).",
    )
    ct_timeout_seconds: int = doc_key(10, "Timeout of one CT log submission.")
    ct_deadline_seconds: int = doc_key(
        3600,
        "How long issuance keeps retrying to collect enough SCTs before the order becomes "
        "invalid (the precertificate stays recorded).",
    )
    ct_stagger_milliseconds: int = doc_key(
        2000,
        "While SCTs are still missing, one more CT log is asked this often, so a slow log "
        "does not hold issuance up (the logs the policy needs are asked at once). Lower: "
        "less latency when a log is slow, more submissions.",
    )
    ct_retry_pause_milliseconds: int = doc_key(
        250,
        "Pause before retrying a CT log that answered 429 or 5xx without `Retry-After`, "
        "or refused the connection (within `ct_timeout_seconds`, 3 tries at most).",
    )
    ct_backoff_initial_seconds: int = doc_key(
        10,
        "First pause before a job whose SCTs fell short of the policy tries again; it "
        "doubles on each retry up to `ct_backoff_max_seconds`, until `ct_deadline_seconds`.",
    )
    ct_backoff_max_seconds: int = doc_key(
        300, "Longest pause between two tries of a job whose SCTs fell short of the policy."
    )
    log_format: str = doc_key(
        "json", "`json` (one JSON object per line, for operators) or `console` (for people)."
    )
    log_level: str = doc_key("info", "Lowest log level emitted: debug, info, warning, error.")

    # ------------------------------------------------------------------ derived values
    @property
    def listen_host(self) -> str:
        return split_host_port(self.listen)[0]

    @property
    def listen_port(self) -> int:
        return split_host_port(self.listen)[1]

    @property
    def requests_in_flight_limit(self) -> int:
        """``max_requests_in_flight``, or 16 per pooled database connection (a request holds
        its connection for a few milliseconds: 4 per connection shed a 50-client load)."""
        return self.max_requests_in_flight or 16 * self.database_pool_size

    @property
    def rate_limits_enabled(self) -> bool:
        """``rate_limits``, or its default: on outside test mode."""
        return self.rate_limits if self.rate_limits is not None else not self.test_mode

    def metrics_address(self, process: str) -> str:
        """``metrics_listen``, or the default of ``process`` (serve, worker, remote-va)."""
        if self.metrics_listen is not None:
            return self.metrics_listen
        return DEFAULT_METRICS_LISTEN[process]

    @functools.cached_property
    def profile_table(self) -> Mapping[str, Profile]:
        """Every profile, resolved over the top-level keys it inherits (acme_ca.profiles)."""
        return resolve_profiles(
            self.profiles,
            Inherited(
                rsa_issuer=self.rsa_issuer,
                ecdsa_issuer=self.ecdsa_issuer,
                validity_days=self.validity_days,
                include_subject_key_identifier=self.include_subject_key_identifier,
                policy_oid=self.policy_oid,
                authz_reuse_days=self.authz_reuse_days,
            ),
        )

    @property
    def pki_path(self) -> Path:
        return self.pki_dir if self.pki_dir is not None else self.home / "pki"

    @property
    def crl_publish_path(self) -> Path:
        return self.crl_publish_dir if self.crl_publish_dir is not None else self.home / "crl"

    @property
    def audit_signing_key_path(self) -> Path:
        if self.audit_signing_key is not None:
            return self.audit_signing_key
        return self.home / "audit" / "export-ed25519.pem"

    @property
    def external_base_url(self) -> str:
        """The base URL without trailing slash, derived when not configured."""
        if self.base_url:
            return self.base_url.rstrip("/")
        scheme = "http" if self.plain_http else "https"
        host = self.listen_host
        if host in ("0.0.0.0", "::", ""):  # noqa: S104 - only used to name a URL
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"{scheme}://{host}:{self.listen_port}"

    def validate(self) -> Config:
        """Check every value once at load (:func:`acme_ca.config.checks.check`); raise
        :class:`~acme_ca.config.base.ConfigError` naming the key."""
        check(self)
        return self
