"""Request payloads (acme/messages.py) and wire resources (acme/resources.py), without a server.

Every row of the ``bad`` tables is one member missing or of the wrong type, with the RFC 8555
problem type and status it must give and the member the detail must name.  The same decoding
runs behind every endpoint (``wfe/verify.verify_post``); the HTTP tests in
``test_accounts_protocol.py``, ``test_orders.py`` and ``test_wfe_jws.py`` show it wired.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from acme_ca.acme import problems, resources
from acme_ca.acme.b64 import b64url_encode
from acme_ca.acme.jwk import jwk_from_key
from acme_ca.acme.messages import (
    AccountUpdate,
    AuthzUpdate,
    ChallengeResponse,
    Finalize,
    FlattenedJws,
    KeyChange,
    Message,
    NewAccount,
    NewOrder,
    RevokeCert,
)
from acme_ca.acme.problems import AcmeError, Identifier, Problem
from acme_ca.acme.status import (
    AccountStatus,
    AuthorizationStatus,
    ChallengeStatus,
    OrderStatus,
)
from acme_ca.wfe.urls import Urls
from tests.support.problems import ERR

DNS = {"type": "dns", "value": "a.example.com"}
JWK = jwk_from_key(ec.generate_private_key(ec.SECP256R1()).public_key())
EAB = {"protected": "e30", "payload": "e30", "signature": "AAAA"}


def assert_bad(cls: type[Message], payload: Any, short_type: str, status: int, member: str) -> None:
    with pytest.raises(AcmeError) as caught:
        cls.from_json(payload)
    problem = caught.value.problem
    assert (problem.type, problem.status) == (ERR + short_type, status), problem
    assert f"'{member}'" in problem.detail, problem.detail


# --------------------------------------------------------------------------- newAccount


@pytest.mark.parametrize(
    ("payload", "short_type", "member"),
    [
        pytest.param({"contact": "mailto:a@example.com"}, "malformed", "contact", id="contact-str"),
        pytest.param({"contact": [42]}, "malformed", "contact", id="contact-not-strings"),
        pytest.param({"contact": {"a": 1}}, "malformed", "contact", id="contact-object"),
        pytest.param({"termsOfServiceAgreed": "true"}, "malformed", "termsOfServiceAgreed",
                     id="tos-string"),
        pytest.param({"termsOfServiceAgreed": 1}, "malformed", "termsOfServiceAgreed",
                     id="tos-int"),
        pytest.param({"onlyReturnExisting": "yes"}, "malformed", "onlyReturnExisting",
                     id="only-existing-string"),
        pytest.param({"externalAccountBinding": "jws"}, "malformed", "externalAccountBinding",
                     id="eab-string"),
        pytest.param({"externalAccountBinding": {**EAB, "header": {}}}, "malformed",
                     "externalAccountBinding", id="eab-extra-member"),
        pytest.param({"externalAccountBinding": {"protected": "e30", "payload": "e30"}},
                     "malformed", "externalAccountBinding", id="eab-no-signature"),
        pytest.param({"externalAccountBinding": {**EAB, "payload": 5}}, "malformed",
                     "externalAccountBinding", id="eab-member-not-string"),
    ],
)  # fmt: skip
def test_acme_acct_1_new_account_bad_members(payload: Any, short_type: str, member: str) -> None:
    assert_bad(NewAccount, payload, short_type, 400, member)


def test_acme_acct_3_new_account_unknown_members_ignored_null_is_absent() -> None:
    message = NewAccount.from_json(
        {"contact": None, "onlyReturnExisting": None, "orders": "x", "status": "deactivated"}
    )
    assert message == NewAccount(
        contact=None,
        terms_of_service_agreed=False,
        only_return_existing=False,
        external_account_binding=None,
    )
    assert NewAccount.from_json({"onlyReturnExisting": True}).only_return_existing is True


def test_acme_acct_4_terms_agreed_and_eab_decoded() -> None:
    message = NewAccount.from_json(
        {
            "contact": ["mailto:a@example.com"],
            "termsOfServiceAgreed": True,
            "externalAccountBinding": EAB,
        }
    )
    assert message.contact == ("mailto:a@example.com",)
    assert message.terms_of_service_agreed is True
    assert message.external_account_binding == FlattenedJws(**EAB)
    # ACME-EAB-1: reflected exactly as sent
    assert message.external_account_binding.to_json() == EAB


@pytest.mark.parametrize("payload", [None, [], "{}", 5], ids=["null", "array", "string", "number"])
def test_acme_jws_1_payload_must_be_an_object(payload: Any) -> None:
    for cls in (NewAccount, AccountUpdate, NewOrder, Finalize, ChallengeResponse, RevokeCert):
        with pytest.raises(AcmeError) as caught:
            cls.from_json(payload)
        assert caught.value.problem.type == ERR + "malformed"
        assert caught.value.problem.status == 400


# --------------------------------------------------------------------------- account update


@pytest.mark.parametrize(
    ("payload", "member"),
    [
        pytest.param({"contact": "mailto:a@example.com"}, "contact", id="contact-str"),
        pytest.param({"contact": [None]}, "contact", id="contact-null-element"),
        pytest.param({"contact": 7}, "contact", id="contact-number"),
    ],
)
def test_acme_acct_5_account_update_bad_members(payload: Any, member: str) -> None:
    assert_bad(AccountUpdate, payload, "malformed", 400, member)


@pytest.mark.parametrize("status", ["valid", "revoked", "pending", 7, True, {"a": 1}])
def test_acme_acct_5_update_status_other_than_deactivated_reads_as_absent(status: Any) -> None:
    """§7.3.2: the server MUST ignore ``status`` except a deactivation (certbot sends "valid")."""
    message = AccountUpdate.from_json({"status": status, "contact": []})
    assert message.status is None
    assert message.contact == ()


def test_acme_acct_6_deactivation_decoded() -> None:
    message = AccountUpdate.from_json({"status": "deactivated", "termsOfServiceAgreed": "x"})
    assert message == AccountUpdate(contact=None, status=AccountStatus.DEACTIVATED)


# --------------------------------------------------------------------------- keyChange


@pytest.mark.parametrize(
    ("payload", "member"),
    [
        pytest.param({"oldKey": JWK.to_json()}, "account", id="account-missing"),
        pytest.param({"account": None, "oldKey": JWK.to_json()}, "account", id="account-null"),
        pytest.param({"account": 17, "oldKey": JWK.to_json()}, "account", id="account-number"),
        pytest.param({"account": "https://ca/acme/acct/1"}, "oldKey", id="old-key-missing"),
        pytest.param({"account": "https://ca/acme/acct/1", "oldKey": "k"}, "oldKey",
                     id="old-key-string"),
        pytest.param({"account": "https://ca/acme/acct/1", "oldKey": {"kty": "oct", "k": "AA"}},
                     "oldKey", id="old-key-symmetric"),
        pytest.param({"account": "https://ca/acme/acct/1",
                      "oldKey": {**JWK.to_json(), "x": "AA"}}, "oldKey", id="old-key-off-curve"),
    ],
)  # fmt: skip
def test_acme_key_1_key_change_bad_members(payload: Any, member: str) -> None:
    assert_bad(KeyChange, payload, "malformed", 400, member)


def test_acme_key_1_key_change_decoded() -> None:
    message = KeyChange.from_json({"account": "https://ca/acme/acct/1", "oldKey": JWK.to_json()})
    assert message.account == "https://ca/acme/acct/1"
    assert message.old_key.thumbprint() == JWK.thumbprint()


# --------------------------------------------------------------------------- newOrder


@pytest.mark.parametrize(
    ("payload", "member"),
    [
        pytest.param({}, "identifiers", id="identifiers-missing"),
        pytest.param({"identifiers": None}, "identifiers", id="identifiers-null"),
        pytest.param({"identifiers": DNS}, "identifiers", id="identifiers-object"),
        pytest.param({"identifiers": ["a.example.com"]}, "identifiers", id="identifier-string"),
        pytest.param({"identifiers": [{"type": "dns"}]}, "identifiers", id="identifier-no-value"),
        pytest.param({"identifiers": [{"type": "dns", "value": 5}]}, "identifiers",
                     id="identifier-value-number"),
        pytest.param({"identifiers": [{"type": None, "value": "a.example.com"}]}, "identifiers",
                     id="identifier-type-null"),
        pytest.param({"identifiers": [DNS], "notBefore": 1893456000}, "notBefore",
                     id="not-before-number"),
        pytest.param({"identifiers": [DNS], "notBefore": "tomorrow"}, "notBefore",
                     id="not-before-not-a-date"),
        pytest.param({"identifiers": [DNS], "notAfter": "2030-01-01T00:00:00"}, "notAfter",
                     id="not-after-no-offset"),
        pytest.param({"identifiers": [DNS], "profile": ["tlsserver"]}, "profile",
                     id="profile-array"),
        pytest.param({"identifiers": [DNS], "replaces": 12}, "replaces", id="replaces-number"),
    ],
)  # fmt: skip
def test_acme_ord_1_new_order_bad_members(payload: Any, member: str) -> None:
    assert_bad(NewOrder, payload, "malformed", 400, member)


def test_acme_ord_2_new_order_decoded() -> None:
    message = NewOrder.from_json(
        {
            "identifiers": [DNS, {"type": "ip", "value": "192.0.2.1"}],
            "notBefore": "2030-01-01T00:00:00Z",
            "notAfter": None,
            "profile": "classic",
            "replaces": "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE",
        }
    )
    assert message.identifiers == (
        Identifier("dns", "a.example.com"),
        Identifier("ip", "192.0.2.1"),
    )
    assert message.not_before == datetime(2030, 1, 1, tzinfo=UTC)
    assert message.not_after is None
    assert message.profile == "classic"
    assert message.replaces == "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"


# --------------------------------------------------------------------------- finalize


@pytest.mark.parametrize(
    ("payload", "short_type"),
    [
        pytest.param({}, "malformed", id="csr-missing"),
        pytest.param({"csr": None}, "malformed", id="csr-null"),
        pytest.param({"csr": 42}, "malformed", id="csr-number"),
        pytest.param({"csr": ["MIIB"]}, "malformed", id="csr-array"),
        pytest.param({"csr": "MIIB+/=="}, "badCSR", id="csr-standard-base64"),
        pytest.param({"csr": "MIIBa"}, "badCSR", id="csr-bad-length"),
    ],
)
def test_acme_fin_2_finalize_bad_csr(payload: Any, short_type: str) -> None:
    assert_bad(Finalize, payload, short_type, 400, "csr")


def test_acme_fin_2_finalize_decodes_der() -> None:
    assert Finalize.from_json({"csr": b64url_encode(b"\x30\x03\x02\x01\x00")}).csr == (
        b"\x30\x03\x02\x01\x00"
    )


# --------------------------------------------------------------------------- authorizations


@pytest.mark.parametrize(
    "payload",
    [{}, {"status": None}, {"status": "valid"}, {"status": "DEACTIVATED"}, {"status": 1}],
    ids=["missing", "null", "valid", "upper-case", "number"],
)
def test_acme_authz_3_authz_update_only_deactivation(payload: Any) -> None:
    assert_bad(AuthzUpdate, payload, "malformed", 400, "status")


def test_acme_authz_3_deactivation_decoded() -> None:
    message = AuthzUpdate.from_json({"status": "deactivated"})
    assert message.status is AuthorizationStatus.DEACTIVATED


def test_acme_chal_2_challenge_response_is_an_object() -> None:
    assert ChallengeResponse.from_json({}) == ChallengeResponse()
    assert ChallengeResponse.from_json({"keyAuthorization": "ignored"}) == ChallengeResponse()


# --------------------------------------------------------------------------- revokeCert


@pytest.mark.parametrize(
    ("payload", "short_type", "member"),
    [
        pytest.param({}, "malformed", "certificate", id="certificate-missing"),
        pytest.param({"certificate": 5}, "malformed", "certificate", id="certificate-number"),
        pytest.param({"certificate": "MII="}, "malformed", "certificate", id="certificate-padded"),
        pytest.param({"certificate": "MIIB", "reason": "1"}, "badRevocationReason", "reason",
                     id="reason-string"),
        pytest.param({"certificate": "MIIB", "reason": True}, "badRevocationReason", "reason",
                     id="reason-bool"),
        pytest.param({"certificate": "MIIB", "reason": 1.5}, "badRevocationReason", "reason",
                     id="reason-float"),
    ],
)  # fmt: skip
def test_acme_rev_2_revoke_cert_bad_members(payload: Any, short_type: str, member: str) -> None:
    assert_bad(RevokeCert, payload, short_type, 400, member)


def test_acme_rev_1_revoke_cert_decoded() -> None:
    message = RevokeCert.from_json({"certificate": "MIIB", "reason": 4})
    assert message == RevokeCert(certificate=b"\x30\x82\x01", reason=4)
    assert RevokeCert.from_json({"certificate": "MIIB"}).reason is None


# --------------------------------------------------------------------------- resources

URLS = Urls("https://ca.example")
AT = datetime(2026, 12, 3, 15, 4, 5, 678000, tzinfo=UTC)


def test_acme_err_1_stored_problem_round_trips() -> None:
    problem = problems.rejected_identifier(
        "refused",
        subproblems=(problems.caa("CAA forbids", identifier=Identifier("dns", "a.example.com")),),
    )
    body = problem.to_json()
    assert Problem.from_json(body) == problem
    algorithms = problems.bad_signature_algorithm("no", ["ES256"])
    assert Problem.from_json(algorithms.to_json()).to_json() == algorithms.to_json()
    with pytest.raises(TypeError):
        Problem.from_json({"type": ERR + "malformed", "detail": "x"})


def test_acme_acct_1_account_resource() -> None:
    key = jwk_from_key(ec.generate_private_key(ec.SECP256R1()).public_key())
    account = resources.Account(
        id=7,
        status=AccountStatus.VALID,
        key=key,
        contact=("mailto:a@example.com",),
        created_at=AT,
        terms_of_service_agreed=True,
        external_account_binding=FlattenedJws(**EAB),
    )
    assert account.to_json(URLS) == {
        "status": "valid",
        "key": key.to_json(),
        "contact": ["mailto:a@example.com"],
        "orders": "https://ca.example/acme/acct/7/orders",
        "createdAt": "2026-12-03T15:04:05Z",
        "termsOfServiceAgreed": True,
        "externalAccountBinding": EAB,
    }


def test_acme_ord_1_order_resource() -> None:
    error = problems.unauthorized("expired")
    order = resources.Order(
        id=3,
        status=OrderStatus.INVALID,
        expires=AT,
        identifiers=(Identifier("dns", "a.example.com"),),
        authz_ids=(11, 12),
        error=error,
        replaces="abc.def",
    )
    assert order.to_json(URLS) == {
        "status": "invalid",
        "expires": "2026-12-03T15:04:05Z",
        "identifiers": [DNS],
        "authorizations": ["https://ca.example/acme/authz/11", "https://ca.example/acme/authz/12"],
        "finalize": "https://ca.example/acme/order/3/finalize",
        "replaces": "abc.def",
        "error": error.to_json(),
    }
    valid = resources.Order(
        id=3,
        status=OrderStatus.VALID,
        expires=AT,
        identifiers=(),
        authz_ids=(),
        certificate_id=9,
    )
    assert valid.to_json(URLS)["certificate"] == "https://ca.example/acme/cert/9"
    assert "error" not in valid.to_json(URLS) and "replaces" not in valid.to_json(URLS)


def test_acme_authz_2_authorization_and_challenge_resources() -> None:
    """ACME-AUTHZ-2 wildcard flag; ACME-CHAL-1 ``validated`` on valid, ``error`` on invalid."""
    good = resources.Challenge(
        id=5,
        type="dns-01",
        token="tok",
        status=ChallengeStatus.VALID,
        validated=AT,
        validation_record=({"hostname": "example.com"},),
    )
    bad = resources.Challenge(
        id=6,
        type="http-01",
        token="tok2",
        status=ChallengeStatus.INVALID,
        error=problems.connection("refused"),
    )
    authz = resources.Authorization(
        identifier=Identifier("dns", "example.com"),
        status=AuthorizationStatus.VALID,
        expires=AT,
        challenges=(good, bad),
        wildcard=True,
    )
    body = json.loads(json.dumps(authz.to_json(URLS)))  # the wire form, as a client reads it
    assert body["identifier"] == {"type": "dns", "value": "example.com"}
    assert body["wildcard"] is True
    assert body["status"] == "valid"
    assert body["challenges"][0] == {
        "type": "dns-01",
        "url": "https://ca.example/acme/chall/5",
        "token": "tok",
        "status": "valid",
        "validated": "2026-12-03T15:04:05Z",
        "validationRecord": [{"hostname": "example.com"}],
    }
    assert body["challenges"][1]["error"]["type"] == ERR + "connection"
    assert "validated" not in body["challenges"][1]
    plain = resources.Authorization(
        identifier=Identifier("dns", "example.com"),
        status=AuthorizationStatus.PENDING,
        expires=AT,
        challenges=(),
    )
    assert "wildcard" not in plain.to_json(URLS)


def test_persist_1_challenge_names_issuers_and_account_not_a_token() -> None:
    """draft-ietf-acme-dns-persist §3.1 (as Pebble 2.10): ``issuer-domain-names`` and
    ``accounturi`` instead of ``token``."""
    persist = resources.Challenge(
        id=7,
        type="dns-persist-01",
        token="unused",
        status=ChallengeStatus.PENDING,
        issuer_domain_names=("ca.example", "ca.example.net"),
        account_uri="https://ca.example/acme/acct/3",
    )
    assert json.loads(json.dumps(persist.to_json(URLS))) == {
        "type": "dns-persist-01",
        "url": "https://ca.example/acme/chall/7",
        "issuer-domain-names": ["ca.example", "ca.example.net"],
        "accounturi": "https://ca.example/acme/acct/3",
        "status": "pending",
    }
