"""The configuration's invariants, checked once at load: each failure is a ConfigError naming
the key (and the BR/CP clause where one sets the bound)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from acme_ca.acme.issuer_names import issuer_domain_names
from acme_ca.config.base import ConfigError, split_host_port
from acme_ca.config.pebble import DETERMINISTIC
from acme_ca.profiles import ProfileSpecError

if TYPE_CHECKING:
    from acme_ca.config.keys import Config


_POSITIVE_SERVING: Final = (
    "nonce_lifetime_seconds",
    "max_request_bytes",
    "orders_page_size",
    "database_pool_size",
    "database_acquire_timeout_seconds",
    "max_connections",
    "keepalive_timeout_seconds",
    "header_read_timeout_seconds",
    "overload_retry_after_seconds",
)
_POSITIVE_LIFETIMES: Final = (
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
    "ct_stagger_milliseconds",
    "ct_retry_pause_milliseconds",
    "ct_backoff_initial_seconds",
)


def _positive(config: Config, names: tuple[str, ...]) -> None:
    """Each of the numeric keys ``names`` must be above zero."""
    for name in names:
        if getattr(config, name) <= 0:
            raise ConfigError(f"{name} must be positive")


def check(config: Config) -> None:  # noqa: C901 -- a checklist: one check per config key
    """Check every value once at load; raise :class:`ConfigError` naming the key."""
    split_host_port(config.listen)
    if config.log_format not in ("json", "console"):
        raise ConfigError("log_format must be 'json' or 'console'")
    if config.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError("log_level must be debug, info, warning or error")
    _positive(config, _POSITIVE_SERVING)
    if config.max_requests_in_flight < 0:
        raise ConfigError("max_requests_in_flight must not be negative (0: derived)")
    if config.base_url and not config.base_url.startswith(("http://", "https://")):
        raise ConfigError("base_url must start with http:// or https://")
    if (config.tls_cert is None) != (config.tls_key is None):
        raise ConfigError("tls_cert and tls_key must be set together")
    if config.dnssec not in ("require", "off"):
        raise ConfigError("dnssec must be 'require' or 'off'")
    _positive(config, _POSITIVE_LIFETIMES)
    if config.ct_backoff_max_seconds < config.ct_backoff_initial_seconds:
        raise ConfigError("ct_backoff_max_seconds must be at least ct_backoff_initial_seconds")
    if config.pending_authz_lifetime_seconds > 30 * 86400:
        raise ConfigError("pending_authz_lifetime_seconds may be at most 30 days (BR)")
    for resolver in config.dns_resolver.split(","):
        split_host_port(resolver.strip())
    if not 0 < config.http01_port < 65536:
        raise ConfigError("http01_port must be a TCP port")
    if not 0 < config.tlsalpn01_port < 65536:
        raise ConfigError("tlsalpn01_port must be a TCP port")
    if config.challsrv_tlsalpn01 != "off":
        split_host_port(config.challsrv_tlsalpn01)
    if not 0 < config.https01_port < 65536:
        raise ConfigError("https01_port must be a TCP port")
    if config.https01_port != 443 and not config.test_mode:
        raise ConfigError("https01_port other than 443 is for test mode (BR 3.2.2.4.19)")
    if config.management_listen != "off":
        split_host_port(config.management_listen)
    if config.special_use_names and not config.test_mode:
        raise ConfigError("special_use_names is for test mode (serve --test) only")
    if config.ephemeral and not config.test_mode:
        raise ConfigError("ephemeral is for test mode (serve --test) only")
    if config.ephemeral and (config.database_url is not None or config.pki_dir is not None):
        raise ConfigError("ephemeral cannot be combined with database_url or pki_dir")
    if config.deterministic and not config.test_mode:
        raise ConfigError("deterministic is a test-mode preset (serve --test)")
    if config.deterministic and any(
        getattr(config, name) != value for name, value in DETERMINISTIC.items()
    ):
        raise ConfigError(
            "deterministic conflicts with nonce_reject_percent, validation_delay_seconds "
            f"or authz_reuse_percent set otherwise (the preset is {DETERMINISTIC})"
        )
    if config.pebble_config is not None and not config.test_mode:
        raise ConfigError("pebble_config is for test mode (serve --test) only")
    if config.challsrv_https01 != "off":
        split_host_port(config.challsrv_https01)
    if not config.challenge_types:
        raise ConfigError("challenge_types must enable at least one validation method")
    if not 0 <= config.mpic_grace_milliseconds <= 1000 * config.mpic_timeout_seconds:
        raise ConfigError("mpic_grace_milliseconds must be between 0 and mpic_timeout_seconds")
    if config.validity_days is not None and not 1 <= config.validity_days <= 200:
        raise ConfigError("validity_days must be between 1 and 200 (BR 6.3.2)")
    if not 0 <= config.backdate_seconds <= 86400:
        raise ConfigError("backdate_seconds must be between 0 and 86400")
    if not (0 <= config.challenge_wait_seconds <= 30 and 0 <= config.finalize_wait_seconds <= 30):
        raise ConfigError("challenge_wait_seconds and finalize_wait_seconds must be 0..30")
    if min(config.pkcs11_sessions, config.worker_poll_seconds, config.worker_concurrency) < 1:
        raise ConfigError(
            "pkcs11_sessions, worker_poll_seconds and worker_concurrency must be positive"
        )
    if not config.status_base_url.startswith("http://"):
        raise ConfigError("status_base_url must be a plain http:// URL (BR 7.1.2.7.7)")
    if not 1 <= config.crl_validity_hours <= 240:
        raise ConfigError("crl_validity_hours must be 1..240 (BR 4.9.7: at most 10 days)")
    if not 1 <= config.crl_interval_hours <= config.crl_validity_hours:
        raise ConfigError("crl_interval_hours must be 1..crl_validity_hours")
    if not 8 <= config.ocsp_validity_hours <= 240:
        raise ConfigError("ocsp_validity_hours must be 8..240 (BR 4.9.10)")
    if config.audit_retention_days < 2557:
        raise ConfigError("audit_retention_days must be at least 2557 (CP 5.4.3: 7 years)")
    for name in ("nonce_reject_percent", "authz_reuse_percent"):
        if not 0 <= getattr(config, name) <= 100:
            raise ConfigError(f"{name} must be 0..100")
    if config.validation_delay_seconds < 0:
        raise ConfigError("validation_delay_seconds must not be negative")
    test_knobs = (
        config.nonce_reject_percent != 0
        or config.validation_delay_seconds != 0
        or config.always_valid
        or config.authz_reuse_percent != 100
    )
    if test_knobs and not config.test_mode:
        raise ConfigError(
            "nonce_reject_percent, validation_delay_seconds, always_valid and "
            "authz_reuse_percent are test-mode knobs (serve --test)"
        )
    _check_chain_shape(config)
    if config.test_mode and config.pkcs11_module:
        raise ConfigError("test_mode cannot be combined with an HSM (pkcs11_module)")
    if config.status_listen != "off":
        split_host_port(config.status_listen)
    if config.metrics_listen not in (None, "off"):
        split_host_port(config.metrics_listen)
    if not config.caa_identities:
        raise ConfigError("caa_identities must name at least one issuer domain")
    try:  # dns-persist-01 lists them as its challenge's issuer-domain-names
        issuer_domain_names(config.caa_identities)
    except ValueError as exc:
        raise ConfigError(f"caa_identities: {exc}") from None
    _check_profiles(config)


def _check_chain_shape(config: Config) -> None:
    """``alternate_roots`` and ``chain_length`` shape the hierarchy test mode generates."""
    if config.alternate_roots is None and config.chain_length is None:
        return
    if not config.test_mode:
        raise ConfigError("alternate_roots and chain_length are test-mode knobs (serve --test)")
    if config.pki_dir is not None:
        raise ConfigError(
            "alternate_roots and chain_length shape the generated hierarchy; a configured "
            "pki_dir is not generated"
        )
    if config.alternate_roots is not None and not 0 <= config.alternate_roots <= 63:
        raise ConfigError("alternate_roots (PEBBLE_ALTERNATE_ROOTS) must be 0..63")
    if config.chain_length is not None and not 1 <= config.chain_length <= 10:
        raise ConfigError("chain_length (PEBBLE_CHAIN_LENGTH) must be 1..10")


def _check_profiles(config: Config) -> None:
    """The profile tables, and a default that is one of them and offered."""
    try:
        table = config.profile_table
    except ProfileSpecError as exc:
        raise ConfigError(str(exc)) from None
    default = table.get(config.default_profile)
    if default is None or not default.enabled:
        raise ConfigError(
            f"default_profile {config.default_profile!r} must name an enabled profile "
            f"(known: {', '.join(n for n, p in table.items() if p.enabled)})"
        )
