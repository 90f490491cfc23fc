"""The real ``acme-ca`` console script, run as subprocesses: ``serve`` (embedded PostgreSQL and
local TLS by default, or ``--plain-http`` against a given database), ``eab`` and ``db migrate``,
exercised with certbot, the ``acme`` library and the low-level test JWS client."""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
from pathlib import Path

import aiohttp
import pytest
from acme import client as acme_client
from acme import messages as acme_messages
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.jwa import ES256
from josepy.jwk import JWKEC

from integration.clients import CERTBOT, certbot_dirs, certbot_run
from integration.processes import CaProcesses, base_env, describe, run_cli
from tests.support.jws import JwsClient
from tests.support.ports import free_port

pytestmark = pytest.mark.integration


# ------------------------------------------------------------------------------------------
# serve with every default: embedded PostgreSQL, generated TLS; certbot registers


def _stop_leftover_postmaster(cluster: Path) -> None:
    """Teardown only: a postmaster our server started but did not stop (the test has failed)."""
    try:
        pid = int((cluster / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return
    try:
        os.kill(pid, signal.SIGQUIT)  # immediate shutdown
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while (cluster / "postmaster.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.1)


def test_serve_embedded_defaults_https_and_certbot_register(
    tmp_path: Path, processes: CaProcesses
) -> None:
    home = tmp_path / "ca-home"
    cluster_link = home / "pg" / "cluster"
    port = free_port()
    base_url = f"https://127.0.0.1:{port}"
    ca = processes.serve(
        "embedded",
        "--listen",
        f"127.0.0.1:{port}",
        env=base_env(ACME_CA_HOME=str(home)),
        base_url=base_url,
    )
    real_cluster: Path | None = None
    try:
        cafile = home / "tls" / "ca.pem"
        ca.wait_ready(cafile=cafile)
        real_cluster = cluster_link.resolve()

        ready = [e for e in ca.log_events() if e.get("event") == "server.ready"]
        assert len(ready) == 1, ca.tails()
        assert ready[0]["directory"] == ca.directory_url
        assert ready[0]["tls"] == "on"
        assert ready[0]["tls_ca"] == str(cafile.resolve())

        certbot_dir = tmp_path / "certbot"
        reg = certbot_run(
            [
                CERTBOT,
                "register",
                "--server",
                ca.directory_url,
                "--agree-tos",
                "-m",
                "ops@example.test",
                "-n",
                *certbot_dirs(certbot_dir),
            ],
            cafile,
        )
        assert reg.returncode == 0, f"certbot register: {describe(reg)}\n{ca.tails()}"
        assert "Account registered" in reg.stdout + reg.stderr, describe(reg)

        assert ca.terminate() == 0, ca.tails()
        assert not (cluster_link / "postmaster.pid").exists(), (
            f"embedded PostgreSQL still running after serve exited\n{ca.tails()}"
        )
        events = [e.get("event") for e in ca.log_events()]
        assert "server.stopping" in events
        assert "embedded_postgres.stopped" in events, ca.tails()
    finally:
        ca.kill()
        if real_cluster is not None:
            _stop_leftover_postmaster(real_cluster)
            # As root the cluster lives outside tmp_path (/var/lib/acme-ca/pg-<hash>).
            if not real_cluster.is_relative_to(tmp_path):
                shutil.rmtree(real_cluster, ignore_errors=True)


# ------------------------------------------------------------------------------------------
# two processes, one database: nonces are shared state


async def test_acme_nonce_1_nonce_redeemed_across_processes(
    dsn: str, tmp_path: Path, processes: CaProcesses
) -> None:
    a = processes.serve_plain("ca-a", dsn, tmp_path / "home-a")
    b = processes.serve_plain("ca-b", dsn, tmp_path / "home-b")
    a.wait_ready()
    b.wait_ready()

    async with aiohttp.ClientSession() as session:
        client_a = JwsClient(session, a.directory_url, ec.generate_private_key(ec.SECP256R1()))
        client_b = JwsClient(session, b.directory_url, ec.generate_private_key(ec.SECP256R1()))
        await client_a.load_directory()
        await client_b.load_directory()
        assert client_a.directory["newAccount"].startswith(a.base_url)
        assert client_b.directory["newAccount"].startswith(b.base_url)

        nonce = await client_a.nonce()

        # Issued by A, redeemed at B (signed for B's own URL).
        created = await client_b.post(
            client_b.directory["newAccount"],
            {"termsOfServiceAgreed": True},
            nonce=nonce,
            use_jwk=True,
        )
        assert created.status == 201, (created.body, a.tails(), b.tails())
        assert b.base_url is not None
        assert created.headers["Location"].startswith(b.base_url)

        # The same nonce again, back at A: already used.
        replay = await client_a.post(
            client_a.directory["newAccount"],
            {"termsOfServiceAgreed": True},
            nonce=nonce,
            use_jwk=True,
        )
        assert replay.status == 400, replay.body
        assert replay.content_type == "application/problem+json"
        assert replay.body["type"] == "urn:ietf:params:acme:error:badNonce"
        fresh = replay.headers.get("Replay-Nonce")
        assert fresh
        assert fresh != nonce


# ------------------------------------------------------------------------------------------
# EAB keys made with the CLI, used by the acme library


def _acme_client(directory_url: str) -> acme_client.ClientV2:
    key = JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    net = acme_client.ClientNetwork(key, alg=ES256, user_agent="acme-ca-integration")
    directory = acme_client.ClientV2.get_directory(directory_url, net)
    return acme_client.ClientV2(directory, net)


def _eab_registration(
    acme: acme_client.ClientV2, kid: str, hmac_key: str
) -> acme_messages.NewRegistration:
    assert acme.net.key is not None
    eab = acme_messages.ExternalAccountBinding.from_data(
        account_public_key=acme.net.key.public_key(),
        kid=kid,
        hmac_key=hmac_key,
        directory=acme.directory,
    )
    return acme_messages.NewRegistration.from_data(
        email="ops@example.test",
        terms_of_service_agreed=True,
        external_account_binding=eab,
    )


def test_eab_cli_create_then_register(dsn: str, tmp_path: Path, processes: CaProcesses) -> None:
    cli_env = base_env(ACME_CA_DATABASE_URL=dsn, ACME_CA_HOME=str(tmp_path / "home"))
    created = run_cli("eab", "create", "--comment", "test", env=cli_env)
    assert created.returncode == 0, describe(created)
    kid_match = re.search(r"^kid: (\S+)$", created.stdout, re.MULTILINE)
    key_match = re.search(r"^hmac_key: (\S+)$", created.stdout, re.MULTILINE)
    assert kid_match and key_match, describe(created)
    kid, hmac_key = kid_match[1], key_match[1]

    listed = run_cli("eab", "list", env=cli_env)
    assert listed.returncode == 0, describe(listed)
    assert re.search(rf"^{re.escape(kid)}\tunused\t.*\ttest$", listed.stdout, re.MULTILINE), (
        describe(listed)
    )

    ca = processes.serve_plain(
        "ca-eab", dsn, tmp_path / "home", ACME_CA_EXTERNAL_ACCOUNT_REQUIRED="true"
    )
    ca.wait_ready()

    first = _acme_client(ca.directory_url)
    assert first.directory.meta.external_account_required is True
    regr = first.new_account(_eab_registration(first, kid, hmac_key))
    assert ca.base_url is not None
    assert regr.uri and regr.uri.startswith(ca.base_url)
    assert regr.body.status == "valid"
    assert regr.body.external_account_binding is not None

    listed = run_cli("eab", "list", env=cli_env)
    assert listed.returncode == 0, describe(listed)
    assert re.search(rf"^{re.escape(kid)}\tbound to account \S+\t", listed.stdout, re.MULTILINE), (
        describe(listed)
    )

    # The key is spent: a second account cannot bind it.
    second = _acme_client(ca.directory_url)
    with pytest.raises(acme_messages.Error) as reused:
        second.new_account(_eab_registration(second, kid, hmac_key))
    assert reused.value.typ == "urn:ietf:params:acme:error:unauthorized", reused.value

    # No binding at all while the CA requires one.
    third = _acme_client(ca.directory_url)
    with pytest.raises(acme_messages.Error) as missing:
        third.new_account(
            acme_messages.NewRegistration.from_data(
                email="ops@example.test", terms_of_service_agreed=True
            )
        )
    assert missing.value.typ == "urn:ietf:params:acme:error:externalAccountRequired"


# ------------------------------------------------------------------------------------------
# db migrate


def test_db_migrate_is_idempotent(dsn: str, tmp_path: Path) -> None:
    env = base_env(ACME_CA_DATABASE_URL=dsn, ACME_CA_HOME=str(tmp_path / "home"))
    for _ in range(2):
        migrated = run_cli("db", "migrate", env=env)
        assert migrated.returncode == 0, describe(migrated)
        assert "schema is current" in migrated.stdout, describe(migrated)
