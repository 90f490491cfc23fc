"""How corroboration is wired in: the plain VA (announced in the directory) without remotes,
the MPIC validator with them, and the in-process remote VAs of ``serve --test --perspectives``
corroborating a real dns-01 validation."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import aiohttp

from acme_ca.clock import SystemClock
from acme_ca.config import Config
from acme_ca.remote_va.local import local_remote_vas
from acme_ca.remote_va.primary import build_validator
from acme_ca.testsrv.server import ChallengeServerConfig, ChallengeTestServer
from acme_ca.va.authority import ValidationAuthority
from acme_ca.va.dns01 import dns01_txt_value
from acme_ca.va.mpic import MpicValidator
from acme_ca.va.mtls import create_mpic_material
from acme_ca.va.records import ChallengeRequest
from acme_ca.va.settings import VASettings
from tests.fixtures import CaFactory
from tests.support.orders import validation_config

KEY_AUTH = "tok123.thumbprint"


def perspectives_file(tmp_path: Path) -> dict[str, object]:
    material = create_mpic_material(tmp_path / "mtls", ["us-east", "eu-central"])
    path = tmp_path / "perspectives.toml"
    path.write_text(
        '[[perspectives]]\nid = "us-east"\nrir = "ARIN"\nurl = "https://192.0.2.1:14443"\n'
        "latitude = 39.04\nlongitude = -77.49\n\n"
        '[[perspectives]]\nid = "eu-central"\nrir = "RIPE"\nurl = "https://192.0.2.2:14443"\n'
        "latitude = 50.11\nlongitude = 8.68\n"
    )
    return {
        "mpic_perspectives_file": path,
        "mpic_client_cert": material.primary_cert,
        "mpic_client_key": material.primary_key,
        "mpic_server_ca": material.ca_cert,
    }


async def directory_meta(ca_factory: CaFactory, **changes: object) -> dict[str, object]:
    ca = await ca_factory.start(None, **changes)
    async with aiohttp.ClientSession() as session, session.get(ca.directory_url) as resp:
        meta: dict[str, object] = (await resp.json())["meta"]
    return meta


async def test_directory_says_corroboration_is_off_without_remotes(
    ca_factory: CaFactory,
) -> None:
    meta = await directory_meta(ca_factory)
    assert meta["corroboration"] == "off: no remote network perspectives (BR 3.2.2.9)"


async def test_directory_is_silent_with_remotes(ca_factory: CaFactory, tmp_path: Path) -> None:
    meta = await directory_meta(ca_factory, test_mode=True, **perspectives_file(tmp_path))
    assert "corroboration" not in meta


def test_build_validator(tmp_path: Path) -> None:
    clock = SystemClock()
    assert isinstance(build_validator(VASettings.from_config(Config()), clock), ValidationAuthority)
    config = replace(Config(), test_mode=True, **perspectives_file(tmp_path))  # type: ignore[arg-type]
    mpic = build_validator(VASettings.from_config(config), clock)
    assert isinstance(mpic, MpicValidator)
    assert [(p.id, p.rir) for p in mpic.perspectives] == [
        ("us-east", "ARIN"),
        ("eu-central", "RIPE NCC"),
    ]


async def test_serve_test_perspectives_corroborate(tmp_path: Path) -> None:
    async with ChallengeTestServer(ChallengeServerConfig.ephemeral()) as challsrv:
        config = replace(
            Config(),
            home=tmp_path,
            test_mode=True,
            test_perspectives=3,
            **validation_config(challsrv),
        )
        challsrv.store.set_txt("_acme-challenge.example.com", dns01_txt_value(KEY_AUTH))
        async with local_remote_vas(VASettings.from_config(config), config.home) as setup:
            assert [(p.id, p.rir) for p in setup.perspectives] == [
                ("test-1", "ARIN"),
                ("test-2", "RIPE NCC"),
                ("test-3", "APNIC"),
            ]
            validator = build_validator(VASettings.from_config(config), SystemClock(), setup)
            assert isinstance(validator, MpicValidator)
            result = await validator.validate(
                ChallengeRequest(
                    "dns-01", "example.com", False, "tok123", KEY_AUTH, "https://ca/acct/1"
                )
            )
    assert result.ok, result.problem
    assert result.records[-1].quorum == "3/3"
    assert {r.perspective for r in result.records} == {"primary", "test-1", "test-2", "test-3"}
