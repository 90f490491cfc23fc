"""Pre-issuance linting (BR 4.3.1.2, SC-075: a SHALL since 2025-03-15) with pkilint, kept warm.

pkilint's validator trees are slow to build (hundreds of milliseconds) and fast to run (a few
milliseconds per certificate), so :class:`CertificateLinter` builds the trees it needs once:

* ``DV-FINAL-CERTIFICATE`` and ``DV-PRE-CERTIFICATE`` (and, built on first use, the ``OV-``
  pair for the ``ov`` profile): exactly what
  ``lint_cabf_serverauth_cert lint -t <TYPE>`` runs in pkilint 0.13.3
  (``pkilint/bin/lint_cabf_serverauth_cert.py``): the serverauth decoding validators, the
  subscriber validators of ``pkilint.cabf.serverauth.create_validators`` and the PKIX
  certificate container, with the serverauth finding filters applied as the CLI does without
  ``--report-all``;
* a BR CRL tree, as ``lint_crl lint -t CRL -p BR`` builds it (``pkilint/bin/lint_crl.py``).

The date-gated rules (validity limits of SC-081, the reverse-zone ban, short-lived certificates)
read the "validity period start".  The CLI's default is the certificate's notBefore; ``lint``
takes the issuance time instead when given, which the issuance path should always pass (the
signing time is never earlier than notBefore, so it selects the stricter rule).

One rule is added to pkilint's: the EKU must be id-kp-serverAuth alone
(``acme_ca.subscriber_eku_not_server_auth_only``, ERROR).  BR 7.1.2.7.10 still allows clientAuth
and pkilint 0.13.3 therefore passes it, but the Chrome Root Program requires serverAuth-only
certificates from 2027-03-15 (BR-PROF-9) and our profile never emits anything else.

Behaviour is pinned to pkilint 0.13.3 (BR 2.2.5); constructing the linter with any other
version fails, so an upgrade is a deliberate change with its test run.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import importlib.metadata
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal, get_args

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from acme_ca import metrics

PKILINT_VERSION: Final = "0.13.3"

LintKind = Literal[
    "DV-FINAL-CERTIFICATE", "DV-PRE-CERTIFICATE", "OV-FINAL-CERTIFICATE", "OV-PRE-CERTIFICATE"
]
LINT_KINDS: Final[tuple[LintKind, ...]] = get_args(LintKind)

#: The code of the finding :class:`CertificateLinter` adds for an EKU other than serverAuth.
EKU_NOT_SERVER_AUTH_ONLY: Final = "acme_ca.subscriber_eku_not_server_auth_only"
#: The code of the finding for a document pkilint could not decode at all.
UNDECODABLE: Final = "acme_ca.document_not_decodable"


class LintError(RuntimeError):
    """The linter itself cannot run (wrong pkilint version)."""


class Severity(enum.IntEnum):
    """pkilint's ``ValidationFindingSeverity``, most severe first."""

    FATAL = 0
    ERROR = 1
    WARNING = 2
    NOTICE = 3
    INFO = 4
    DEBUG = 5


@dataclass(frozen=True)
class LintFinding:
    """One finding: how bad, pkilint's code, its message, and where in the document."""

    severity: Severity
    code: str
    message: str | None
    #: pkilint node path, e.g. ``certificate.tbsCertificate.extensions.2.extnValue.keyUsage``.
    path: str
    #: The pkilint validator (class name) that raised it.
    validator: str

    def __str__(self) -> str:
        text = f"{self.severity.name} {self.code} @ {self.path}"
        return f"{text}: {self.message}" if self.message else text


@dataclass(frozen=True)
class LintReport:
    """All findings for one document, in pkilint's order."""

    kind: str
    findings: tuple[LintFinding, ...]

    @property
    def blocking(self) -> tuple[LintFinding, ...]:
        """ERROR and FATAL findings: any of these means the document must not be signed."""
        return tuple(f for f in self.findings if f.severity <= Severity.ERROR)

    @property
    def ok(self) -> bool:
        return not self.blocking

    def at_least(self, severity: Severity) -> tuple[LintFinding, ...]:
        """Findings of ``severity`` or worse (``NOTICE`` gives FATAL..NOTICE)."""
        return tuple(f for f in self.findings if f.severity <= severity)

    def describe(self, severity: Severity = Severity.NOTICE) -> str:
        """One line per finding of ``severity`` or worse; for logs and assertion messages."""
        lines = [str(f) for f in self.at_least(severity)]
        return "\n".join(lines) if lines else f"{self.kind}: no findings"


_VALIDITY_START: contextvars.ContextVar[datetime | None] = contextvars.ContextVar(
    "acme_ca_lint_validity_start", default=None
)


class _ValidityPeriodStart:
    """pkilint's ValidityPeriodStartRetriever, settable per call.

    pkilint calls it with the document; the value comes from the context of the ``lint`` call,
    or the certificate's notBefore (pkilint's own default) when none was given.
    """

    def __call__(self, document: Any, *args: Any, **kwargs: Any) -> datetime:
        at = _VALIDITY_START.get()
        if at is not None:
            return at
        not_before: datetime = document.not_before
        return not_before


def _audited_match_methods() -> frozenset[Any]:
    """The ``match`` methods of pkilint 0.13.3 known to return False whenever pkilint's own
    ``NodeVisitor.match`` does (they call it first and AND their own test)."""
    from pkilint.cabf.cabf_name import ValidCountryCodeValidatorBase
    from pkilint.document import NodeVisitor
    from pkilint.pkix.certificate.certificate_extension import (
        ExtendedKeyUsageCriticalityValidator,
    )
    from pkilint.pkix.extension import ExtensionCriticalityValidator
    from pkilint.validation import TypeMatchingValidator

    return frozenset(
        {
            NodeVisitor.match,
            TypeMatchingValidator.match,
            ExtensionCriticalityValidator.match,
            ExtendedKeyUsageCriticalityValidator.match,
            ValidCountryCodeValidatorBase.match,
        }
    )


def _prefilterable(validator: Any, audited: frozenset[Any]) -> bool:
    """Whether every ``match`` on ``validator``'s class chain is an audited one, so that its
    match implies pkilint's own path and class test."""
    from pkilint.document import NodeVisitor

    if not isinstance(validator, NodeVisitor):
        return False
    return all(
        cls.__dict__["match"] in audited
        for cls in type(validator).__mro__
        if "match" in cls.__dict__
    )


#: Node shapes remembered per container; a certificate of ours has a few hundred.
_WALK_CACHE_LIMIT: Final = 4096


class _IndexedWalk:
    """pkilint's ``ValidatorContainer._validate_rec`` with the validators that cannot match a
    node skipped without asking them, for the same findings in the same order.

    pkilint asks every validator of a container about every node below it (6,700 ``match``
    calls per precertificate, 108 of them true: a third of a lint run).  Most of a
    validator's test depends only on the node's path and its pyasn1 class (``path``,
    ``path_re``, ``pdu_class``), so that part is answered once per (path, class) and
    remembered; the validators it leaves are asked in their order, ``match`` in full
    (predicates, pyasn1 supertypes, the subclasses' own tests).  A validator whose ``match``
    anywhere on its class chain is not one of :func:`_audited_match_methods` is always asked."""

    def __init__(self, container: Any, audited: frozenset[Any]) -> None:
        self._validators: tuple[Any, ...] = tuple(container.validators)
        self._static = tuple(_prefilterable(v, audited) for v in self._validators)
        self._candidates: dict[tuple[str, type], tuple[Any, ...]] = {}

    def _select(self, node: Any) -> tuple[Any, ...]:
        path, pdu = node.path, node.pdu
        chosen = []
        for validator, static in zip(self._validators, self._static, strict=True):
            if static:
                if validator._path is not None and validator._path != path:
                    continue
                if validator._path_re is not None and validator._path_re.match(path) is None:
                    continue
                if validator._pdu_class is not None and not isinstance(pdu, validator._pdu_class):
                    continue
            chosen.append(validator)
        return tuple(chosen)

    def __call__(self, node: Any, results: list[Any]) -> None:
        key = (node.path, type(node.pdu))
        candidates = self._candidates.get(key)
        if candidates is None:
            if len(self._candidates) >= _WALK_CACHE_LIMIT:
                self._candidates.clear()
            candidates = self._candidates[key] = self._select(node)
        for validator in candidates:
            if validator.match(node):
                result = validator.validate_wrapper(node)
                if isinstance(result, list):
                    results += result
                else:
                    results.append(result)
        for child in node.children.values():
            self(child, results)


def _index(validator: Any, audited: frozenset[Any] | None = None) -> Any:
    """Give every ``ValidatorContainer`` in ``validator``'s tree that uses pkilint's own walk an
    :class:`_IndexedWalk` (an instance attribute: pkilint's classes are left alone)."""
    from pkilint.validation import ValidatorContainer

    audited = _audited_match_methods() if audited is None else audited
    if isinstance(validator, ValidatorContainer):
        if type(validator)._validate_rec is ValidatorContainer._validate_rec:
            validator._validate_rec = _IndexedWalk(validator, audited)
        for child in validator.validators:
            _index(child, audited)
    return validator


def _check_version() -> None:
    try:
        installed = importlib.metadata.version("pkilint")
    except importlib.metadata.PackageNotFoundError as e:
        raise LintError("pkilint is not installed") from e
    if installed != PKILINT_VERSION:
        raise LintError(
            f"pkilint {installed} is installed; acme_ca is pinned to {PKILINT_VERSION}: "
            "re-check the lint tests and expected findings before moving the pin"
        )


@dataclass
class _Tree:
    validator: Any
    filters: list[Any]


def _findings(results: Any) -> list[LintFinding]:
    out = []
    for result in results:
        for description in result.finding_descriptions:
            out.append(
                LintFinding(
                    severity=Severity(int(description.finding.severity)),
                    code=str(description.finding.code),
                    message=None if description.message is None else str(description.message),
                    path=str(result.node.path),
                    validator=type(result.validator).__name__,
                )
            )
    return out


def _eku_findings(der: bytes) -> list[LintFinding]:
    """The serverAuth-only rule pkilint 0.13.3 does not have (see module docstring)."""
    try:
        cert = x509.load_der_x509_certificate(der)
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except (ValueError, x509.ExtensionNotFound):
        return []  # pkilint reports an undecodable certificate or a missing EKU itself
    others = [oid.dotted_string for oid in eku if oid != ExtendedKeyUsageOID.SERVER_AUTH]
    if not others and len(list(eku)) == 1:
        return []
    return [
        LintFinding(
            severity=Severity.ERROR,
            code=EKU_NOT_SERVER_AUTH_ONLY,
            message=f"EKU must be id-kp-serverAuth only; also found: {', '.join(others) or '-'}",
            path="certificate.tbsCertificate.extensions",
            validator="CertificateLinter",
        )
    ]


def _undecodable(kind: str, e: Exception) -> LintReport:
    return LintReport(
        kind,
        (
            LintFinding(
                severity=Severity.FATAL,
                code=UNDECODABLE,
                message=f"{type(e).__name__}: {e}",
                path="",
                validator="loader",
            ),
        ),
    )


def _observe(report: LintReport, seconds: float) -> None:
    metrics.observe_lint(report.kind, (f.severity.name for f in report.findings), seconds)


class CertificateLinter:
    """pkilint's DV subscriber (final and pre-certificate) and BR CRL linters, built once.

    ``lint``/``lint_crl`` are thread-safe (one run at a time per linter) and take milliseconds;
    ``alint``/``alint_crl`` run them in a worker thread, off the event loop.
    """

    def __init__(self) -> None:
        # pkilint is imported here, not with the module: importing it takes over a second
        # (its ISO 639 tables), which every acme-ca process would otherwise pay at start-up,
        # and only the processes that lint construct a linter (in a worker thread).
        from pkilint import loader, pkix
        from pkilint.cabf import cabf_crl
        from pkilint.pkix import crl, extension, name

        _check_version()
        self._lock = threading.Lock()
        self._cert_loader = loader.RFC5280CertificateDocumentLoader()
        self._crl_loader = loader.RFC5280CertificateListDocumentLoader()
        self._retriever = _ValidityPeriodStart()
        self._trees: dict[str, _Tree] = {}
        for kind in LINT_KINDS:
            if kind.startswith("DV-"):  # every certificate path; OV trees on first use
                self._trees[kind] = self._build_tree(kind)
        crl_type = crl.CertificateRevocationListType.CRL
        self._crl_tree = _index(
            crl.create_pkix_crl_validator_container(
                [
                    pkix.create_attribute_decoder(name.ATTRIBUTE_TYPE_MAPPINGS),
                    pkix.create_extension_decoder(extension.EXTENSION_MAPPINGS),
                ],
                [
                    crl.create_issuer_validator_container([]),
                    crl.create_validity_validator_container(
                        [cabf_crl.create_validity_period_validator(crl_type)]
                    ),
                    crl.create_extensions_validator_container([]),
                    cabf_crl.CabfCrlReasonCodeAllowlistValidator(crl_type),
                ],
            )
        )

    def _build_tree(self, kind: LintKind) -> _Tree:
        from pkilint.cabf import serverauth
        from pkilint.cabf.serverauth import serverauth_constants
        from pkilint.pkix import certificate

        cert_type = serverauth_constants.CertificateType.from_option_str(kind)
        return _Tree(
            _index(
                certificate.create_pkix_certificate_validator_container(
                    serverauth.create_decoding_validators(),
                    serverauth.create_validators(cert_type, self._retriever),
                )
            ),
            serverauth.create_serverauth_finding_filters(cert_type),
        )

    def lint(
        self,
        der: bytes,
        kind: LintKind,
        validity_period_start: datetime | None = None,
    ) -> LintReport:
        """Lint one DER certificate as ``kind``; date-gated rules use ``validity_period_start``
        (the issuance time) or, when None, the certificate's notBefore."""
        if kind not in LINT_KINDS:
            raise ValueError(f"unknown lint kind {kind!r}; expected one of {LINT_KINDS}")
        if validity_period_start is not None:
            if validity_period_start.tzinfo is None:
                raise ValueError("validity_period_start must be timezone-aware")
            validity_period_start = validity_period_start.astimezone(UTC)
        with self._lock:
            tree = self._trees.get(kind)
            if tree is None:
                tree = self._trees[kind] = self._build_tree(kind)
        try:
            document = self._cert_loader.load_der_document(der, "certificate")
        except Exception as e:  # pkilint raises assorted pyasn1 errors
            return _undecodable(kind, e)
        token = _VALIDITY_START.set(validity_period_start)
        try:
            with self._lock:
                results = tree.validator.validate(document.root)
        finally:
            _VALIDITY_START.reset(token)
        from pkilint import finding_filter

        results, _ = finding_filter.filter_results(tree.filters, results)
        return LintReport(kind, tuple(_findings(results) + _eku_findings(der)))

    async def alint(
        self,
        der: bytes,
        kind: LintKind,
        validity_period_start: datetime | None = None,
    ) -> LintReport:
        """:meth:`lint` in a worker thread (recorded in the lint metrics)."""
        started = time.perf_counter()
        report = await asyncio.to_thread(self.lint, der, kind, validity_period_start)
        _observe(report, time.perf_counter() - started)
        return report

    def lint_crl(self, der: bytes) -> LintReport:
        """Lint a DER CRL against RFC 5280 plus the BR rules pkilint has (reason codes
        1/3/4/5/9, nextUpdate - thisUpdate <= 10 days); as ``lint_crl lint -t CRL -p BR``."""
        try:
            document = self._crl_loader.load_der_document(der, "crl")
        except Exception as e:  # pkilint raises assorted pyasn1 errors
            return _undecodable("CRL", e)
        with self._lock:
            results = self._crl_tree.validate(document.root)
        return LintReport("CRL", tuple(_findings(results)))

    async def alint_crl(self, der: bytes) -> LintReport:
        """:meth:`lint_crl` in a worker thread (recorded in the lint metrics)."""
        started = time.perf_counter()
        report = await asyncio.to_thread(self.lint_crl, der)
        _observe(report, time.perf_counter() - started)
        return report
