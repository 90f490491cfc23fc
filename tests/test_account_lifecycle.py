"""Account lifecycle driven by the real ``acme`` client library (certbot's, from PyPI).

Creation, lookup, contact update, key rollover, deactivation and External Account Binding
(RFC 8555 §7.3), checked the way an unmodified client sees them, plus the audit rows each
state change leaves.  The library is synchronous, so every call runs in a worker thread while
the CA serves on the test's event loop.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg
import josepy as jose
import pytest
import requests
from acme import errors as acme_errors
from acme import jws as acme_jws
from acme import messages
from acme.client import ClientNetwork, ClientV2
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from josepy.jwa import ES256, RS256, JWASignature
from josepy.jwk import JWK, JWKEC, JWKRSA

from acme_ca.db.audit import events_for_account
from acme_ca.db.eab import EabKeyRepository
from tests.fixtures import CaFactory, RunningCa
from tests.support.problems import ERR

T = TypeVar("T")
USER_AGENT = "acme-ca-tests (acme-python)"


# --------------------------------------------------------------------------- helpers


def rsa_key(bits: int = 2048) -> tuple[JWK, JWASignature]:
    return JWKRSA(key=rsa.generate_private_key(65537, bits)), RS256


def ec_key() -> tuple[JWK, JWASignature]:
    return JWKEC(key=ec.generate_private_key(ec.SECP256R1())), ES256


@dataclass
class LibClient:
    """One ``acme.client.ClientV2`` plus every HTTP response its session received."""

    client: ClientV2
    responses: list[requests.Response] = field(default_factory=list)

    @property
    def net(self) -> ClientNetwork:
        return self.client.net

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(fn, *args)

    @property
    def key(self) -> tuple[JWK, JWASignature]:
        """The account key this client signs with (always set: ``Clients.make`` gives one)."""
        assert self.net.key is not None
        return self.net.key, self.net.alg

    @property
    def last(self) -> requests.Response:
        return self.responses[-1]

    def close(self) -> None:
        self.net.session.close()


class Clients:
    """Builds library clients against a running CA and closes their sessions afterwards."""

    def __init__(self) -> None:
        self._made: list[LibClient] = []

    async def make(self, ca: RunningCa, key: tuple[JWK, JWASignature] | None = None) -> LibClient:
        jwk, alg = key or ec_key()
        net = ClientNetwork(key=jwk, alg=alg, user_agent=USER_AGENT)
        responses: list[requests.Response] = []
        net.session.hooks["response"].append(lambda r, *a, **kw: responses.append(r))
        directory = await asyncio.to_thread(ClientV2.get_directory, ca.directory_url, net)
        lib = LibClient(ClientV2(directory, net), responses)
        self._made.append(lib)
        return lib

    def close(self) -> None:
        for lib in self._made:
            lib.close()


@pytest.fixture
async def clients() -> AsyncIterator[Clients]:
    made = Clients()
    yield made
    made.close()


async def register(lib: LibClient, **fields: Any) -> messages.RegistrationResource:
    fields.setdefault("terms_of_service_agreed", True)
    reg = messages.NewRegistration.from_data(**fields)
    return await lib.call(lib.client.new_account, reg)


async def expect_error(lib: LibClient, fn: Callable[..., Any], *args: Any) -> messages.Error:
    with pytest.raises(messages.Error) as info:
        await lib.call(fn, *args)
    return info.value


async def expect_problem(
    lib: LibClient, status: int, kind: str, fn: Callable[..., Any], *args: Any
) -> messages.Error:
    """The library call fails with the problem ``ERR + kind`` and HTTP ``status``."""
    error = await expect_error(lib, fn, *args)
    assert error.typ == ERR + kind, error
    assert lib.last.status_code == status
    return error


def account_id(regr: messages.RegistrationResource) -> int:
    return int(regr.uri.rsplit("/", 1)[1])


def post_as_get_sync(lib: LibClient) -> Callable[[str], requests.Response]:
    """A kid-signed POST-as-GET through the library's own network layer (blocking)."""

    def run(url: str) -> requests.Response:
        return lib.net.post(url, None, new_nonce_url=lib.client.directory["newNonce"])

    return run


async def post_as_get(lib: LibClient, url: str) -> requests.Response:
    return await lib.call(post_as_get_sync(lib), url)


async def change_key(
    lib: LibClient, regr: messages.RegistrationResource, new: tuple[JWK, JWASignature]
) -> requests.Response:
    """keyChange (RFC 8555 §7.3.5).  acme 5.x has no ``ClientV2`` method for it, so the inner
    JWS is built with the library's own ``acme.jws.JWS`` and posted with its network layer."""
    new_key, new_alg = new
    url = lib.client.directory["keyChange"]
    inner_payload = {"account": regr.uri, "oldKey": lib.key[0].public_key().to_partial_json()}
    inner = acme_jws.JWS.sign(
        json.dumps(inner_payload).encode(), key=new_key, alg=new_alg, nonce=None, url=url
    )
    response = await lib.call(
        lambda: lib.net.post(url, inner, new_nonce_url=lib.client.directory["newNonce"])
    )
    lib.net.key, lib.net.alg = new_key, new_alg
    return response


async def new_eab_key(pool: asyncpg.Pool, kid: str | None = None) -> tuple[str, bytes]:
    kid = kid or f"kid-{secrets.token_hex(6)}"
    hmac_key = secrets.token_bytes(32)
    await EabKeyRepository(pool).create(kid, hmac_key, "test", datetime.now(UTC), "test")
    return kid, hmac_key


def eab_for(lib: LibClient, kid: str, hmac_key: bytes) -> dict[str, Any]:
    return messages.ExternalAccountBinding.from_data(
        account_public_key=lib.key[0].public_key(),
        kid=kid,
        hmac_key=jose.b64.b64encode(hmac_key).decode(),
        directory=lib.client.directory,
    )


# --------------------------------------------------------------------------- creation


@pytest.mark.parametrize("keygen", [rsa_key, ec_key], ids=["rsa2048", "es256"])
async def test_acme_acct_1_create_201_location_valid_orders(
    ca: RunningCa, clients: Clients, keygen: Callable[[], tuple[JWK, JWASignature]]
) -> None:
    lib = await clients.make(ca, keygen())
    regr = await register(lib, email="admin@example.com")

    assert lib.last.status_code == 201
    assert lib.last.headers["Location"] == regr.uri
    assert regr.uri.startswith(ca.base_url + "/acme/acct/")
    assert regr.body.status == "valid"
    assert regr.body.contact == ("mailto:admin@example.com",)
    assert regr.body.terms_of_service_agreed is True
    raw = lib.last.json()
    assert raw["orders"] == regr.uri + "/orders"
    assert "onlyReturnExisting" not in raw and "externalAccountBinding" not in raw
    assert lib.last.headers["Content-Type"].startswith("application/json")
    assert "Replay-Nonce" in lib.last.headers
    assert f'<{ca.directory_url}>;rel="index"' in lib.last.headers["Link"]

    # the library's own account lookup (newAccount with onlyReturnExisting) finds it
    found = await lib.call(lib.client.query_registration, regr)
    assert found.uri == regr.uri
    assert found.body.contact == ("mailto:admin@example.com",)


async def test_acme_acct_2_existing_key_returns_200(ca: RunningCa, clients: Clients) -> None:
    key = ec_key()
    lib = await clients.make(ca, key)
    regr = await register(lib, email="first@example.com")

    # a second client with the same key (as after losing local state); acme-python reports
    # "200 + Location" on newAccount as ConflictError(location)
    lib = await clients.make(ca, key)
    with pytest.raises(acme_errors.ConflictError) as info:
        await register(lib, email="second@example.com")
    assert lib.last.status_code == 200
    assert info.value.location == regr.uri
    assert lib.last.headers["Location"] == regr.uri
    # the stored object comes back; the request's fields are ignored
    assert lib.last.json()["contact"] == ["mailto:first@example.com"]


async def test_acme_acct_3_only_return_existing_unknown_key(
    ca: RunningCa, clients: Clients
) -> None:
    lib = await clients.make(ca)
    reg = messages.NewRegistration.from_data(email="nobody@example.com", only_return_existing=True)
    await expect_problem(lib, 400, "accountDoesNotExist", lib.client.new_account, reg)
    assert lib.last.headers["Content-Type"].split(";")[0] == "application/problem+json"


# --------------------------------------------------------------------------- update


async def test_acme_acct_5_update_contact(
    ca: RunningCa, clients: Clients, pool: asyncpg.Pool
) -> None:
    lib = await clients.make(ca)
    regr = await register(lib, email="old@example.com")

    updated = await lib.call(
        lib.client.update_registration,
        regr,
        regr.body.update(contact=("mailto:new@example.com", "mailto:ops@example.org")),
    )
    assert lib.last.status_code == 200
    assert updated.uri == regr.uri
    assert updated.body.contact == ("mailto:new@example.com", "mailto:ops@example.org")
    assert updated.body.status == "valid"

    # clearing the contacts is an update too
    cleared = await lib.call(
        lib.client.update_registration, updated, messages.Registration(contact=())
    )
    assert cleared.body.contact == ()
    fetched = await lib.call(lib.client.query_registration, regr)
    assert fetched.body.contact == ()

    events = [e["event"] for e in await events_for_account(pool, account_id(regr))]
    assert events == ["account.created", "account.updated", "account.updated"]


# --------------------------------------------------------------------------- keyChange


@pytest.mark.parametrize(
    ("old", "new", "stale_error"),
    [
        (ec_key, ec_key, "malformed"),  # same alg: the signature just fails to verify
        (ec_key, rsa_key, "badSignatureAlgorithm"),  # ES256 no longer fits the RSA key
        (rsa_key, ec_key, "badSignatureAlgorithm"),
    ],
    ids=["es256-to-es256", "es256-to-rsa", "rsa-to-es256"],
)
async def test_acme_key_2_rollover(
    ca: RunningCa,
    clients: Clients,
    old: Callable[[], tuple[JWK, JWASignature]],
    new: Callable[[], tuple[JWK, JWASignature]],
    stale_error: str,
) -> None:
    old_key = old()
    lib = await clients.make(ca, old_key)
    regr = await register(lib, email="roll@example.com")

    new_key = new()
    response = await change_key(lib, regr, new_key)
    assert response.status_code == 200
    assert response.headers["Location"] == regr.uri
    assert response.json()["status"] == "valid"

    # the new key signs for the account (kid), and newAccount with it finds the account
    assert (await post_as_get(lib, regr.uri)).json()["contact"] == ["mailto:roll@example.com"]
    assert (await lib.call(lib.client.query_registration, regr)).uri == regr.uri
    updated = await lib.call(
        lib.client.update_registration, regr, messages.Registration(contact=())
    )
    assert updated.body.contact == ()

    # the old key no longer names the account ...
    stale = await clients.make(ca, old_key)
    error = await expect_error(stale, stale.client.query_registration, regr)
    assert error.typ == ERR + "accountDoesNotExist"
    # ... and its signatures under the account's kid no longer verify
    stale.net.account = regr
    error = await expect_problem(stale, 400, stale_error, post_as_get_sync(stale), regr.uri)
    stale.net.account = None

    # registering the old key again makes a new, separate account
    again = await register(stale)
    assert again.uri != regr.uri


# --------------------------------------------------------------------------- deactivation


async def test_acme_acct_6_deactivate_then_401(ca: RunningCa, clients: Clients) -> None:
    lib = await clients.make(ca)
    regr = await register(lib, email="bye@example.com")

    deactivated = await lib.call(lib.client.deactivate_registration, regr)
    assert lib.last.status_code == 200
    assert deactivated.body.status == "deactivated"

    # kid-signed requests: 401 unauthorized
    for url in (regr.uri, regr.uri + "/orders"):
        await expect_problem(lib, 401, "unauthorized", post_as_get_sync(lib), url)
        assert "Replay-Nonce" in lib.last.headers

    # a second deactivation, a contact update, and the jwk lookup are refused alike
    await expect_problem(lib, 401, "unauthorized", lib.client.deactivate_registration, regr)
    await expect_problem(lib, 401, "unauthorized", lib.client.query_registration, regr)

    # newAccount with the same key does not resurrect or replace the account
    fresh = await clients.make(ca, lib.key)
    await expect_problem(
        fresh,
        401,
        "unauthorized",
        fresh.client.new_account,
        messages.NewRegistration.from_data(terms_of_service_agreed=True),
    )


# --------------------------------------------------------------------------- audit trail


async def test_audit_trail_rows_carry_request_id(
    ca: RunningCa, clients: Clients, pool: asyncpg.Pool
) -> None:
    lib = await clients.make(ca)
    regr = await register(lib, email="audit@example.com")
    created_rid = lib.last.headers["X-Request-ID"]

    await lib.call(
        lib.client.update_registration, regr, messages.Registration(contact=("mailto:b@b.example",))
    )
    updated_rid = lib.last.headers["X-Request-ID"]

    await change_key(lib, regr, rsa_key())
    key_rid = lib.last.headers["X-Request-ID"]

    await lib.call(lib.client.deactivate_registration, regr)
    deactivated_rid = lib.last.headers["X-Request-ID"]

    events = await events_for_account(pool, account_id(regr))
    assert [(e["event"], e["request_id"]) for e in events] == [
        ("account.created", created_rid),
        ("account.updated", updated_rid),
        ("account.key_changed", key_rid),
        ("account.deactivated", deactivated_rid),
    ]
    assert len({created_rid, updated_rid, key_rid, deactivated_rid}) == 4
    for event in events:
        assert event["actor"] == f"account:{account_id(regr)}"
    by_name = {e["event"]: e["details"] for e in events}
    assert by_name["account.created"]["contact"] == ["mailto:audit@example.com"]
    assert by_name["account.updated"]["contact"] == ["mailto:b@b.example"]
    key_changed = by_name["account.key_changed"]
    assert key_changed["old_thumbprint"] != key_changed["new_thumbprint"]


# --------------------------------------------------------------------------- EAB


@pytest.fixture
async def eab_ca(ca_factory: CaFactory) -> RunningCa:
    return await ca_factory.start(external_account_required=True)


async def test_acme_eab_1_good_mac_registers_and_reflects_binding(
    eab_ca: RunningCa, clients: Clients, pool: asyncpg.Pool
) -> None:
    lib = await clients.make(eab_ca)
    assert lib.client.external_account_required()
    kid, hmac_key = await new_eab_key(pool)
    binding = eab_for(lib, kid, hmac_key)

    regr = await register(lib, email="eab@example.com", external_account_binding=binding)
    assert lib.last.status_code == 201
    assert regr.body.external_account_binding == binding

    stored = await EabKeyRepository(pool).get(kid)
    assert stored is not None and stored.account_id == account_id(regr)
    created = (await events_for_account(pool, account_id(regr)))[0]
    assert created["event"] == "account.created"
    assert created["details"]["eab_kid"] == kid

    # later lookups need no binding and do not reflect one
    again = await clients.make(eab_ca, lib.key)
    with pytest.raises(acme_errors.ConflictError):
        await register(again)
    assert again.last.status_code == 200
    assert "externalAccountBinding" not in again.last.json()


async def test_acme_eab_1_bad_mac_unauthorized(
    eab_ca: RunningCa, clients: Clients, pool: asyncpg.Pool
) -> None:
    lib = await clients.make(eab_ca)
    kid, _ = await new_eab_key(pool)
    binding = eab_for(lib, kid, secrets.token_bytes(32))
    await expect_problem(
        lib,
        403,
        "unauthorized",
        lib.client.new_account,
        messages.NewRegistration.from_data(
            terms_of_service_agreed=True, external_account_binding=binding
        ),
    )
    stored = await EabKeyRepository(pool).get(kid)
    assert stored is not None and stored.account_id is None


async def test_acme_eab_1_unknown_kid_unauthorized(
    eab_ca: RunningCa, clients: Clients, pool: asyncpg.Pool
) -> None:
    lib = await clients.make(eab_ca)
    await new_eab_key(pool)
    binding = eab_for(lib, "no-such-kid", secrets.token_bytes(32))
    error = await expect_error(
        lib,
        lib.client.new_account,
        messages.NewRegistration.from_data(
            terms_of_service_agreed=True, external_account_binding=binding
        ),
    )
    assert error.typ == ERR + "unauthorized"


async def test_acme_eab_1_revoked_kid_unauthorized(
    eab_ca: RunningCa, clients: Clients, pool: asyncpg.Pool
) -> None:
    lib = await clients.make(eab_ca)
    kid, hmac_key = await new_eab_key(pool)
    await EabKeyRepository(pool).revoke(kid, datetime.now(UTC), "test")
    error = await expect_error(
        lib,
        lib.client.new_account,
        messages.NewRegistration.from_data(
            terms_of_service_agreed=True, external_account_binding=eab_for(lib, kid, hmac_key)
        ),
    )
    assert error.typ == ERR + "unauthorized"


async def test_acme_eab_1_kid_already_bound_unauthorized(
    eab_ca: RunningCa, clients: Clients, pool: asyncpg.Pool
) -> None:
    kid, hmac_key = await new_eab_key(pool)
    first = await clients.make(eab_ca)
    first_regr = await register(first, external_account_binding=eab_for(first, kid, hmac_key))

    second = await clients.make(eab_ca)
    error = await expect_error(
        second,
        second.client.new_account,
        messages.NewRegistration.from_data(
            terms_of_service_agreed=True,
            external_account_binding=eab_for(second, kid, hmac_key),
        ),
    )
    assert error.typ == ERR + "unauthorized"
    stored = await EabKeyRepository(pool).get(kid)
    assert stored is not None and stored.account_id == account_id(first_regr)


async def test_acme_eab_1_missing_binding_external_account_required(
    eab_ca: RunningCa, clients: Clients, pool: asyncpg.Pool
) -> None:
    lib = await clients.make(eab_ca)
    await new_eab_key(pool)
    await expect_problem(
        lib,
        403,
        "externalAccountRequired",
        lib.client.new_account,
        messages.NewRegistration.from_data(terms_of_service_agreed=True),
    )


async def test_acme_eab_1_optional_binding_verified_when_sent(
    ca: RunningCa, clients: Clients, pool: asyncpg.Pool
) -> None:
    """EAB not required: no binding is fine, but a binding that is sent must verify."""
    plain = await clients.make(ca)
    assert not plain.client.external_account_required()
    await register(plain)
    assert "externalAccountBinding" not in plain.last.json()

    kid, hmac_key = await new_eab_key(pool)
    bad = await clients.make(ca)
    error = await expect_error(
        bad,
        bad.client.new_account,
        messages.NewRegistration.from_data(
            terms_of_service_agreed=True,
            external_account_binding=eab_for(bad, kid, secrets.token_bytes(32)),
        ),
    )
    assert error.typ == ERR + "unauthorized"

    good = await clients.make(ca)
    binding = eab_for(good, kid, hmac_key)
    regr = await register(good, external_account_binding=binding)
    assert regr.body.external_account_binding == binding
