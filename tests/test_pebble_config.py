"""``serve --test --pebble-config FILE``: a Pebble JSON configuration read in test mode, and
Pebble's External Account Binding semantics (one MAC key binds any number of accounts), while
keys from ``acme-ca eab create`` stay single-use (ACME-EAB-1, RFC 8555 §7.3.4).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import asyncpg
import pytest
import structlog
from cryptography.hazmat.primitives.asymmetric import ec

from acme_ca.acme.b64 import b64url_decode
from acme_ca.cli import _overrides, _parser
from acme_ca.config import ConfigError, load_config
from acme_ca.config.pebble import read_pebble_config
from acme_ca.db.eab import EabKeyRepository
from tests.fixtures import CaFactory
from tests.support.jws import JwsClient, make_eab
from tests.support.problems import assert_problem

#: Pebble's own test/config/pebble-config-external-account-bindings.json (its sample keys).
PEBBLE_EAB_CONFIG = {
    "pebble": {
        "listenAddress": "0.0.0.0:14000",
        "managementListenAddress": "0.0.0.0:15000",
        "certificate": "test/certs/localhost/cert.pem",
        "privateKey": "test/certs/localhost/key.pem",
        "httpPort": 5002,
        "tlsPort": 5001,
        "ocspResponderURL": "",
        "retryAfter": {"authz": 3, "order": 5},
        "externalAccountBindingRequired": True,
        "externalAccountMACKeys": {
            "kid-1": "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W",
            "kid-2": "b10lLJs8l1GPIzsLP0s6pMt8O0XVGnfTaCeROxQM0BIt2XrJMDHJZBM5NuQmQJQH",
            "kid-3": "HjudV5qnbreN-n9WyFSH-t4HXuEx_XFen45zuxY-G1h6fr74V3cUM_dVlwQZBWmc",
        },
        "certificateValidityPeriod": 157766400,
    }
}
KID_1_KEY = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "pebble-config.json"
    path.write_text(json.dumps(data))
    return path


def test_pebble_config_keys_mapped_and_the_rest_named(tmp_path: Path) -> None:
    path = _write(tmp_path, PEBBLE_EAB_CONFIG)
    known = frozenset({"listen", "http01_port", "tls_cert", "tls_key", "external_account_required"})
    pebble = read_pebble_config(path, known | {"retry_after_seconds"})
    assert pebble.settings == {
        "listen": "0.0.0.0:14000",
        "http01_port": 5002,
        "tls_cert": "test/certs/localhost/cert.pem",
        "tls_key": "test/certs/localhost/key.pem",
        "external_account_required": True,
        "retry_after_seconds": 5,
    }
    assert sorted(pebble.eab_keys) == ["kid-1", "kid-2", "kid-3"]
    assert len(pebble.eab_keys["kid-1"]) == 48
    # not ours (yet) or deliberately not applied: named, for the testmode.pebble_config event
    assert "ocspResponderURL" in pebble.ignored
    assert "certificateValidityPeriod" in pebble.ignored
    assert "retryAfter.authz" in pebble.ignored
    assert "tlsPort" in pebble.ignored  # no tlsalpn01_port in ``known`` here


def test_pebble_config_in_test_mode_sets_keys_below_env(tmp_path: Path) -> None:
    pebble = {
        "httpPort": 5080,
        "tlsPort": 5081,
        "managementListenAddress": "127.0.0.1:25000",
        "externalAccountBindingRequired": True,
    }
    path = _write(tmp_path, {"pebble": pebble})
    config = load_config(env={}, overrides={"test_mode": True, "pebble_config": str(path)})
    assert (config.tlsalpn01_port, config.management_listen) == (5081, "127.0.0.1:25000")
    assert config.http01_port == 5080
    assert config.external_account_required is True
    assert config.pebble_config == path
    env_wins = load_config(
        env={"ACME_CA_HTTP01_PORT": "5099"},
        overrides={"test_mode": True, "pebble_config": str(path)},
    )
    assert env_wins.http01_port == 5099


def test_pebble_config_flag_of_serve(tmp_path: Path) -> None:
    """``acme-ca serve --test --pebble-config FILE`` reaches the configuration."""
    path = _write(tmp_path, PEBBLE_EAB_CONFIG)
    args = _parser().parse_args(["serve", "--test", "--pebble-config", str(path)])
    config = load_config(env={}, overrides=_overrides(args))
    assert config.pebble_config == path
    assert config.external_account_required is True
    assert config.listen == "0.0.0.0:14000"


def test_pebble_config_refused_outside_test_mode(tmp_path: Path) -> None:
    path = _write(tmp_path, PEBBLE_EAB_CONFIG)
    with pytest.raises(ConfigError, match="pebble_config is for test mode"):
        load_config(env={}, overrides={"pebble_config": str(path)})


@pytest.mark.parametrize(
    "data",
    [
        {"not-pebble": {}},
        {"pebble": {"externalAccountMACKeys": {"kid-1": "not base64url!"}}},
        {"pebble": {"retryAfter": {"order": "soon"}}},
    ],
    ids=["no-pebble-object", "bad-mac-key", "bad-retry-after"],
)
def test_pebble_config_unusable_file_refused(tmp_path: Path, data: object) -> None:
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError):
        load_config(env={}, overrides={"test_mode": True, "pebble_config": str(path)})


async def _register(
    session: aiohttp.ClientSession,
    directory_url: str,
    kid: str,
    hmac_key: bytes,
) -> tuple[int, object]:
    client = JwsClient(session, directory_url, ec.generate_private_key(ec.SECP256R1()))
    await client.load_directory()
    url = client.directory["newAccount"]
    reply = await client.register(externalAccountBinding=make_eab(hmac_key, kid, client.key, url))
    return reply.status, reply.body


async def test_acme_eab_1_pebble_config_key_binds_three_accounts(
    ca_factory: CaFactory, session: aiohttp.ClientSession, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    path = _write(tmp_path, PEBBLE_EAB_CONFIG)
    with structlog.testing.capture_logs() as logs:
        ca = await ca_factory.start(
            test_mode=True, pebble_config=path, external_account_required=True
        )
    (event,) = [e for e in logs if e["event"] == "testmode.pebble_config"]
    assert event["eab_kids"] == ["kid-1", "kid-2", "kid-3"]
    assert "ocspResponderURL" in event["ignored"]

    key = b64url_decode(KID_1_KEY)
    accounts = [await _register(session, ca.directory_url, "kid-1", key) for _ in range(3)]
    assert [status for status, _ in accounts] == [201, 201, 201]
    for _, body in accounts:
        assert isinstance(body, dict)
        assert body["externalAccountBinding"]["protected"]  # the verified binding, reflected

    # a wrong MAC for a Pebble kid is still refused, and EAB is still required
    status, body = await _register(session, ca.directory_url, "kid-2", b"\x00" * 48)
    assert status == 403, body
    assert isinstance(body, dict) and body["type"].endswith(":unauthorized")
    client = JwsClient(session, ca.directory_url, ec.generate_private_key(ec.SECP256R1()))
    await client.load_directory()
    assert_problem(await client.register(), 403, "externalAccountRequired")


async def test_acme_eab_1_created_keys_stay_single_use_beside_pebble_keys(
    ca_factory: CaFactory, session: aiohttp.ClientSession, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """Outside test mode there are no shared keys; even in test mode a key from
    ``acme-ca eab create`` binds one account."""
    secret = b"k" * 32
    await EabKeyRepository(pool).create(
        "created-kid", secret, "test", now=datetime.now(UTC), actor="test"
    )
    ca = await ca_factory.start(test_mode=True, pebble_config=_write(tmp_path, PEBBLE_EAB_CONFIG))
    first = await _register(session, ca.directory_url, "created-kid", secret)
    assert first[0] == 201, first
    status, body = await _register(session, ca.directory_url, "created-kid", secret)
    assert status == 403, body
    assert isinstance(body, dict) and "already bound" in body["detail"]

    plain = await ca_factory.start(external_account_required=True)
    status, body = await _register(session, plain.directory_url, "kid-1", b64url_decode(KID_1_KEY))
    assert status == 403, body  # a Pebble kid means nothing without --pebble-config
    assert isinstance(body, dict) and "not known" in body["detail"]
