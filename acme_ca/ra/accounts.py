"""Account policy (RFC 8555 §7.3): registration, External Account Binding, updates, key rollover.

Every rule that decides whether an account request is acceptable lives here; storage is one
repository call per state change, and the web layer only translates HTTP.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import structlog

from acme_ca.acme import problems
from acme_ca.acme.eab import parse_eab, verify_eab_mac
from acme_ca.acme.jwk import Jwk
from acme_ca.acme.messages import AccountUpdate, FlattenedJws, KeyChange, NewAccount
from acme_ca.acme.problems import AcmeError
from acme_ca.acme.status import AccountStatus
from acme_ca.clock import Clock
from acme_ca.db.accounts import (
    Account,
    AccountKeyInUse,
    AccountRepository,
    AccountStateChanged,
    EabKeyUnavailable,
)
from acme_ca.db.eab import EabKeyRepository
from acme_ca.ra.contacts import validate_contacts
from acme_ca.ra.keys import KeyPolicy, KeyRejected
from acme_ca.ra.ratelimits import RateLimiter

log = structlog.get_logger(component="acme_ca.ra.accounts")


class AccountKeyConflict(AcmeError):
    """keyChange to a key another account holds: 409, and the web layer adds its Location."""

    def __init__(self, account_id: int) -> None:
        super().__init__(problems.conflict("the new key is already in use by an account"))
        self.account_id = account_id


@dataclass(frozen=True)
class NewAccountResult:
    account: Account
    created: bool
    #: The verified binding, reflected in the 201 response (RFC 8555 §7.3.4).
    external_account_binding: FlattenedJws | None = None


class AccountAuthority:
    """Decides account requests; see the module docstring."""

    def __init__(
        self,
        accounts: AccountRepository,
        eab_keys: EabKeyRepository,
        key_policy: KeyPolicy,
        clock: Clock,
        *,
        terms_of_service: str | None,
        external_account_required: bool,
        shared_eab_keys: Mapping[str, bytes] | None = None,
        limits: RateLimiter | None = None,
    ) -> None:
        """``shared_eab_keys`` (test mode's ``--pebble-config``) bind any number of accounts,
        as Pebble's do; keys from ``acme-ca eab create`` bind one account each."""
        self._accounts = accounts
        self._eab_keys = eab_keys
        self._shared_eab_keys = dict(shared_eab_keys or {})
        self._key_policy = key_policy
        self._clock = clock
        self._terms = terms_of_service
        self._eab_required = external_account_required
        self._limits = limits

    async def check_account_key(self, jwk: Jwk) -> None:
        """Apply the key policy to an account key: ``badPublicKey`` on refusal (§6.2)."""
        try:
            await self._key_policy.check(jwk.key, purpose="account")
        except KeyRejected as exc:
            raise AcmeError(problems.bad_public_key(f"account key refused: {exc.detail}")) from None

    async def new_account(
        self, jwk: Jwk, message: NewAccount, outer_url: str, *, source: str | None = None
    ) -> NewAccountResult:
        """Create (or find) the account of ``jwk``; ``source`` is the client's address, which
        the new-accounts rate limit counts against."""
        existing = await self._accounts.get_by_thumbprint(jwk.thumbprint())
        if existing is not None:
            if existing.status != AccountStatus.VALID:
                raise AcmeError(problems.deactivated_account())
            return NewAccountResult(existing, created=False)
        if message.only_return_existing:
            raise AcmeError(problems.account_does_not_exist("no account exists with this key"))
        if self._terms and not message.terms_of_service_agreed:
            raise AcmeError(
                problems.user_action_required(
                    "you must agree to the terms of service (termsOfServiceAgreed: true)",
                    extra={"instance": self._terms},
                ),
                headers={"Link": f'<{self._terms}>;rel="terms-of-service"'},
            )
        contact = validate_contacts(message.contact or ())
        await self.check_account_key(jwk)

        binding = message.external_account_binding
        eab_kid: str | None = None
        shared_kid: str | None = None
        if binding is not None:
            parsed = parse_eab(binding, outer_url=outer_url, outer_jwk=jwk)
            if parsed.kid in self._shared_eab_keys:
                verify_eab_mac(parsed, self._shared_eab_keys[parsed.kid])
                shared_kid = parsed.kid
            else:
                eab_kid = await self._verify_binding(binding, outer_url, jwk)
        elif self._eab_required:
            raise AcmeError(
                problems.external_account_required("this CA requires an externalAccountBinding")
            )

        if self._limits is not None:
            await self._limits.new_account(source)
        try:
            account = await self._accounts.create(
                jwk=jwk,
                contact=contact,
                tos_agreed=message.terms_of_service_agreed,
                eab_kid=eab_kid,
                now=self._clock.now(),
            )
        except AccountKeyInUse as exc:  # lost a race with a request for the same key
            raced = await self._accounts.get(exc.account_id)
            assert raced is not None
            return NewAccountResult(raced, created=False)
        except EabKeyUnavailable:
            raise AcmeError(
                problems.unauthorized("externalAccountBinding key is already bound to an account")
            ) from None
        log.info(
            "account.created",
            account_id=account.id,
            eab_kid=eab_kid or shared_kid,
            eab_shared=shared_kid is not None,
        )
        verified = binding if eab_kid or shared_kid else None
        return NewAccountResult(account, created=True, external_account_binding=verified)

    async def _verify_binding(self, binding: FlattenedJws, outer_url: str, jwk: Jwk) -> str:
        parsed = parse_eab(binding, outer_url=outer_url, outer_jwk=jwk)
        key = await self._eab_keys.get(parsed.kid)
        if key is None or key.revoked_at is not None:
            raise AcmeError(problems.unauthorized("externalAccountBinding kid is not known"))
        verify_eab_mac(parsed, key.hmac_key)
        if key.account_id is not None:
            raise AcmeError(
                problems.unauthorized("externalAccountBinding key is already bound to an account")
            )
        return parsed.kid

    async def update(self, account: Account, message: AccountUpdate) -> Account:
        """Contact change or deactivation (§7.3.2, §7.3.6); other fields are ignored.

        That includes ``status`` unless it is ``"deactivated"`` (the message reads any other
        value as absent): §7.3.2 says the server MUST ignore updates to it, and
        acme-python/certbot echo ``"status": "valid"`` in every contact update.
        """
        try:
            if message.contact is not None:
                contact = validate_contacts(message.contact)
                account = await self._accounts.update_contact(
                    account.id, contact, self._clock.now()
                )
                log.info("account.updated", account_id=account.id)
            if message.status is AccountStatus.DEACTIVATED:
                account = await self._accounts.deactivate(account.id, self._clock.now())
                log.info("account.deactivated", account_id=account.id)
        except AccountStateChanged:
            raise AcmeError(problems.deactivated_account()) from None
        return account

    async def key_change(
        self, account: Account, account_url: str, new_key: Jwk, message: KeyChange
    ) -> Account:
        """Roll the account key over (§7.3.5); ``AcmeError`` with 409 if the key is taken.

        ``new_key`` signed the inner JWS whose payload is ``message``
        (:func:`acme_ca.acme.jws.verify_inner_jws` checked it)."""
        if message.account != account_url:
            raise AcmeError(problems.malformed("keyChange 'account' must be the signing account"))
        if message.old_key.thumbprint() != account.key_thumbprint:
            raise AcmeError(problems.unauthorized("keyChange 'oldKey' is not the account's key"))
        await self.check_account_key(new_key)
        holder = await self._accounts.get_by_thumbprint(new_key.thumbprint())
        try:
            if holder is not None:
                raise AccountKeyInUse(holder.id)
            updated = await self._accounts.change_key(
                account.id,
                old_thumbprint=account.key_thumbprint,
                new_jwk=new_key,
                now=self._clock.now(),
            )
        except AccountKeyInUse as exc:
            raise AccountKeyConflict(exc.account_id) from None
        except AccountStateChanged:
            raise AcmeError(
                problems.unauthorized("account changed during keyChange; retry")
            ) from None
        log.info("account.key_changed", account_id=account.id)
        return updated
