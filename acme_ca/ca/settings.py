"""The signing room's settings: the keys ca/ reads, built once from the Config.

These ``from_config`` are the one place ca/ sees the :class:`~acme_ca.config.Config` (an
import-linter contract keeps the rest of ca/ from importing it): how issuer keys are reached
(:class:`HsmSettings`), which issuers sign (:class:`IssuerSettings`) and what ``acme-ca init``
writes (:class:`HierarchySettings`), and what the worker signs with (:class:`IssuanceSettings`).
The signing worker's own numbers (poll, concurrency, leases) are passed to its constructor by
``main/worker.py``; CT's are ``ct/settings.py``'s ``CtSettings``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from acme_ca.config.keys import Config
from acme_ca.profiles import Profile


@dataclass(frozen=True)
class HsmSettings:
    """How CA keys are reached: a PKCS#11 token, or (``module`` unset) software key files."""

    module: str | None
    token_label: str
    pin: str | None
    pin_file: Path | None
    #: Sessions kept open per issuer key.
    sessions: int
    session_wait_seconds: int
    sign_timeout_seconds: int

    @classmethod
    def from_config(cls, config: Config) -> HsmSettings:
        return cls(
            module=config.pkcs11_module,
            token_label=config.pkcs11_token_label,
            pin=config.pkcs11_pin,
            pin_file=config.pkcs11_pin_file,
            sessions=config.pkcs11_sessions,
            session_wait_seconds=config.hsm_session_wait_seconds,
            sign_timeout_seconds=config.hsm_sign_timeout_seconds,
        )


@dataclass(frozen=True)
class IssuerSettings:
    """Where issuers.toml is, which issuers sign RSA and ECDSA subscriber keys, and their
    keys' HSM."""

    pki_path: Path
    rsa_issuer: str
    ecdsa_issuer: str
    hsm: HsmSettings

    @classmethod
    def from_config(cls, config: Config) -> IssuerSettings:
        return cls(
            pki_path=config.pki_path,
            rsa_issuer=config.rsa_issuer,
            ecdsa_issuer=config.ecdsa_issuer,
            hsm=HsmSettings.from_config(config),
        )


@dataclass(frozen=True)
class HierarchySettings:
    """What ``acme-ca init`` (and ``serve`` on first start) writes: where, the status URLs
    and policy OID in the CA certificates, the keys' HSM, and test mode's chain shape."""

    pki_path: Path
    status_base_url: str
    policy_oid: str
    hsm: HsmSettings
    #: Test mode's Pebble-shaped chains (ca/hierarchy_chains.py); both None: the development
    #: hierarchy.
    alternate_roots: int | None
    chain_length: int | None

    @classmethod
    def from_config(cls, config: Config) -> HierarchySettings:
        return cls(
            pki_path=config.pki_path,
            status_base_url=config.status_base_url,
            policy_oid=config.policy_oid,
            hsm=HsmSettings.from_config(config),
            alternate_roots=config.alternate_roots,
            chain_length=config.chain_length,
        )


@dataclass(frozen=True)
class IssuanceSettings:
    """What the signing worker fills certificates from: every profile, resolved over the
    top-level keys it inherits, and how far notBefore is backdated."""

    profiles: Mapping[str, Profile]
    backdate_seconds: int

    @classmethod
    def from_config(cls, config: Config) -> IssuanceSettings:
        return cls(profiles=config.profile_table, backdate_seconds=config.backdate_seconds)
