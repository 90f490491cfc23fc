"""One typed configuration, loaded once: defaults < TOML file < ``ACME_CA_*`` env < CLI flags.

Every key has a default and a docstring (the ``doc`` metadata), so a new key deploys with an
old configuration, and ``docs/configuration.md`` is generated from this module
(``acme-ca config-doc``).  Nothing re-reads configuration per request.
"""

from __future__ import annotations

import functools
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from acme_ca.acme.issuer_names import issuer_domain_names
from acme_ca.config_pebble import PebbleConfigError, read_pebble_config
from acme_ca.profiles import (
    DEFAULT_PROFILE,
    SHIPPED,
    Inherited,
    Profile,
    ProfileSpec,
    ProfileSpecError,
    parse_profile_specs,
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
DEFAULT_CHALLENGE_TYPES = ("http-01", "dns-01", "tls-alpn-01")
"""The validation methods offered unless ``challenge_types`` says otherwise."""


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the key."""


def _key(default: Any, doc: str, **kwargs: Any) -> Any:
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"doc": doc}, **kwargs)
    return field(default=default, metadata={"doc": doc}, **kwargs)


@dataclass(frozen=True)
class Config:
    """Every setting of the CA.  Field docs are the operator documentation."""

    home: Path = _key(
        Path(".acme-ca"),
        "Directory for the CA's own state: the embedded PostgreSQL cluster (`pg/`), the "
        "generated TLS material (`tls/`), development PKI (`pki/`). Env: `ACME_CA_HOME`.",
    )
    database_url: str | None = _key(
        None,
        "PostgreSQL DSN (`postgresql://user:pass@host:port/db`). Unset: the CA starts a "
        "private embedded PostgreSQL under `home/pg` and stops it on exit.",
    )
    database_pool_size: int = _key(10, "Maximum connections in the asyncpg pool per process.")
    database_acquire_timeout_seconds: int = _key(
        3,
        "Longest a request or a worker step waits for a free pooled database connection. "
        "Past it a request is answered at once with 503 `serverInternal` and `Retry-After`, "
        "instead of queueing into the client's timeout (docs/operations.md, load shedding).",
    )
    max_requests_in_flight: int = _key(
        0,
        "Requests one `serve` process works on at once; above it a request is answered at "
        "once with 503 `serverInternal` and `Retry-After`. 0: derived, 16 per pooled "
        "database connection (16 x `database_pool_size`: a request holds a connection for "
        "milliseconds, so 16 waiting per connection still clear within the acquire timeout).",
    )
    max_connections: int = _key(
        1000,
        "Client connections one `serve` process keeps open. A new connection above it "
        "closes the connection idle longest (no request in progress), so idle and slow "
        "clients cannot crowd out a real one. Kept below the process's open-files limit.",
    )
    keepalive_timeout_seconds: int = _key(
        15, "How long an idle keep-alive connection stays open after its last response."
    )
    header_read_timeout_seconds: int = _key(
        10,
        "How long a new connection may take to send its first request's headers before it "
        "is closed (slowloris protection; aiohttp has no header timeout of its own).",
    )
    overload_retry_after_seconds: int = _key(
        2,
        "`Retry-After` sent with the 503 answers of load shedding and of a database outage.",
    )
    listen: str = _key("127.0.0.1:14000", "HOST:PORT the ACME server listens on.")
    plain_http: bool = _key(
        False,
        "Serve plain HTTP instead of HTTPS, for running behind a TLS-terminating proxy. "
        "`base_url` should then name the proxy's https URL.",
    )
    base_url: str | None = _key(
        None,
        "External base URL clients use (scheme://host[:port], no path). Every URL the CA "
        "hands out is built from it and JWS `url` headers are checked against it; the Host "
        "header is never trusted. Default: derived from `listen` and `plain_http`.",
    )
    tls_cert: Path | None = _key(
        None,
        "PEM certificate chain for HTTPS. Unset: a certificate for localhost/127.0.0.1 is "
        "generated on first start, issued by a local CA written to `home/tls/ca.pem`.",
    )
    tls_key: Path | None = _key(None, "PEM private key for `tls_cert`.")
    terms_of_service: str | None = _key(
        "https://jprs.jp/pubcert/info/repository/",
        "URL of the subscriber terms, published as `meta.termsOfService`. When set, "
        "newAccount requires `termsOfServiceAgreed: true` (RFC 8555 §7.3). Empty: none.",
    )
    website: str | None = _key("https://jprs.jp/", "`meta.website` in the directory.")
    caa_identities: list[str] = _key(
        ["jprs.jp"],
        "Issuer domain names recognised in CAA `issue`/`issuewild` records and published "
        "as `meta.caaIdentities` (CP 4.2.4: `jprs.jp`).",
    )
    external_account_required: bool = _key(
        False,
        "Require External Account Binding on newAccount (RFC 8555 §7.3.4); keys are made "
        "with `acme-ca eab create`.",
    )
    nonce_lifetime_seconds: int = _key(
        3600, "How long a Replay-Nonce stays redeemable after it is handed out."
    )
    max_request_bytes: int = _key(
        50_000, "Largest request body accepted; larger ones get a 413 malformed problem."
    )
    orders_page_size: int = _key(
        50, "Orders per page of an account's `orders` list (RFC 8555 §7.1.2.1)."
    )
    retry_after_seconds: int = _key(
        3, "Retry-After value sent while an order or challenge is processing."
    )
    rate_limits: bool | None = _key(
        None,
        "Enforce the rate limits (new accounts per address range, new orders per account, "
        "certificates per registered domain, duplicate certificates, failed validations; "
        "docs/operations.md, Rate limits). Unset: on, except in test mode (`serve --test`), "
        "where only `true` turns them on.",
    )
    challenge_wait_seconds: int = _key(
        3,
        "How long a challenge POST waits for its validation to finish before answering "
        "`processing`; an answer of `valid` or `invalid` saves the client its polls. 0: "
        "answer at once (the validation still runs in the background).",
    )
    finalize_wait_seconds: int = _key(
        5,
        "How long finalize waits for the signing worker to store the certificate before "
        "answering `processing` (woken by NOTIFY, not polling); an answer of `valid` saves "
        "the client its polls. 0: answer at once.",
    )
    order_lifetime_seconds: int = _key(
        7 * 86400, "How long a new order stays usable before it becomes invalid (expired)."
    )
    pending_authz_lifetime_seconds: int = _key(
        7 * 86400,
        "How long a pending authorization and its challenge tokens live; at most 30 days "
        "(BR 3.2.2.4.7, 3.2.2.4.19).",
    )
    authz_reuse_days: int = _key(
        30,
        "How long a valid authorization is reused for new orders of the same account. Capped "
        "at the BR 4.2.1 limit for the current date (200 days until 2027-03-15, then 100, "
        "then 10 from 2029-03-15).",
    )
    max_names_per_order: int = _key(100, "Most identifiers one order may carry.")
    blocked_names: list[str] = _key(
        [], "Domain names (and everything below them) this CA refuses to certify."
    )
    validation_lease_seconds: int = _key(
        30,
        "How long one process owns a challenge it is validating without renewing it (it "
        "renews every third of this while the validation runs); after that another process "
        "takes the validation over (crash recovery).",
    )
    dns_resolver: str = _key(
        "127.0.0.1:53",
        "HOST:PORT of the DNSSEC-validating recursive resolver (e.g. Unbound) used for "
        "dns-01, CAA and http-01 address lookups. Comma-separate several.",
    )
    dnssec: str = _key(
        "require",
        "`require`: every DNS answer must come DNSSEC-validated from `dns_resolver`: secure "
        "(AD bit) or provably insecure (the resolver authenticated an ancestor's DNSKEY); "
        "bogus answers (SERVFAIL) and non-validating resolvers fail (BR 3.2.2.4, 3.2.2.8.1). "
        "`off`: answers are taken unchecked, for test mode only.",
    )
    dns_timeout_seconds: int = _key(5, "Timeout of one DNS query attempt.")
    http01_port: int = _key(
        80, "Port http-01 validation connects to (RFC 8555 §8.3 says 80; tests move it)."
    )
    tlsalpn01_port: int = _key(
        443,
        "Port tls-alpn-01 validation connects to (RFC 8737 §3 says 443; test mode: 5001, "
        "Pebble's tlsPort).",
    )
    challenge_types: list[str] = _key(
        list(DEFAULT_CHALLENGE_TYPES),
        "The validation methods offered, by ACME challenge type (BR 3.2.2.4; the registry "
        "in `acme_ca/va/registry.py`). New authorizations get one challenge per enabled "
        "type, wildcard names only the DNS-based ones; a challenge of a type switched off "
        "later fails when the client answers it. Env: comma-separated.",
    )
    allow_loopback_validation: bool = _key(
        False,
        "Let http-01 connect to loopback and private addresses. For tests and CI harnesses "
        "only: production refuses them (SSRF protection).",
    )
    pki_dir: Path | None = _key(
        None,
        "Directory of the issuing hierarchy: `issuers.toml` (which issuers exist, their "
        "certificates, keys and URLs) and the certificates it names. Default: `home/pki`, "
        "created by `acme-ca init` (and by `serve` on first start with embedded defaults).",
    )
    pkcs11_module: str | None = _key(
        None,
        "Path of the PKCS#11 module of the HSM (e.g. /usr/lib/softhsm/libsofthsm2.so). Unset: "
        "issuer keys are software keys under `pki_dir` (development only; logged loudly).",
    )
    pkcs11_token_label: str = _key("acme-ca", "Label of the HSM token holding the CA keys.")
    pkcs11_pin: str | None = _key(
        None, "User PIN of the token. Prefer `pkcs11_pin_file` or the environment."
    )
    pkcs11_pin_file: Path | None = _key(None, "File whose first line is the token's user PIN.")
    pkcs11_sessions: int = _key(2, "PKCS#11 sessions kept open per issuer key.")
    hsm_session_wait_seconds: int = _key(
        10,
        "Longest a signature waits for a free PKCS#11 session; past it the job backs off "
        "like any HSM failure (docs/operations.md, HSM loss).",
    )
    hsm_sign_timeout_seconds: int = _key(
        30,
        "Longest one signature may take inside the PKCS#11 module; a call that hangs past it "
        "fails the attempt (the job backs off and the sessions are reopened) instead of "
        "holding the job, whose lease is renewed meanwhile, for ever.",
    )
    hsm_deadline_seconds: int = _key(
        3600,
        "How long an order waits in `processing` while the HSM fails or its token is absent "
        "(the job backs off and retries, sessions are reopened when the token returns); "
        "after that the order becomes invalid with serverInternal.",
    )
    rsa_issuer: str = _key("dv-rsa", "Issuer (name in issuers.toml) for RSA subscriber keys.")
    ecdsa_issuer: str = _key("dv-ecc", "Issuer (name in issuers.toml) for ECDSA subscriber keys.")
    status_base_url: str = _key(
        "http://pki.acme-ca.example.com",
        "Plain-HTTP base URL of the CRL, OCSP and issuer-certificate repository, written into "
        "certificates (CRL Distribution Points, AIA) by `acme-ca init`. Production: the host "
        "that serves them (the CP's is http://repo.pubcert.jprs.jp). The default is a "
        "documentation name: an internal name or IP address here would fail pre-issuance "
        "linting (cabf.internal_domain_name).",
    )
    policy_oid: str = _key(
        "1.3.6.1.4.1.53827.1.1.4",
        "The CA's own certificate policy OID, placed after the CA/B Forum DV OID "
        "2.23.140.1.2.1 (CP 1.2: JPRS CA Certificate Policy).",
    )
    validity_days: int | None = _key(
        None,
        "Validity of subscriber certificates in days, counted inclusively. Unset: the BR "
        "SHOULD for the issuance date (199, then 99 from 2027-03-15, 46 from 2029-03-15). "
        "Never above the BR maximum (200/100/47) whatever is set.",
    )
    default_profile: str = _key(
        DEFAULT_PROFILE,
        "Profile of orders that name none (draft-ietf-acme-profiles §4); one of `profiles`. "
        "The shipped profiles are `dv` (the CP's DV profile), `tlsserver`, `shortlived` and "
        "`ov` (docs/profiles.md).",
    )
    profiles: tuple[ProfileSpec, ...] = _key(
        (),
        "`[profiles.<name>]` tables: each changes the shipped profile of that name or adds "
        "one; its keys are in the profile table below. TOML only (no environment variable).",
    )
    backdate_seconds: int = _key(
        60, "How far notBefore lies before the signing time (clock skew of relying parties)."
    )
    include_subject_key_identifier: bool = _key(
        False,
        "Put SKI in subscriber certificates. The CP's profile lists it; BR 7.1.2.7.6 makes it "
        "NOT RECOMMENDED, so it is off (see docs/conformance.md).",
    )
    lint_final_certificates: bool = _key(
        False,
        "Also run pkilint on each final certificate (DV-FINAL-CERTIFICATE), not only on its "
        "precertificate. BR 4.3.1.2 makes it unnecessary when the final TBS is proven to "
        "match the linted precertificate as RFC 6962 §3.2 describes, which the worker "
        "checks byte for byte before signing; costs one more lint (about a third of the "
        "worker's CPU per certificate).",
    )
    weak_key_blocklists: list[str] = _key(
        [],
        "openssl-blacklist format files of Debian weak RSA keys (BR 6.1.1.3), e.g. from "
        "Debian's openssl-blacklist package, named as Debian names them "
        "(`blacklist.RSA-2048`): the name says which RSA size a list covers, and a production "
        "hierarchy refuses RSA keys of sizes no list covers (docs/production.md).",
    )
    serve_worker: bool = _key(
        True,
        "Run a signing worker inside `acme-ca serve`. Production runs `acme-ca worker` as "
        "separate processes and sets this to false.",
    )
    worker_poll_seconds: int = _key(
        5, "How often a worker looks for jobs even without a notification (lost NOTIFYs)."
    )
    issuance_lease_seconds: int = _key(
        30,
        "How long a worker owns an issuance job without renewing it. The worker renews the "
        "lease every third of this while the job is in flight, also during long HSM and CT "
        "calls; a killed worker's jobs are taken over when it lapses, or at once by a "
        "worker on the same host that sees the holder's process is gone.",
    )
    worker_concurrency: int = _key(
        8,
        "Issuance jobs one worker process carries at once. A job spends most of its time "
        "waiting (HSM, CT logs, database), so several in flight keep the process busy; each "
        "holds a lease of its own, so workers on other machines never take the same job.",
    )
    status_listen: str = _key(
        "127.0.0.1:14080",
        "HOST:PORT of the plain-HTTP status listener: CRLs, OCSP and issuer certificates "
        "(what `status_base_url` points at). `off` disables it.",
    )
    metrics_listen: str | None = _key(
        None,
        "HOST:PORT of this process's Prometheus listener (`GET /metrics`, plain HTTP, never "
        "the ACME port), or `off`. Unset: `127.0.0.1:14090` for `serve` (its in-process "
        "worker and status listener included), `127.0.0.1:14091` for `worker`, "
        "`127.0.0.1:14092` for `remote-va`, so the three can share a host. Flag: "
        "`--metrics-listen`. See docs/operations.md, Metrics and alerts.",
    )
    crl_validity_hours: int = _key(
        96,
        "nextUpdate - thisUpdate of every CRL: CP Table 7.2.2 gives 96 hours; BR 4.9.7 allows "
        "at most 10 days.",
    )
    crl_interval_hours: int = _key(
        24, "A fresh CRL is published at least this often (CP 4.9.7: every 24 hours)."
    )
    crl_publish_dir: Path | None = _key(
        None,
        "Directory where every published CRL is also written as `<issuer>.crl` (atomically), "
        "for an operator to hand to a CDN. Default: `home/crl`.",
    )
    audit_retention_days: int = _key(
        2557,
        "Days audit rows and stored requests are kept in the live `audit_events` and "
        "`requests` tables before `acme-ca audit retention` moves their month (a whole "
        "partition) to the `audit_archive` schema (CP 5.4.3, 5.5.2: at least seven years; "
        "2557 days always covers seven years). One period for both, so an order's timeline "
        "is never half archived. Values below 2557 are refused.",
    )
    audit_signing_key: Path | None = _key(
        None,
        "Ed25519 private key (PEM, PKCS#8) that signs `acme-ca audit export` files. Never an "
        "issuing key: a key of its own, kept by the operator. Default: "
        "`home/audit/export-ed25519.pem`, created (mode 0600) on the first export.",
    )
    ocsp_validity_hours: int = _key(
        96, "nextUpdate - thisUpdate of OCSP responses (BR 4.9.10: 8 hours to 10 days)."
    )
    test_mode: bool = _key(
        False,
        "Test mode (`serve --test`): starts the challenge test server and uses it as the "
        "resolver and http-01 target, and enables the Pebble-compatible knobs. Never with an "
        "HSM (`pkcs11_module`).",
    )
    challsrv_dns: str = _key("127.0.0.1:8053", "Test mode: the challenge test server's DNS.")
    challsrv_management: str = _key(
        "127.0.0.1:8055", "Test mode: the pebble-challtestsrv-compatible management API."
    )
    challsrv_http01: str = _key(
        "127.0.0.1:5002",
        "Test mode: the challenge test server's own http-01 listener, or `off` so a "
        "standalone client can bind the validation port itself.",
    )
    challsrv_tlsalpn01: str = _key(
        "127.0.0.1:5001",
        "Test mode: the challenge test server's own tls-alpn-01 listener (answers with the "
        "certificates of `/add-tlsalpn01`), or `off` so a client that answers the challenge "
        "itself (`lego --tls`) can bind the validation port.",
    )
    challsrv_https01: str = _key(
        "127.0.0.1:5003",
        "Test mode: the challenge test server's https-01 listener (http-01 answers over TLS, "
        "pebble-challtestsrv's -https01), or `off`. In test mode the CA's http-01 redirects "
        "to https (port 443) are fetched there.",
    )
    https01_port: int = _key(
        443,
        "Port an http-01 redirect to an https URL connects to (BR 3.2.2.4.19 allows 443 only; "
        "test mode moves it to the challenge test server's https-01 listener).",
    )
    management_listen: str = _key(
        "127.0.0.1:15000",
        "Test mode: Pebble's management interface (`managementListenAddress`) on its own "
        "listener, HTTPS with the ACME listener's certificate: /roots/N, /root-keys/N, "
        "/intermediates/N, /intermediate-keys/N, /cert-status-by-serial/SERIAL (also on the "
        "challenge test server's management API); `off` disables it.",
    )
    special_use_names: bool = _key(
        False,
        "Test mode: accept the special-use names CI suites use (.test, .example, .localhost, "
        ".invalid, and single labels that are not TLDs, such as localhost), waiving only the "
        "internal-name lint finding for them (each waiver logged); every other name rule "
        "stays. On by default in test mode; `false` restores the production name policy. "
        "Refused outside test mode.",
    )
    ephemeral: bool = _key(
        False,
        "Test mode (`serve --test --ephemeral`): a throwaway home made for this run (new "
        "hierarchy, TLS certificate and embedded PostgreSQL) and removed at exit, as Pebble "
        "forgets everything. Not with `database_url` or `pki_dir`, which would outlive it.",
    )
    deterministic: bool = _key(
        False,
        "Test mode (`serve --test --deterministic`): the reproducible preset: no nonce "
        "rejection, no validation sleep, authorizations always reused, whatever PEBBLE_* "
        "variables say. Refused together with a knob set otherwise.",
    )
    pebble_config: Path | None = _key(
        None,
        "Test mode (`serve --test --pebble-config FILE`): a Pebble JSON configuration file; "
        "its members we support set the matching keys (below TOML, env and flags), its "
        "`externalAccountMACKeys` become EAB keys that bind any number of accounts, as in "
        "Pebble, and the members we ignore are logged (`testmode.pebble_config`).",
    )
    nonce_reject_percent: int = _key(
        0,
        "Test mode: share of valid nonces rejected with badNonce (Pebble's "
        "PEBBLE_WFE_NONCEREJECT).",
    )
    validation_delay_seconds: int = _key(
        0,
        "Test mode: each validation waits a random 0..N seconds first (Pebble sleeps unless "
        "PEBBLE_VA_NOSLEEP is set).",
    )
    always_valid: bool = _key(
        False, "Test mode: every validation passes unchecked (PEBBLE_VA_ALWAYS_VALID)."
    )
    authz_reuse_percent: int = _key(
        100,
        "Share of newOrder lookups that may reuse an existing authorization (Pebble's "
        "PEBBLE_AUTHZREUSE); below 100 only in test mode.",
    )
    mpic_perspectives_file: Path | None = _key(
        None,
        "TOML file listing the remote validation perspectives (BR 3.2.2.9): `[[perspectives]]` "
        "with url, id, rir, latitude, longitude, resolver_latitude, resolver_longitude. "
        "Unset: no corroboration, which a production hierarchy refuses (docs/production.md).",
    )
    mpic_client_cert: Path | None = _key(
        None, "PEM client certificate the primary presents to remote VAs (mutual TLS)."
    )
    mpic_client_key: Path | None = _key(None, "Private key of `mpic_client_cert`.")
    mpic_server_ca: Path | None = _key(
        None, "PEM CA certificate(s) the primary trusts for remote VAs' server certificates."
    )
    mpic_timeout_seconds: int = _key(10, "Per-remote timeout of one corroboration request.")
    test_perspectives: int = _key(
        0,
        "Test mode: start this many local remote VAs (`serve --test --perspectives N`) so "
        "corroboration can be tried on one machine.",
    )
    remote_va_listen: str = _key(
        "127.0.0.1:14443", "`acme-ca remote-va`: HOST:PORT of its mutual-TLS listener."
    )
    perspective_id: str = _key("", "`acme-ca remote-va`: this perspective's id.")
    perspective_rir: str = _key(
        "", "`acme-ca remote-va`: this perspective's RIR (ARIN, RIPE, APNIC, LACNIC, AFRINIC)."
    )
    remote_va_client_ca: Path | None = _key(
        None,
        "`acme-ca remote-va`: CA certificate that must have issued the primary's client "
        "certificate; other clients are refused.",
    )
    ct_log_list: Path | None = _key(
        None,
        "Certificate Transparency log list in Chrome's v3 JSON format (reloaded when it "
        "changes). Unset on the embedded defaults and in test mode: three in-process test logs "
        "are started and their list written to `home/ct/log_list.json`.",
    )
    ct_timeout_seconds: int = _key(10, "Timeout of one CT log submission.")
    ct_deadline_seconds: int = _key(
        3600,
        "How long issuance keeps retrying to collect enough SCTs before the order becomes "
        "invalid (the precertificate stays recorded).",
    )
    log_format: str = _key(
        "json", "`json` (one JSON object per line, for operators) or `console` (for people)."
    )
    log_level: str = _key("info", "Lowest log level emitted: debug, info, warning, error.")

    # ------------------------------------------------------------------ derived values
    @property
    def listen_host(self) -> str:
        return _split_host_port(self.listen)[0]

    @property
    def listen_port(self) -> int:
        return _split_host_port(self.listen)[1]

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

    def validate(self) -> Config:  # noqa: C901 -- a checklist: one check per config key
        """Check every value once at load; raise :class:`ConfigError` naming the key."""
        _split_host_port(self.listen)
        if self.log_format not in ("json", "console"):
            raise ConfigError("log_format must be 'json' or 'console'")
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise ConfigError("log_level must be debug, info, warning or error")
        for name in (
            "nonce_lifetime_seconds",
            "max_request_bytes",
            "orders_page_size",
            "database_pool_size",
            "database_acquire_timeout_seconds",
            "max_connections",
            "keepalive_timeout_seconds",
            "header_read_timeout_seconds",
            "overload_retry_after_seconds",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        if self.max_requests_in_flight < 0:
            raise ConfigError("max_requests_in_flight must not be negative (0: derived)")
        if self.base_url and not self.base_url.startswith(("http://", "https://")):
            raise ConfigError("base_url must start with http:// or https://")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("tls_cert and tls_key must be set together")
        if self.dnssec not in ("require", "off"):
            raise ConfigError("dnssec must be 'require' or 'off'")
        for name in (
            "order_lifetime_seconds",
            "pending_authz_lifetime_seconds",
            "authz_reuse_days",
            "max_names_per_order",
            "validation_lease_seconds",
            "issuance_lease_seconds",
            "hsm_session_wait_seconds",
            "hsm_sign_timeout_seconds",
            "hsm_deadline_seconds",
            "dns_timeout_seconds",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        if self.pending_authz_lifetime_seconds > 30 * 86400:
            raise ConfigError("pending_authz_lifetime_seconds may be at most 30 days (BR)")
        for resolver in self.dns_resolver.split(","):
            _split_host_port(resolver.strip())
        if not 0 < self.http01_port < 65536:
            raise ConfigError("http01_port must be a TCP port")
        if not 0 < self.tlsalpn01_port < 65536:
            raise ConfigError("tlsalpn01_port must be a TCP port")
        if self.challsrv_tlsalpn01 != "off":
            _split_host_port(self.challsrv_tlsalpn01)
        if not 0 < self.https01_port < 65536:
            raise ConfigError("https01_port must be a TCP port")
        if self.https01_port != 443 and not self.test_mode:
            raise ConfigError("https01_port other than 443 is for test mode (BR 3.2.2.4.19)")
        if self.management_listen != "off":
            _split_host_port(self.management_listen)
        if self.special_use_names and not self.test_mode:
            raise ConfigError("special_use_names is for test mode (serve --test) only")
        if self.ephemeral and not self.test_mode:
            raise ConfigError("ephemeral is for test mode (serve --test) only")
        if self.ephemeral and (self.database_url is not None or self.pki_dir is not None):
            raise ConfigError("ephemeral cannot be combined with database_url or pki_dir")
        if self.deterministic and not self.test_mode:
            raise ConfigError("deterministic is a test-mode preset (serve --test)")
        if self.deterministic and any(
            getattr(self, name) != value for name, value in DETERMINISTIC.items()
        ):
            raise ConfigError(
                "deterministic conflicts with nonce_reject_percent, validation_delay_seconds "
                f"or authz_reuse_percent set otherwise (the preset is {DETERMINISTIC})"
            )
        if self.pebble_config is not None and not self.test_mode:
            raise ConfigError("pebble_config is for test mode (serve --test) only")
        if self.challsrv_https01 != "off":
            _split_host_port(self.challsrv_https01)
        if not self.challenge_types:
            raise ConfigError("challenge_types must enable at least one validation method")
        if self.validity_days is not None and not 1 <= self.validity_days <= 200:
            raise ConfigError("validity_days must be between 1 and 200 (BR 6.3.2)")
        if not 0 <= self.backdate_seconds <= 86400:
            raise ConfigError("backdate_seconds must be between 0 and 86400")
        if not (0 <= self.challenge_wait_seconds <= 30 and 0 <= self.finalize_wait_seconds <= 30):
            raise ConfigError("challenge_wait_seconds and finalize_wait_seconds must be 0..30")
        if min(self.pkcs11_sessions, self.worker_poll_seconds, self.worker_concurrency) < 1:
            raise ConfigError(
                "pkcs11_sessions, worker_poll_seconds and worker_concurrency must be positive"
            )
        if not self.status_base_url.startswith("http://"):
            raise ConfigError("status_base_url must be a plain http:// URL (BR 7.1.2.7.7)")
        if not 1 <= self.crl_validity_hours <= 240:
            raise ConfigError("crl_validity_hours must be 1..240 (BR 4.9.7: at most 10 days)")
        if not 1 <= self.crl_interval_hours <= self.crl_validity_hours:
            raise ConfigError("crl_interval_hours must be 1..crl_validity_hours")
        if not 8 <= self.ocsp_validity_hours <= 240:
            raise ConfigError("ocsp_validity_hours must be 8..240 (BR 4.9.10)")
        if self.audit_retention_days < 2557:
            raise ConfigError("audit_retention_days must be at least 2557 (CP 5.4.3: 7 years)")
        for name in ("nonce_reject_percent", "authz_reuse_percent"):
            if not 0 <= getattr(self, name) <= 100:
                raise ConfigError(f"{name} must be 0..100")
        if self.validation_delay_seconds < 0:
            raise ConfigError("validation_delay_seconds must not be negative")
        test_knobs = (
            self.nonce_reject_percent != 0
            or self.validation_delay_seconds != 0
            or self.always_valid
            or self.authz_reuse_percent != 100
        )
        if test_knobs and not self.test_mode:
            raise ConfigError(
                "nonce_reject_percent, validation_delay_seconds, always_valid and "
                "authz_reuse_percent are test-mode knobs (serve --test)"
            )
        if self.test_mode and self.pkcs11_module:
            raise ConfigError("test_mode cannot be combined with an HSM (pkcs11_module)")
        if self.status_listen != "off":
            _split_host_port(self.status_listen)
        if self.metrics_listen not in (None, "off"):
            _split_host_port(self.metrics_listen)
        if not self.caa_identities:
            raise ConfigError("caa_identities must name at least one issuer domain")
        try:  # dns-persist-01 lists them as its challenge's issuer-domain-names
            issuer_domain_names(self.caa_identities)
        except ValueError as exc:
            raise ConfigError(f"caa_identities: {exc}") from None
        self._validate_profiles()
        return self

    def _validate_profiles(self) -> None:
        """The profile tables, and a default that is one of them and offered."""
        try:
            table = self.profile_table
        except ProfileSpecError as exc:
            raise ConfigError(str(exc)) from None
        default = table.get(self.default_profile)
        if default is None or not default.enabled:
            raise ConfigError(
                f"default_profile {self.default_profile!r} must name an enabled profile "
                f"(known: {', '.join(n for n, p in table.items() if p.enabled)})"
            )


def _split_host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def _field_types() -> dict[str, object]:
    return typing.get_type_hints(Config)


def _coerce(name: str, raw: Any, hint: Any) -> Any:
    """Turn a TOML or environment value into the field's type."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        if raw is None or raw == "":
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(name, raw, inner)
    if hint is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}: expected a boolean, got {raw!r}")
    if hint is int:
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected an integer, got {raw!r}") from None
    if hint is Path:
        return Path(str(raw))
    if hint is str:
        if not isinstance(raw, str | int | float):
            raise ConfigError(f"{name}: expected a string")
        return str(raw)
    if origin is list:
        if isinstance(raw, str):
            return [item.strip() for item in raw.split(",") if item.strip()]
        if not isinstance(raw, list):
            raise ConfigError(f"{name}: expected a list")
        return [str(item) for item in raw]
    raise ConfigError(f"{name}: unsupported type {hint!r}")  # pragma: no cover


def load_config(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Config:
    """Build the :class:`Config`: defaults, then the TOML file, then env, then ``overrides``."""
    env = os.environ if env is None else env
    hints = _field_types()
    known = {f.name for f in fields(Config)}
    values: dict[str, Any] = {}  # coerced per field type, checked by Config.validate()
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        for name, raw in data.items():
            if name not in known:
                raise ConfigError(f"{path}: unknown key {name!r}")
            if name == "profiles":
                try:
                    values[name] = parse_profile_specs(raw)
                except ProfileSpecError as exc:
                    raise ConfigError(f"{path}: {exc}") from None
                continue
            values[name] = _coerce(name, raw, hints[name])
    for name in known - {"profiles"}:
        raw_env = env.get(ENV_PREFIX + name.upper())
        if raw_env is not None:
            values[name] = _coerce(name, raw_env, hints[name])
    for name, raw in (overrides or {}).items():
        if raw is not None:
            values[name] = _coerce(name, raw, hints[name])
    if values.get("test_mode"):
        values = {**test_mode_defaults(values, env), **values}
    return replace(Config(), **values).validate()


#: Pebble's knob variables, honoured in test mode so harnesses written for Pebble work as is
#: (PEBBLE_VA_NOSLEEP and PEBBLE_VA_SLEEPTIME together give validation_delay_seconds).
PEBBLE_ENV = {
    "PEBBLE_WFE_NONCEREJECT": "nonce_reject_percent",
    "PEBBLE_AUTHZREUSE": "authz_reuse_percent",
    "PEBBLE_VA_ALWAYS_VALID": "always_valid",
    "PEBBLE_WFE_ORDERS_PER_PAGE": "orders_page_size",
}
#: Pebble's hierarchy variables and the value test mode's hierarchy has (one alternate root,
#: Root X1; chains of one issuing CA): another value is named in a warning at start.
PEBBLE_HIERARCHY_ENV = {"PEBBLE_ALTERNATE_ROOTS": 1, "PEBBLE_CHAIN_LENGTH": 1}
#: Pebble sleeps up to this long before each validation unless PEBBLE_VA_NOSLEEP is set
#: (va.go defaultSleepTime); PEBBLE_VA_SLEEPTIME changes it.
PEBBLE_MAX_VALIDATION_SLEEP = 5
#: The spellings Pebble's va.go takes as true for PEBBLE_VA_NOSLEEP/PEBBLE_VA_ALWAYS_VALID.
_PEBBLE_TRUE = ("1", "true", "True", "TRUE")
#: ``--deterministic``: no nonce rejection, no sleep, authorizations always reused.
DETERMINISTIC: dict[str, object] = {
    "nonce_reject_percent": 0,
    "validation_delay_seconds": 0,
    "authz_reuse_percent": 100,
}


def pebble_validation_sleep(env: Mapping[str, str]) -> int | None:
    """Pebble's sleep from PEBBLE_VA_NOSLEEP and PEBBLE_VA_SLEEPTIME: 0 when NOSLEEP is
    true, else SLEEPTIME (a positive integer) or Pebble's default; None when neither is
    set (acme_ca does not sleep unless asked, a documented difference)."""
    nosleep, sleeptime = env.get("PEBBLE_VA_NOSLEEP"), env.get("PEBBLE_VA_SLEEPTIME")
    if nosleep is not None and nosleep.strip() in _PEBBLE_TRUE:
        return 0
    if nosleep is None and sleeptime is None:
        return None
    if sleeptime is not None and sleeptime.strip().isdigit() and int(sleeptime) >= 1:
        return int(sleeptime)
    return PEBBLE_MAX_VALIDATION_SLEEP


def pebble_hierarchy_differences(env: Mapping[str, str]) -> dict[str, str]:
    """PEBBLE_ALTERNATE_ROOTS / PEBBLE_CHAIN_LENGTH values the test hierarchy does not have."""
    return {
        variable: env[variable]
        for variable, ours in PEBBLE_HIERARCHY_ENV.items()
        if variable in env and env[variable].strip() != str(ours)
    }


def test_mode_defaults(explicit: Mapping[str, object], env: Mapping[str, str]) -> dict[str, object]:
    """What ``serve --test`` changes, unless set explicitly: resolve through the challenge
    test server, validate http-01 on its port (5002) and tls-alpn-01 on its tls-alpn-01
    listener's (5001, also when that listener is off: Pebble's tlsPort), reach loopback, skip
    DNSSEC (the test DNS server signs nothing), and read Pebble's knob variables."""
    hints = _field_types()
    dns = explicit.get("challsrv_dns", Config.challsrv_dns)
    derived: dict[str, object] = {
        "dns_resolver": dns,
        "http01_port": 5002,
        "allow_loopback_validation": True,
        "dnssec": "off",
        "special_use_names": True,
    }
    tlsalpn01 = explicit.get("challsrv_tlsalpn01", Config.challsrv_tlsalpn01)
    listener = tlsalpn01 if isinstance(tlsalpn01, str) and tlsalpn01 != "off" else None
    derived["tlsalpn01_port"] = _split_host_port(listener)[1] if listener else 5001
    pebble_path = explicit.get("pebble_config")
    if isinstance(pebble_path, Path):
        try:
            pebble = read_pebble_config(pebble_path, frozenset(hints))
        except PebbleConfigError as exc:
            raise ConfigError(str(exc)) from None
        for name, raw in pebble.settings.items():
            if name not in explicit:
                derived[name] = _coerce(name, raw, hints[name])
    https01 = explicit.get("challsrv_https01", Config.challsrv_https01)
    if isinstance(https01, str) and https01 != "off":
        derived["https01_port"] = _split_host_port(https01)[1]
    preset = DETERMINISTIC if explicit.get("deterministic") else {}
    derived.update({name: value for name, value in preset.items() if name not in explicit})
    for variable, name in PEBBLE_ENV.items():
        raw = env.get(variable)
        if raw is None or name in explicit or name in preset:
            continue
        if variable == "PEBBLE_VA_ALWAYS_VALID":
            derived[name] = raw.strip() in _PEBBLE_TRUE
        else:
            derived[name] = _coerce(variable, raw, hints[name])
    sleep = pebble_validation_sleep(env)
    skip_sleep = "validation_delay_seconds" in explicit or "validation_delay_seconds" in preset
    if sleep is not None and not skip_sleep:
        derived["validation_delay_seconds"] = sleep
    return derived


def config_reference() -> str:
    """Markdown table of every key, its default and its doc, for docs/configuration.md."""
    hints = _field_types()
    rows = ["| key | env | type | default | what it does |", "|---|---|---|---|---|"]
    defaults = Config()
    for f in fields(Config):
        type_name = str(hints[f.name]).replace("typing.", "").replace("pathlib.", "")
        type_name = type_name.replace("<class '", "").replace("'>", "")
        type_name = type_name.replace("acme_ca.profiles.", "")
        default = getattr(defaults, f.name)
        rows.append(
            f"| `{f.name}` | `{ENV_PREFIX}{f.name.upper()}` | {type_name} | `{default!s}` "
            f"| {f.metadata['doc']} |"
        )
    return "\n".join(rows) + "\n" + _profile_reference()


def _profile_reference() -> str:
    """The keys of a ``[profiles.<name>]`` table and the shipped profiles' values."""
    spec_fields = [f for f in fields(ProfileSpec) if f.name != "name"]
    rows = [
        "",
        "## Profile tables (`[profiles.<name>]`)",
        "",
        "Each key a table leaves out keeps the shipped profile's value (for a new name, the "
        "default below); `-` inherits the top-level key named in the description. "
        "See docs/profiles.md.",
        "",
        "| key | " + " | ".join(f"`{name}`" for name in SHIPPED) + " | default | what it does |",
        "|---|" + "---|" * (len(SHIPPED) + 2),
    ]
    blank = ProfileSpec()

    def show(value: object) -> str:
        if isinstance(value, bool):
            return f"`{str(value).lower()}`"
        if isinstance(value, list):  # as TOML writes it
            return (
                "`[" + ", ".join(f'"{v}"' if isinstance(v, str) else str(v) for v in value) + "]`"
            )
        return "-" if value is None else f"`{value}`"

    for f in spec_fields:
        shipped = " | ".join(show(getattr(spec, f.name)) for spec in SHIPPED.values())
        rows.append(
            f"| `{f.name}` | {shipped} | {show(getattr(blank, f.name))} | {f.metadata['doc']} |"
        )
    return "\n".join(rows) + "\n"
