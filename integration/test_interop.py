"""Interop: real ACME clients against a freshly started ``acme-ca serve --test``.

Clients: certbot (PyPI), lego 4.9.1, dehydrated 0.7.0 and uacme 1.7.4 (Debian). They run
one after another against ONE test-mode server per module (started on first use, on free
ports), every case on names of its own; EAB cases use a second server that requires External
Account Binding, and lego runs every case again against the same pair of servers with
``PEBBLE_WFE_NONCEREJECT=20`` (label ``lego-noncereject20``). Cases per client:

* issuance: http-01 with RSA 2048 and three names in one certificate; http-01 with ECDSA
  P-256; dns-01 with RSA 2048 for a name and its wildcard; dns-01 with ECDSA P-256 for a
  wildcard alone; and for lego, tls-alpn-01 (``--tls``) with ECDSA P-256;
* profiles (draft-ietf-acme-profiles): certbot ``--required-profile`` for each shipped DV
  profile (``dv``, ``tlsserver``, ``shortlived``) and ``--preferred-profile`` (a known one, and
  an unknown one falling back to the default); lego, which sends no profile, gets ``dv``;
* renewal (a forced renewal of the http-01 ECDSA certificate: a new serial), revocation (of
  that renewed certificate: the CA logs ``certificate.revoked`` for its serial), account key
  rollover where the client has it (the old key finds no account, the new key the same
  one), and EAB registration with a key from ``acme-ca eab create`` (the key ends up bound;
  lego can register only while ordering, so it also gets a certificate).

http-01: certbot ``--standalone`` and lego ``--http`` bind the CA's validation port
(``--http01-port``) themselves on 127.0.0.2, where ``/add-a`` points their names;
dehydrated and uacme answer through the challenge server's own listener on 127.0.0.1 (the
same port), fed by hook scripts calling ``/add-http01``. tls-alpn-01: lego ``--tls`` binds
the CA's tls-alpn-01 port (``--tlsalpn01-port``, a free one; the challenge server's own
tls-alpn-01 listener is off) on 127.0.0.2 itself. dns-01: every client's hook
mechanism calls ``/set-txt`` and ``/clear-txt`` on the management API (certbot
``--manual-auth-hook``/``--manual-cleanup-hook``, lego ``--dns exec``, dehydrated and uacme
hook scripts): bash + curl, written into the module's temporary directory.

Every certificate is verified with ``openssl verify`` against the root fetched from
``/roots/0`` on the management API and linted with pkilint (no ERROR or FATAL).

Skipped, with the reason in the skip: account key rollover for certbot (neither certbot nor
its ``acme`` library implements keyChange), lego 4.9.1 (no such command) and dehydrated
0.7.0 (no keyChange). uacme needs the test CA in its trust store: libcurl-gnutls reads only
the system bundle, so uacme runs in a private mount namespace where the CA's ``tls/ca.pem``
is bind-mounted over ``/etc/ssl/certs`` (its cases skip if ``unshare`` is not permitted).

Time: uacme 1.7.4 ignores Retry-After and sleeps 5 s whenever a poll finds ``processing``
(every authorization and every finalize); dehydrated sleeps 1 s and 2 s. That is why the
matrix uses three names once, and why renewal and revocation reuse earlier certificates.
Set ``INTEROP_DEBUG=1`` to print every client command with its duration and stderr.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)
from cryptography.x509.oid import NameOID

from acme_ca.embedded_pg import EmbeddedPostgres
from integration.interop_clients import (
    CLIENTS,
    EMAIL,
    ISSUANCE,
    ROLLOVER_UNSUPPORTED,
    Certbot,
    Client,
    InteropServer,
    Issued,
    Servers,
    check_issued,
    domain,
    make_client,
    names_for,
)
from integration.processes import describe
from integration.testmode_server import QuietProcesses, RunningTestCa
from tests.support.jws import JwsClient

pytestmark = pytest.mark.integration


# ------------------------------------------------------------------------------------------
# servers: one test-mode server per kind and module, started when first needed


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory,
    postgres: EmbeddedPostgres,
    template_dsn: str,
    request: pytest.FixtureRequest,
) -> Iterator[Servers]:
    base = tmp_path_factory.mktemp("interop")
    with QuietProcesses(base / "logs", request.session) as processes:
        registry = Servers(base, processes, postgres)
        try:
            yield registry
        finally:
            registry.stop()


# ------------------------------------------------------------------------------------------
# the matrix


@pytest.mark.parametrize(("challenge", "key_type", "shape"), ISSUANCE)
@pytest.mark.parametrize("label", list(CLIENTS))
def test_issuance(
    label: str, challenge: str, key_type: str, shape: str, servers: Servers, tmp_path: Path
) -> None:
    client = make_client(label, servers, tmp_path)
    case = f"{challenge.replace('-', '')}-{key_type}"
    names = names_for(shape, domain(case, label))
    issued = client.issue(names, key_type, challenge)
    check_issued(client.server, issued)
    if shape == "1name":
        ISSUED[label] = (client, issued)
    print(f"interop {label} {case} ({', '.join(names)}): ok")


def test_alpn_lego_tls_issues_end_to_end(servers: Servers, tmp_path: Path) -> None:
    """ALPN-1..5 with a real client: ``lego --tls`` answers tls-alpn-01 itself on the CA's
    validation port (the challenge server's own listener off), the CA validates it and
    issues (RFC 8737, BR 3.2.2.4.20)."""
    client = make_client("lego", servers, tmp_path)
    names = [domain("tlsalpn01-ecdsa", "lego")]
    issued = client.issue(names, "ecdsa", "tls-alpn-01")
    check_issued(client.server, issued)
    valid = client.server.ca.proc.wait_events(  # logged just after the commit
        "challenge.valid", where=lambda e: e.get("identifier") == names[0]
    )
    assert [e["type"] for e in valid] == ["tls-alpn-01"], valid


def order_profile(server: InteropServer, names: list[str]) -> str:
    """The profile of the (last) order for exactly ``names``, from the CA's order.created."""
    wanted = sorted(names)
    created = [
        e
        for e in server.ca.proc.events("order.created")
        if sorted(e.get("identifiers") or []) == wanted
    ]
    assert created, f"no order.created for {names}"
    profile: str = created[-1]["profile"]
    return profile


#: PROF-1 with certbot 4+: (flag, profile asked for, profile the CA must issue under).
CERTBOT_PROFILES = [
    pytest.param("required", "dv", "dv", id="required-dv"),
    pytest.param("required", "tlsserver", "tlsserver", id="required-tlsserver"),
    pytest.param("required", "shortlived", "shortlived", id="required-shortlived"),
    pytest.param("preferred", "tlsserver", "tlsserver", id="preferred-tlsserver"),
    pytest.param("preferred", "classic", "dv", id="preferred-unknown-falls-back-to-dv"),
]


@pytest.mark.parametrize(("flag", "asked", "issued_as"), CERTBOT_PROFILES)
def test_prof_1_certbot_profiles(
    flag: str, asked: str, issued_as: str, servers: Servers, tmp_path: Path
) -> None:
    client = make_client("certbot", servers, tmp_path)
    assert isinstance(client, Certbot)
    names = [domain(f"profile-{flag}-{asked}", "certbot")]
    issued = client.issue(names, "ecdsa", "http-01", profile=(flag, asked))
    check_issued(client.server, issued)  # pkilint DV-FINAL-CERTIFICATE: no ERROR or FATAL
    assert order_profile(client.server, names) == issued_as
    cert = issued.certificate
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc + timedelta(seconds=1)
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if issued_as == "tlsserver":
        assert (lifetime, cn) == (timedelta(days=45), [])
    elif issued_as == "shortlived":
        assert lifetime == timedelta(hours=160) and [a.value for a in cn] == names
    else:
        assert lifetime > timedelta(days=45) and [a.value for a in cn] == names
    print(f"interop certbot --{flag}-profile {asked}: issued as {issued_as}: ok")


def test_prof_1_lego_without_profile_gets_the_default(servers: Servers, tmp_path: Path) -> None:
    client = make_client("lego", servers, tmp_path)
    names = [domain("profile-default", "lego")]
    issued = client.issue(names, "ecdsa", "http-01")
    check_issued(client.server, issued)
    assert order_profile(client.server, names) == "dv"
    print("interop lego without profile: issued as dv: ok")


#: label -> (client, certificate): test_renewal renews the http-01 ECDSA certificate of
#: test_issuance and test_revocation revokes what test_renewal renewed, which saves every
#: client two issuances (uacme sleeps 5 s per processing poll). Run on their own, they
#: issue what they need.
ISSUED: dict[str, tuple[Client, Issued]] = {}
RENEWED: dict[str, tuple[Client, Issued]] = {}


@pytest.mark.parametrize("label", list(CLIENTS))
def test_renewal(label: str, servers: Servers, tmp_path: Path) -> None:
    if label in ISSUED:
        client, first = ISSUED.pop(label)
    else:
        client = make_client(label, servers, tmp_path)
        first = client.issue([domain("renewal", label)], "ecdsa", "http-01")
        check_issued(client.server, first, lint=False)
    renewed = client.renew(first, "http-01")
    check_issued(client.server, renewed)
    assert renewed.serial != first.serial, "renewal returned the old certificate"
    RENEWED[label] = (client, renewed)
    print(f"interop {label} renewal: ok")


@pytest.mark.parametrize("label", list(CLIENTS))
def test_revocation(label: str, servers: Servers, tmp_path: Path) -> None:
    if label in RENEWED:
        client, issued = RENEWED.pop(label)
    else:  # run on its own
        client = make_client(label, servers, tmp_path)
        issued = client.issue([domain("revocation", label)], "ecdsa", "http-01")
        check_issued(client.server, issued, lint=False)
    serial = issued.serial
    client.revoke(issued)
    client.server.wait_revoked(serial)
    print(f"interop {label} revocation: ok")


async def _account_lookup(
    ca: RunningTestCa, key_file: Path, payload: dict[str, object] | None = None
) -> tuple[int, str]:
    """newAccount (by default onlyReturnExisting) signed by the key in ``key_file``: (status,
    Location or problem type). Retries badNonce, as any client must."""
    # openssl re-encodes what GnuTLS wrote: uacme's EC keys may carry a short private
    # scalar, which cryptography refuses as it stands.
    pkcs8 = subprocess.run(
        ["openssl", "pkey", "-in", str(key_file)], capture_output=True, check=True, timeout=30
    ).stdout
    key = load_pem_private_key(pkcs8, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
    context = ssl.create_default_context(cafile=str(ca.cafile))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        client = JwsClient(session, ca.directory_url, key)
        await client.load_directory()
        for _ in range(10):
            reply = await client.post(
                client.directory["newAccount"],
                payload or {"onlyReturnExisting": True},
                use_jwk=True,
            )
            if reply.status == 400 and reply.body.get("type", "").endswith(":badNonce"):
                continue
            if reply.status in (200, 201):
                return reply.status, reply.headers["Location"]
            return reply.status, reply.body.get("type", "")
    pytest.fail("badNonce ten times in a row")


@pytest.mark.parametrize("label", list(CLIENTS))
def test_account_key_rollover(label: str, servers: Servers, tmp_path: Path) -> None:
    client_name = CLIENTS[label][0]
    if client_name in ROLLOVER_UNSUPPORTED:
        pytest.skip(ROLLOVER_UNSUPPORTED[client_name])
    client = make_client(label, servers, tmp_path)
    assert client.register()
    status_before, location_before = asyncio.run(_account_lookup(client.ca, client.rollover_key()))
    assert status_before == 200, location_before
    old_key, new_key = client.rollover()
    assert client.server.ca.proc.events("account.key_changed"), client.ca.proc.tails()
    status_old, old_answer = asyncio.run(_account_lookup(client.ca, old_key))
    assert (status_old, old_answer) == (400, "urn:ietf:params:acme:error:accountDoesNotExist")
    status_new, location = asyncio.run(_account_lookup(client.ca, new_key))
    assert (status_new, location) == (200, location_before), "not the same account"
    print(f"interop {label} account-key-rollover: ok")


@pytest.mark.parametrize("label", list(CLIENTS))
def test_eab_registration(label: str, servers: Servers, tmp_path: Path) -> None:
    client = make_client(label, servers, tmp_path, eab=True)
    kid, hmac_key = client.server.eab_key(f"interop {label}")
    assert not client.server.eab_bound(kid)
    if not client.register((kid, hmac_key)):
        issued = client.issue([domain("eab", label)], "ecdsa", "http-01", eab=(kid, hmac_key))
        check_issued(client.server, issued)
    assert client.server.eab_bound(kid), "the EAB key is not bound to the new account"
    print(f"interop {label} eab: ok")


def test_eab_required_refuses_registration_without_binding(
    servers: Servers, tmp_path: Path
) -> None:
    client = make_client("certbot", servers, tmp_path, eab=True)
    assert isinstance(client, Certbot)
    run = client.run(
        client._argv("register", "--agree-tos", "-m", EMAIL),
        env={"REQUESTS_CA_BUNDLE": str(client.ca.cafile)},
        ok=False,
    )
    assert run.returncode != 0, describe(run)
    assert "external account" in (run.stdout + run.stderr).lower(), describe(run)
    # Not only certbot reading meta.externalAccountRequired: the server refuses too.
    key = tmp_path / "account-key.pem"
    key.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
        )
    )
    status, problem = asyncio.run(_account_lookup(client.ca, key, {"termsOfServiceAgreed": True}))
    assert problem == "urn:ietf:params:acme:error:externalAccountRequired", (status, problem)
    assert status in (400, 403), status
    print("interop certbot eab-required-without-binding-refused: ok")
