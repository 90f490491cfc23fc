"""The first half of the key declarations: the database, the listener, the ACME protocol, orders
and authorizations, DNS and the validation methods.  :class:`~acme_ca.config.keys.Config`
extends :class:`ServiceKeys` with the rest, so the keys stay one flat dataclass (and
docs/configuration.md lists them in this order); two modules only keep each under the size
limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from acme_ca.config.base import DEFAULT_CHALLENGE_TYPES, doc_key


@dataclass(frozen=True)
class ServiceKeys:
    """The keys of the front end, its database and the validation authority (see
    :class:`~acme_ca.config.keys.Config`).  Field docs are the operator documentation."""

    home: Path = doc_key(
        Path(".acme-ca"),
        "Directory for the CA's own state: the embedded PostgreSQL cluster (`pg/`), the "
        "generated TLS material (`tls/`), development PKI (`pki/`). Env: `ACME_CA_HOME`.",
    )
    database_url: str | None = doc_key(
        None,
        "PostgreSQL DSN (`postgresql://user:pass@host:port/db`). A server on the same machine "
        "is best reached over its Unix socket (`postgresql://user:pass@/db?host=/run/postgresql`"
        "): each of the ~40 round trips of an issuance then costs both sides less CPU than over "
        "loopback TCP (docs/performance.md, issue 20). Unset: the CA starts a private embedded "
        "PostgreSQL under `home/pg`, connects to it over its Unix socket, and stops it on exit.",
    )
    database_pool_size: int = doc_key(10, "Maximum connections in the asyncpg pool per process.")
    database_acquire_timeout_seconds: int = doc_key(
        3,
        "Longest a request or a worker step waits for a free pooled database connection. "
        "Past it a request is answered at once with 503 `serverInternal` and `Retry-After`, "
        "instead of queueing into the client's timeout (docs/operations.md, load shedding).",
    )
    max_requests_in_flight: int = doc_key(
        0,
        "Requests one `serve` process works on at once; above it a request is answered at "
        "once with 503 `serverInternal` and `Retry-After`. 0: derived, 16 per pooled "
        "database connection (16 x `database_pool_size`: a request holds a connection for "
        "milliseconds, so 16 waiting per connection still clear within the acquire timeout).",
    )
    max_connections: int = doc_key(
        1000,
        "Client connections one `serve` process keeps open. A new connection above it "
        "closes the connection idle longest (no request in progress), so idle and slow "
        "clients cannot crowd out a real one. Kept below the process's open-files limit.",
    )
    keepalive_timeout_seconds: int = doc_key(
        15, "How long an idle keep-alive connection stays open after its last response."
    )
    header_read_timeout_seconds: int = doc_key(
        10,
        "How long a new connection may take to send its first request's headers before it "
        "is closed (slowloris protection; aiohttp has no header timeout of its own).",
    )
    overload_retry_after_seconds: int = doc_key(
        2,
        "`Retry-After` sent with the 503 answers of load shedding and of a database outage.",
    )
    listen: str = doc_key("127.0.0.1:14000", "HOST:PORT the ACME server listens on.")
    plain_http: bool = doc_key(
        False,
        "Serve plain HTTP instead of HTTPS, for running behind a TLS-terminating proxy. "
        "`base_url` should then name the proxy's https URL.",
    )
    base_url: str | None = doc_key(
        None,
        "External base URL clients use (scheme://host[:port], no path). Every URL the CA "
        "hands out is built from it and JWS `url` headers are checked against it; the Host "
        "header is never trusted. Default: derived from `listen` and `plain_http`.",
    )
    tls_cert: Path | None = doc_key(
        None,
        "PEM certificate chain for HTTPS. Unset: a certificate for localhost/127.0.0.1 is "
        "generated on first start, issued by a local CA written to `home/tls/ca.pem`.",
    )
    tls_key: Path | None = doc_key(None, "PEM private key for `tls_cert`.")
    terms_of_service: str | None = doc_key(
        "https://jprs.jp/pubcert/info/repository/",
        "URL of the subscriber terms, published as `meta.termsOfService`. When set, "
        "newAccount requires `termsOfServiceAgreed: true` (RFC 8555 §7.3). Empty: none.",
    )
    website: str | None = doc_key("https://jprs.jp/", "`meta.website` in the directory.")
    caa_identities: list[str] = doc_key(
        ["jprs.jp"],
        "Issuer domain names recognised in CAA `issue`/`issuewild` records and published "
        "as `meta.caaIdentities` (CP 4.2.4: `jprs.jp`).",
    )
    external_account_required: bool = doc_key(
        False,
        "Require External Account Binding on newAccount (RFC 8555 §7.3.4); keys are made "
        "with `acme-ca eab create`.",
    )
    nonce_lifetime_seconds: int = doc_key(
        3600, "How long a Replay-Nonce stays redeemable after it is handed out."
    )
    max_request_bytes: int = doc_key(
        50_000, "Largest request body accepted; larger ones get a 413 malformed problem."
    )
    orders_page_size: int = doc_key(
        50, "Orders per page of an account's `orders` list (RFC 8555 §7.1.2.1)."
    )
    retry_after_seconds: int = doc_key(
        3, "Retry-After value sent while an order or challenge is processing."
    )
    rate_limits: bool | None = doc_key(
        None,
        "Enforce the rate limits (new accounts per address range, new orders per account, "
        "certificates per registered domain, duplicate certificates, failed validations; "
        "docs/operations.md, Rate limits). Unset: on, except in test mode (`serve --test`), "
        "where only `true` turns them on.",
    )
    challenge_wait_seconds: int = doc_key(
        3,
        "How long a challenge POST waits for its validation to finish before answering "
        "`processing`, counted from the request's arrival (time it spent queued under load "
        "is not added); an answer of `valid` or `invalid` saves the client its polls. 0: "
        "answer at once (the validation still runs in the background).",
    )
    finalize_wait_seconds: int = doc_key(
        5,
        "How long finalize waits for the signing worker to store the certificate before "
        "answering `processing` (woken by NOTIFY, not polling), counted from the request's "
        "arrival; an answer of `valid` saves the client its polls. 0: answer at once.",
    )
    order_lifetime_seconds: int = doc_key(
        7 * 86400, "How long a new order stays usable before it becomes invalid (expired)."
    )
    pending_authz_lifetime_seconds: int = doc_key(
        7 * 86400,
        "How long a pending authorization and its challenge tokens live; at most 30 days "
        "(BR 3.2.2.4.7, 3.2.2.4.19).",
    )
    authz_reuse_days: int = doc_key(
        30,
        "How long a valid authorization is reused for new orders of the same account. Capped "
        "at the BR 4.2.1 limit for the current date (200 days until 2027-03-15, then 100, "
        "then 10 from 2029-03-15).",
    )
    max_names_per_order: int = doc_key(100, "Most identifiers one order may carry.")
    blocked_names: list[str] = doc_key(
        [], "Domain names (and everything below them) this CA refuses to certify."
    )
    validation_lease_seconds: int = doc_key(
        30,
        "How long one process owns a challenge it is validating without renewing it (it "
        "renews every third of this while the validation runs); after that another process "
        "takes the validation over (crash recovery).",
    )
    dns_resolver: str = doc_key(
        "127.0.0.1:53",
        "HOST:PORT of the DNSSEC-validating recursive resolver (e.g. Unbound) used for "
        "dns-01, CAA and http-01 address lookups. Comma-separate several.",
    )
    dnssec: str = doc_key(
        "require",
        "`require`: every DNS answer must come DNSSEC-validated from `dns_resolver`: secure "
        "(AD bit) or provably insecure (the resolver authenticated an ancestor's DNSKEY); "
        "bogus answers (SERVFAIL) and non-validating resolvers fail (BR 3.2.2.4, 3.2.2.8.1). "
        "`off`: answers are taken unchecked, for test mode only.",
    )
    dns_timeout_seconds: int = doc_key(5, "Timeout of one DNS query attempt.")
    http01_port: int = doc_key(
        80, "Port http-01 validation connects to (RFC 8555 §8.3 says 80; tests move it)."
    )
    tlsalpn01_port: int = doc_key(
        443,
        "Port tls-alpn-01 validation connects to (RFC 8737 §3 says 443; test mode: 5001, "
        "Pebble's tlsPort).",
    )
    challenge_types: list[str] = doc_key(
        list(DEFAULT_CHALLENGE_TYPES),
        "The validation methods offered, by ACME challenge type (BR 3.2.2.4; the registry "
        "in `acme_ca/va/registry.py`). New authorizations get one challenge per enabled "
        "type, wildcard names only the DNS-based ones; a challenge of a type switched off "
        "later fails when the client answers it. Env: comma-separated.",
    )
    allow_loopback_validation: bool = doc_key(
        False,
        "Let http-01 connect to loopback and private addresses. For tests and CI harnesses "
        "only: production refuses them (SSRF protection).",
    )
