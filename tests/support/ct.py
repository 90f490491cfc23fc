"""CT helpers shared by the CT and issuance tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID
from pyasn1.codec.der import decoder, encoder  # type: ignore[import-untyped]
from pyasn1_alt_modules import rfc5280  # type: ignore[import-untyped]

from acme_ca.ca.ct.loglist import (
    LogList,
    LogListSource,
    StaticLogList,
    parse_log_list,
)
from acme_ca.ca.ct.settings import CtSettings
from acme_ca.ca.ct.submit import CertificateTransparency
from acme_ca.ca.issuance_profiles import profile_settings_factory
from acme_ca.ca.issuers import IssuerSet
from acme_ca.ca.lint import CertificateLinter
from acme_ca.ca.settings import IssuanceSettings
from acme_ca.ca.worker import SigningWorker
from acme_ca.clock import SystemClock
from acme_ca.config import Config
from acme_ca.db.issuance import IssuanceRepository
from acme_ca.testsrv.ct_log import TestLogSpec
from acme_ca.testsrv.ct_log_set import TestCtLogs
from acme_ca.testsrv.ct_logs_runner import accepted_roots
from tests.support.worker import (
    FAST,
    build_csr,
    ct_log_specs,
    insert_ready_order,
)


def pyasn1_without_poison(tbs_der: bytes) -> bytes:
    """The reference for the test log's poison removal: the TBSCertificate decoded by pyasn1,
    the poison extension dropped, the rest re-encoded (DER in, DER out)."""
    tbs, rest = decoder.decode(tbs_der, asn1Spec=rfc5280.TBSCertificate())
    assert not rest
    extensions = tbs["extensions"]
    kept = extensions.clone()
    for extension in extensions:
        if str(extension["extnID"]) != ExtensionOID.PRECERT_POISON.dotted_string:
            kept.append(extension)
    tbs["extensions"] = kept
    encoded: bytes = encoder.encode(tbs)
    return encoded


def three_operators() -> list[TestLogSpec]:
    return ct_log_specs()


@dataclass
class Harness:
    pool: asyncpg.Pool
    config: Config
    issuers: IssuerSet
    linter: CertificateLinter
    logs: TestCtLogs
    source: LogListSource
    settings: CtSettings
    cts: list[CertificateTransparency]

    @property
    def log_list(self) -> LogList:
        return self.source.current()

    def worker(
        self,
        worker_id: str = "w1",
        *,
        issuers: IssuerSet | None = None,
        settings: CtSettings | None = None,
        jobs: IssuanceRepository | None = None,
        ct: CertificateTransparency | None = None,
        config: Config | None = None,
        linter: CertificateLinter | None = None,
        lint_final: bool = False,
        on_issued: Callable[[str, str], None] | None = None,
    ) -> SigningWorker:
        if ct is None:
            ct = CertificateTransparency(self.source, SystemClock(), settings or self.settings)
            self.cts.append(ct)
        return SigningWorker(
            jobs or IssuanceRepository(self.pool),
            issuers or self.issuers,
            linter or self.linter,
            SystemClock(),
            profile_for=profile_settings_factory(
                IssuanceSettings.from_config(config or self.config)
            ),
            worker_id=worker_id,
            ct=ct,
            lint_final=lint_final,
            on_issued=on_issued,
            production=False,  # a development hierarchy: no remote perspectives needed
        )

    async def queue(
        self,
        names: Sequence[str],
        key: ec.EllipticCurvePrivateKey | None = None,
    ) -> tuple[int, ec.EllipticCurvePrivateKey]:
        """A ready order for ``names`` queued with a CSR of ``key`` (fresh P-256)."""
        key = key or ec.generate_private_key(ec.SECP256R1())
        account_id, order_id = await insert_ready_order(self.pool, names)
        assert await IssuanceRepository(self.pool).enqueue(
            order_id=order_id,
            account_id=account_id,
            csr_der=build_csr(names, key=key),
            names=list(names),
            issuer=self.config.ecdsa_issuer,
            now=datetime.now(UTC),
        )
        return order_id, key


@contextlib.asynccontextmanager
async def harness(
    pool: asyncpg.Pool,
    config: Config,
    issuers: IssuerSet,
    linter: CertificateLinter,
    specs: Sequence[TestLogSpec],
    settings: CtSettings = FAST,
) -> AsyncIterator[Harness]:
    async with TestCtLogs(specs, accepted_roots(config)) as logs:
        h = Harness(
            pool,
            config,
            issuers,
            linter,
            logs,
            StaticLogList(parse_log_list(logs.log_list())),
            settings,
            [],
        )
        try:
            yield h
        finally:
            for ct in h.cts:
                await ct.aclose()
