"""What must still hold when the precertificate is signed, as pure rules (issue 19).

An order is validated, finalized and queued; the job may then wait in the queue, in CT
backoff or behind a crashed worker, and the date may cross a Baseline Requirements deadline
meanwhile.  So the signing worker asks these rules again, with the signing time, just before
the HSM signs anything.  Each rule is a function of what the database recorded and of the
signing time; no I/O, no clock:

* every name of the order has a valid, unexpired authorization with a valid challenge;
* BR 4.2.1: each validation is within the reuse limit *for the signing date*
  (:func:`acme_ca.br.max_dcv_reuse`);
* BR 6.3.2: the validity is within the maximum for the signing date
  (:func:`acme_ca.ca.profile.max_validity`);
* BR 3.2.2.9: the corroboration recorded with each validation meets the quorum rule for the
  date of that validation (:mod:`acme_ca.va.quorum`, recomputed from the per-perspective
  records, which must agree with the primary's recorded ``quorum``).  ``production=False``
  (a development hierarchy) uses the test rule (``strict=False``): no minimum number of
  remotes, so a validation without perspectives passes, as it does at validation time;
* BR 3.2.2.8: :func:`caa_stale` says which names need their CAA checked again (the worker
  does that through the validator, then records the time);
* BR 6.1.1.3(4) / 4.9.1.1: the CSR's public key is not blocked (:func:`csr_key_id` is the
  ``blocked_keys`` id; a key reported compromised after finalize is refused here);
* CP 3.2.2.1 / BR 4.2.1 (OV-1, OV-2): a job of an OV issuer (issuers.toml ``purpose = "ov"``)
  belongs to an account whose vetted organization is still valid and within the identity
  reuse period for the signing date (:func:`organization_refusal` of the problem the RA's OV
  rule gives, injected as ``ca.signing_checks.OrganizationCheck``); revoking the
  organization stops its queued jobs here;
* CP 7.1 / BR 7.1.2.10.5: an OV issuer signs only certificates asserting 2.23.140.1.2.2, and
  only OV issuers sign those (:func:`issuer_purpose_refusal`), whatever a profile chose.

Each refusal names its rule and carries the RFC 8555 problem the order fails with.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Final

from cryptography import x509

from acme_ca.acme import problems
from acme_ca.acme.jsontypes import JsonValue
from acme_ca.acme.problems import Identifier, Problem
from acme_ca.br import OV_POLICY_OID, RULE_ORGANIZATION, max_dcv_reuse
from acme_ca.ca.profile import max_validity
from acme_ca.db.issuance_jobs import AuthorizationEvidence
from acme_ca.keyid import spki_sha256
from acme_ca.va.quorum import Remote, UnknownRir, Verdict, canonical_rir, decide, rule_for
from acme_ca.va.records import PRIMARY_PERSPECTIVE, FormatError, ValidationRecord

CAA_MAX_AGE: Final = timedelta(hours=8)
"""BR 3.2.2.8: issue within 8 hours of the CAA check (we do not use the record's TTL)."""
SIGNING_MARGIN: Final = timedelta(minutes=5)
"""Rechecked when older than ``CAA_MAX_AGE - SIGNING_MARGIN``, so the check is still under
8 hours when the HSM returns (lint, recording and signing come after the recheck)."""

RULE_AUTHORIZATION: Final = "RFC 8555 §7.4 authorization"
RULE_CAA: Final = "BR 3.2.2.8 CAA"
RULE_CORROBORATION: Final = "BR 3.2.2.9 corroboration"
RULE_REUSE: Final = "BR 4.2.1 validation reuse"
RULE_METHOD_REUSE: Final = "BR 3.2.2.4.22"
RULE_VALIDITY: Final = "BR 6.3.2 validity"
RULE_GUARD: Final = "production invariants"
RULE_BLOCKED_KEY: Final = "BR 6.1.1.3(4) blocked key"


@dataclass(frozen=True)
class Refusal:
    """One reason not to sign: the rule, and the problem the order fails with."""

    rule: str
    problem: Problem

    def audit(self) -> dict[str, JsonValue]:
        body: dict[str, JsonValue] = {
            "rule": self.rule,
            "type": self.problem.short_type,
            "detail": self.problem.detail,
        }
        if self.problem.identifier is not None:
            body["identifier"] = self.problem.identifier.value
        return body


def _day(at: datetime) -> str:
    return at.date().isoformat()


def _dns(name: str) -> Identifier:
    return Identifier("dns", name)


def authorization_key(name: str) -> tuple[str, bool]:
    """The authorization a certificate name needs: base name and wildcard flag."""
    name = name.rstrip(".").lower()
    return (name[2:], True) if name.startswith("*.") else (name, False)


def authorizations_by_name(
    names: Sequence[str], evidence: Iterable[AuthorizationEvidence]
) -> dict[str, AuthorizationEvidence | None]:
    """Each name's authorization among the order's (None if the order has none for it)."""
    by_key = {(e.identifier.rstrip(".").lower(), e.wildcard): e for e in evidence}
    return {name: by_key.get(authorization_key(name)) for name in names}


def authorization_refusal(
    name: str, ev: AuthorizationEvidence | None, now: datetime
) -> Refusal | None:
    """The order's authorization for ``name`` is still valid, unexpired, and was validated."""
    if ev is None:
        reason = "the order has no authorization for it"
    elif ev.status != "valid":
        reason = f"its authorization is {ev.status}"
    elif ev.expires_at <= now:
        reason = f"its authorization expired at {ev.expires_at.isoformat()}"
    elif ev.validated_at is None or ev.method is None:
        reason = "its authorization has no valid challenge"
    else:
        return None
    return Refusal(
        RULE_AUTHORIZATION,
        problems.unauthorized(
            f"{RULE_AUTHORIZATION}: cannot sign for {name}: {reason}; nothing was signed",
            identifier=_dns(name),
        ),
    )


def reuse_refusal(
    name: str, ev: AuthorizationEvidence, now: datetime, profile_cap: timedelta | None = None
) -> Refusal | None:
    """BR 4.2.1: the validation may still be reused for a certificate signed at ``now``;
    one made by a method with a cap of its own (BR 3.2.2.4.22: dns-persist-01, 10 days)
    no longer than that."""
    assert ev.validated_at is not None
    limit = max_dcv_reuse(now, ev.method)
    age = now - ev.validated_at
    if profile_cap is not None and profile_cap < limit and age > profile_cap:
        return Refusal(
            RULE_REUSE,
            problems.unauthorized(
                f"{RULE_REUSE}: {name} was validated on {_day(ev.validated_at)}, {age.days} "
                f"days before signing on {_day(now)}; the order's profile reuses validations "
                f"for at most {profile_cap.days} days. Validate it again (new order); nothing "
                "was signed",
                identifier=_dns(name),
            ),
        )
    if age <= limit:
        return None
    which = (
        f"{ev.method} validations may be reused for at most {limit.days} days whatever the "
        f"date ({RULE_METHOD_REUSE})"
        if limit < max_dcv_reuse(now)
        else f"from that date validations may be reused for at most {limit.days} days"
    )
    return Refusal(
        RULE_REUSE,
        problems.unauthorized(
            f"{RULE_REUSE}: {name} was validated on {_day(ev.validated_at)}, {age.days} days "
            f"before signing on {_day(now)}; {which}. Validate it again (new order); nothing "
            "was signed",
            identifier=_dns(name),
        ),
    )


def validity_refusal(not_before: datetime, not_after: datetime, now: datetime) -> Refusal | None:
    """BR 6.3.2: the validity period (inclusive: notAfter - notBefore + 1 s) is within the
    maximum for a certificate signed at ``now``."""
    period = not_after - not_before + timedelta(seconds=1)
    limit = max_validity(now)
    if period <= limit:
        return None
    return Refusal(
        RULE_VALIDITY,
        problems.server_internal(
            f"{RULE_VALIDITY}: the certificate would be valid {period / timedelta(days=1):g} "
            f"days; certificates signed on {_day(now)} may be valid at most {limit.days} days; "
            "nothing was signed"
        ),
    )


def _corroboration(name: str, detail: str) -> Refusal:
    return Refusal(
        RULE_CORROBORATION,
        problems.unauthorized(
            f"{RULE_CORROBORATION}: the validation of {name} {detail}; nothing was signed",
            identifier=_dns(name),
        ),
    )


def corroboration_refusal(
    name: str, ev: AuthorizationEvidence, *, production: bool
) -> Refusal | None:
    """BR 3.2.2.9: the recorded corroboration of the validation meets the quorum rule of its
    date, recomputed from the remotes' summary records with :mod:`acme_ca.va.quorum`."""
    assert ev.validated_at is not None and ev.method is not None
    try:
        records = [ValidationRecord.from_json(r) for r in ev.records]
    except (FormatError, ValueError) as exc:
        return _corroboration(name, f"has unreadable validation records ({exc})")
    dcv = [r for r in records if r.method == ev.method]
    summaries = [
        r for r in dcv if r.perspective != PRIMARY_PERSPECTIVE and r.corroborated is not None
    ]
    quorums = [r for r in dcv if r.perspective == PRIMARY_PERSPECTIVE and r.quorum is not None]
    remotes: list[Remote] = []
    results: dict[str, bool] = {}
    for r in summaries:
        if r.perspective in results:
            return _corroboration(name, f"records perspective {r.perspective!r} twice")
        try:
            rir = canonical_rir(r.rir or "")
        except UnknownRir:
            return _corroboration(
                name, f"records perspective {r.perspective!r} without a known RIR"
            )
        remotes.append(Remote(r.perspective, rir))
        assert r.corroborated is not None
        results[r.perspective] = r.corroborated
    if len(quorums) > 1:
        return _corroboration(name, "records more than one quorum")
    if remotes and not quorums:
        return _corroboration(name, "records remote perspectives but no quorum")
    # The rule of the check's own date: the quorum record's time (the primary's clock).
    at = quorums[0].at if quorums else ev.validated_at
    rule = rule_for(at, remotes, strict=production)
    decision = decide(rule, remotes, results)
    if quorums and quorums[0].quorum != decision.quorum:
        return _corroboration(
            name, f"records quorum {quorums[0].quorum} but its perspectives give {decision.quorum}"
        )
    if decision.verdict is Verdict.PASS or not rule.binding:
        return None
    return _corroboration(
        name,
        f"on {_day(at)} does not meet the rule for that date ({decision.quorum} "
        f"remote perspectives corroborated): {decision.reason}",
    )


def caa_checked_at(ev: AuthorizationEvidence) -> datetime | None:
    """When CAA was last checked for this authorization: the later of the recorded recheck
    and the validation's own CAA lookups (the primary's earliest, by its own clock); None
    when nothing shows a CAA check."""
    validation: datetime | None = None
    for body in ev.records:
        try:
            r = ValidationRecord.from_json(body)
        except (FormatError, ValueError):
            continue  # no evidence of a check: a recheck follows
        if r.method == "caa" and r.perspective == PRIMARY_PERSPECTIVE:
            validation = r.at if validation is None else min(validation, r.at)
    times = [t for t in (ev.caa_checked_at, validation) if t is not None]
    return max(times) if times else None


def caa_stale(ev: AuthorizationEvidence, now: datetime) -> bool:
    """BR 3.2.2.8: CAA must be checked again before signing at ``now``."""
    checked = caa_checked_at(ev)
    return checked is None or now - checked > CAA_MAX_AGE - SIGNING_MARGIN


def caa_refusal(name: str, problem: Problem | None, checked: datetime | None) -> Refusal:
    """The CAA recheck did not allow issuance (``problem`` from the validator), or could not
    be made (None: no validator in this worker)."""
    if problem is None:
        when = "never" if checked is None else f"last at {checked.isoformat()}"
        return Refusal(
            RULE_CAA,
            problems.server_internal(
                f"{RULE_CAA}: CAA for {name} was checked {when}, more than 8 hours before "
                "signing, and this worker cannot recheck it; nothing was signed",
                identifier=_dns(name),
            ),
        )
    return Refusal(
        RULE_CAA,
        Problem(
            type=problem.type,
            status=problem.status,
            detail=f"{RULE_CAA} recheck before signing: {problem.detail}; nothing was signed",
            identifier=_dns(name),
        ),
    )


def csr_key_id(csr_der: bytes) -> bytes:
    """The ``blocked_keys`` id of the CSR's public key (:func:`acme_ca.keyid.spki_sha256`,
    the one definition finalize and ``acme-ca admin block-key`` use)."""
    return spki_sha256(x509.load_der_x509_csr(csr_der).public_key())


def blocked_key_refusal(key_id: bytes) -> Refusal:
    """The CSR's key was blocked after finalize (reported compromised, or revoked for
    keyCompromise): BR 6.1.1.3(4) forbids certifying it, BR 4.9.1.1 would revoke it at once."""
    return Refusal(
        RULE_BLOCKED_KEY,
        problems.bad_csr(
            f"{RULE_BLOCKED_KEY}: the CSR's public key (SPKI SHA-256 {key_id.hex()}) is blocked "
            "by this CA (e.g. reported compromised, BR 4.9.1.1) since the order was finalized; "
            "nothing was signed. Order again with a new key"
        ),
    )


def organization_refusal(problem: Problem | None) -> Refusal | None:
    """An OV issuer's job: ``problem`` is why the account's organization no longer allows OV
    issuance at the signing time (None: it does), as the RA's OV rule, the one newOrder and
    finalize apply, answers it (``ca.signing_checks.OrganizationCheck``)."""
    if problem is None:
        return None
    return Refusal(
        RULE_ORGANIZATION,
        replace(problem, detail=f"{problem.detail}; nothing was signed"),
    )


RULE_ISSUER_PURPOSE: Final = "CP 7.1 issuer purpose"


def issuer_purpose_refusal(issuer: str, ov_issuer: bool, certificate_der: bytes) -> Refusal | None:
    """The certificate to sign (``certificate_der``: the linted copy of its TBS) asserts the
    OV policy exactly when ``issuer`` is an OV issuer (issuers.toml ``purpose = "ov"``): an
    OV certificate under a DV issuing CA, or a DV one under an OV issuing CA, is refused."""
    ov_oid = OV_POLICY_OID
    try:
        policies = x509.load_der_x509_certificate(certificate_der).extensions
        oids = {
            p.policy_identifier.dotted_string
            for p in policies.get_extension_for_class(x509.CertificatePolicies).value
        }
    except (ValueError, x509.ExtensionNotFound):
        oids = set()
    if (ov_oid in oids) == ov_issuer:
        return None
    what = (
        f"issuer {issuer!r} is an OV issuing CA but the certificate does not assert {ov_oid}"
        if ov_issuer
        else f"the certificate asserts {ov_oid} (OV) but issuer {issuer!r} is not an OV issuing CA"
    )
    return Refusal(
        RULE_ISSUER_PURPOSE,
        problems.server_internal(f"{RULE_ISSUER_PURPOSE}: {what}; nothing was signed"),
    )


def guard_refusal(violations: Sequence[str]) -> Refusal:
    """The deployment no longer meets a date-dependent production invariant."""
    return Refusal(
        RULE_GUARD,
        problems.server_internal(
            f"{RULE_GUARD}: the CA refuses to sign now: "
            + "; ".join(violations)
            + "; nothing was signed"
        ),
    )


def refusals(
    names: Sequence[str],
    evidence: Iterable[AuthorizationEvidence],
    *,
    not_before: datetime,
    not_after: datetime,
    now: datetime,
    production: bool,
    profile_cap: timedelta | None = None,
) -> list[Refusal]:
    """Every refusal of the rules above but CAA (which needs the network), for signing at
    ``now`` a certificate for ``names`` valid from ``not_before`` to ``not_after``;
    ``profile_cap``: the order's profile's own reuse limit, when it configures one."""
    found: list[Refusal] = []
    validity = validity_refusal(not_before, not_after, now)
    if validity is not None:
        found.append(validity)
    for name, ev in authorizations_by_name(names, evidence).items():
        refusal = authorization_refusal(name, ev, now)
        if refusal is not None:
            found.append(refusal)
            continue
        assert ev is not None
        for rule in (
            reuse_refusal(name, ev, now, profile_cap),
            corroboration_refusal(name, ev, production=production),
        ):
            if rule is not None:
                found.append(rule)
    return found


def problem_for(found: Sequence[Refusal]) -> Problem:
    """The order's error: the one refusal's problem, or ``compound`` with one subproblem per
    refusal (RFC 8555 §6.7.1)."""
    if len(found) == 1:
        return found[0].problem
    rules = sorted({r.rule for r in found})
    compound: Problem = problems.compound(
        f"{len(found)} re-checks before signing refused ({', '.join(rules)}); nothing was signed",
        subproblems=tuple(r.problem for r in found),
    )
    return compound
