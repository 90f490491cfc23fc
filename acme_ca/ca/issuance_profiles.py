"""The configured certificate profiles as the signing worker issues them.

Kept apart from :mod:`acme_ca.ca.worker` because it is the one place that turns a
configured :class:`~acme_ca.profiles.Profile` into what the worker's steps need (the
:class:`~acme_ca.ca.profile.ProfileSettings` an issuer fills in, the pkilint validations, the
CT policy), and the process wiring (:mod:`acme_ca.main.worker`) and the tests build it
without the worker.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

from acme_ca.br import DV_POLICY_OID, OV_POLICY_OID
from acme_ca.ca.ct.policy import CT_POLICIES, CtPolicy
from acme_ca.ca.issuers import Issuer
from acme_ca.ca.lint import LintKind
from acme_ca.ca.profile import ProfileSettings
from acme_ca.ca.settings import IssuanceSettings
from acme_ca.profiles import Profile


class IssuanceError(RuntimeError):
    """A step produced something it must not sign (a bug, never a subscriber's fault)."""


class IssuanceProfiles:
    """The configured profiles as the worker issues them: which :class:`ProfileSettings` one
    issuer fills in for one profile, and each profile's pkilint validations and CT policy."""

    def __init__(self, settings: IssuanceSettings) -> None:
        self.profiles: Mapping[str, Profile] = settings.profiles
        self._backdate = timedelta(seconds=settings.backdate_seconds)

    def profile(self, name: str) -> Profile:
        """The job's profile; a job whose profile is gone from the configuration is an
        :class:`IssuanceError` (nothing is signed for it)."""
        try:
            return self.profiles[name]
        except KeyError:
            raise IssuanceError(f"profile {name!r} is not configured") from None

    def settings(self, issuer: Issuer, profile: Profile) -> ProfileSettings:
        return ProfileSettings(
            policy_oid=profile.policy_oid,
            reserved_policy_oid=OV_POLICY_OID if profile.validation == "OV" else DV_POLICY_OID,
            crl_url=issuer.crl_url if profile.crl_url else None,
            ocsp_url=issuer.ocsp_url if profile.ocsp_url else None,
            ca_issuers_url=issuer.ca_issuers_url,
            validity_period=profile.validity,
            backdate=self._backdate,
            include_subject_key_identifier=profile.subject_key_identifier,
            rsa_key_encipherment=profile.rsa_key_encipherment,
            subject_common_name=profile.subject_common_name,
        )

    def reuse_cap(self, name: str) -> timedelta | None:
        """The profile's own authorization reuse limit, rechecked at signing (None: none)."""
        profile = self.profiles.get(name)
        return None if profile is None else profile.reuse_cap

    @staticmethod
    def ct_policy(profile: Profile) -> CtPolicy:
        return CT_POLICIES[profile.ct_policy]

    @staticmethod
    def lint_kinds(profile: Profile) -> tuple[LintKind, LintKind]:
        """(pre-certificate, final certificate) pkilint validations of the profile's level."""
        if profile.validation == "OV":
            return "OV-PRE-CERTIFICATE", "OV-FINAL-CERTIFICATE"
        return "DV-PRE-CERTIFICATE", "DV-FINAL-CERTIFICATE"


def profile_settings_factory(settings: IssuanceSettings) -> IssuanceProfiles:
    """The configured profiles as the worker issues them (:class:`IssuanceProfiles`)."""
    return IssuanceProfiles(settings)
