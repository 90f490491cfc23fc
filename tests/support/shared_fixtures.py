"""Fixtures many test modules use the same way, registered for the whole suite by the root
conftest (``pytest_plugins``).  A module that needs a variant defines its own fixture of the
same name, which takes precedence there."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from acme_ca.ca.issuers import IssuerSet, load_issuers
from acme_ca.ca.lint import CertificateLinter
from acme_ca.ca.settings import IssuerSettings
from acme_ca.config import Config
from acme_ca.testsrv.server import ChallengeServerConfig, ChallengeTestServer
from tests.fixtures import CaFactory, RunningCa
from tests.support.orders import Subscriber, subscriber, validation_config


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def challsrv() -> AsyncIterator[ChallengeTestServer]:
    async with ChallengeTestServer(ChallengeServerConfig.ephemeral()) as srv:
        yield srv


@pytest.fixture
async def va_ca(ca_factory: CaFactory, challsrv: ChallengeTestServer) -> RunningCa:
    """A CA validating against ``challsrv`` (its DNS and http-01 port)."""
    return await ca_factory.start(**validation_config(challsrv))


@pytest.fixture
async def sub(
    va_ca: RunningCa, session: aiohttp.ClientSession, challsrv: ChallengeTestServer
) -> Subscriber:
    """A registered subscriber of ``va_ca``."""
    return await subscriber(va_ca, session, challsrv)


@pytest.fixture(scope="module")
def linter() -> CertificateLinter:
    return CertificateLinter()


@pytest.fixture
async def issuers(pki_config: Config) -> AsyncIterator[IssuerSet]:
    """The issuing CAs of the module's ``pki_config`` hierarchy, closed after the test."""
    loaded = await load_issuers(IssuerSettings.from_config(pki_config))
    yield loaded
    await loaded.aclose()


@pytest.fixture
async def srv() -> AsyncIterator[ChallengeTestServer]:
    """The challenge test server on ephemeral ports (the VA tests' name for it)."""
    async with ChallengeTestServer(ChallengeServerConfig.ephemeral()) as server:
        yield server
