"""Order policy (RFC 8555 §7.4, §7.5): identifiers, authorization reuse, challenges offered.

What an order contains is decided here and stored in one transaction; its status moves only
by the events of :data:`acme_ca.acme.states.ORDERS`, and a read derives it without writing.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from cryptography import x509

from acme_ca.acme import ari, problems
from acme_ca.acme.b64 import b64url_encode
from acme_ca.acme.messages import NewOrder
from acme_ca.acme.problems import AcmeError, Identifier
from acme_ca.acme.states import order_status
from acme_ca.acme.status import OrderStatus
from acme_ca.br import MAX_TOKEN_LIFETIME, METHOD_REUSE_CAPS, max_dcv_reuse
from acme_ca.clock import Clock
from acme_ca.db.accounts import Account
from acme_ca.db.authorizations import NewAuthorization
from acme_ca.db.order_events import Order
from acme_ca.db.orders import OrderRepository
from acme_ca.db.replacements import AlreadyReplaced, Replacement
from acme_ca.profiles import Profile
from acme_ca.ra.identifiers import IdentifierPolicy, base_domain, is_wildcard
from acme_ca.ra.profiles import AccountGate, ProfileCatalog, profile_challenges
from acme_ca.ra.ratelimits import RateLimiter
from acme_ca.va.registry import DEFAULT_METHODS, EnabledMethods

log = structlog.get_logger(component="acme_ca.ra.orders")

#: Challenge types whose valid authorizations a new order never reuses.  dns-persist-01:
#: the draft makes the TXT record's TTL the reuse period when it is shorter
#: (draft-ietf-acme-dns-persist, "Validation Data Reuse and TTL Handling"), which is seconds
#: to minutes in practice and only the answering resolver knows; so, as Boulder does, each
#: order validates again (the record is still there: one lookup, nothing for the client to
#: publish).  BR 3.2.2.4.22's 10 days still bound the authorization itself and the
#: signing-time recheck (METHOD_REUSE_CAPS).
NOT_REUSED_BY_NEW_ORDERS = ("dns-persist-01",)
_NEVER = datetime.max.replace(tzinfo=UTC)

#: 256 bits of CSPRNG per token (ACME-CHAL-4 asks for at least 128).
TOKEN_BYTES = 32


@dataclass(frozen=True)
class OrderPolicy:
    """Lifetimes and reuse, validated against the BRs at construction."""

    order_lifetime: timedelta = timedelta(days=7)
    pending_authz_lifetime: timedelta = timedelta(days=7)
    authz_reuse: timedelta = timedelta(days=30)
    #: Test-mode knob (PEBBLE_AUTHZREUSE): the share of lookups allowed to reuse.
    authz_reuse_percent: int = 100

    def __post_init__(self) -> None:
        if self.pending_authz_lifetime > MAX_TOKEN_LIFETIME:
            raise ValueError("pending authorizations may live at most 30 days (BR 3.2.2.4)")
        if min(self.order_lifetime, self.pending_authz_lifetime, self.authz_reuse) <= timedelta():
            raise ValueError("lifetimes must be positive")


def new_token() -> str:
    return b64url_encode(secrets.token_bytes(TOKEN_BYTES))


class OrderAuthority:
    def __init__(
        self,
        orders: OrderRepository,
        identifiers: IdentifierPolicy,
        policy: OrderPolicy,
        clock: Clock,
        methods: EnabledMethods | None = None,
        *,
        profiles: ProfileCatalog,
        account_gate: AccountGate,
        limits: RateLimiter | None = None,
    ) -> None:
        """``methods``: the challenge types offered (``challenge_types``); ``profiles``: the
        profiles on offer; ``account_gate``: who may use an organization profile; ``limits``:
        the rate limits (None: none)."""
        self._orders = orders
        self._identifiers = identifiers
        self._policy = policy
        self._clock = clock
        self._methods = methods or DEFAULT_METHODS
        self.profiles = profiles
        self._account_gate = account_gate
        self._limits = limits

    def _may_reuse(self) -> bool:
        percent = self._policy.authz_reuse_percent
        return percent >= 100 or secrets.randbelow(100) < percent

    def reuse_period(self, profile: Profile | None = None) -> timedelta:
        """The configured reuse period (the profile's, when given), never above the BR limit
        for today (BR 4.2.1)."""
        configured = self._policy.authz_reuse if profile is None else profile.authz_reuse
        return min(configured, max_dcv_reuse(self._clock.now()))

    async def new_order(self, account: Account, message: NewOrder) -> Order:
        validity = (("notBefore", message.not_before), ("notAfter", message.not_after))
        for field_name, value in validity:
            if value is not None:
                raise AcmeError(
                    problems.malformed(
                        f"{field_name} is not supported; validity follows the CA's profile"
                    )
                )
        profile = self.profiles.requested(message.profile)
        await self._account_gate.check(profile, account.id)
        identifiers = self._identifiers.check_order(message.identifiers)
        replaces = await self._replacement(account, identifiers, message.replaces)
        if self._limits is not None:  # after the checks that need no write
            await self._limits.new_order(account.id)

        now = self._clock.now()
        reuse_from = now - self.reuse_period(profile)
        reuse: list[int | None] = []
        new: list[NewAuthorization | None] = []
        for ident in identifiers:
            wildcard = is_wildcard(ident.value)
            name = base_domain(ident.value)
            existing = None
            # A profile that restricts the challenge types reuses nothing: an existing
            # authorization may have been (or may yet be) validated by another type.
            if self._may_reuse() and profile.challenges is None:
                existing = await self._orders.reusable_authorization(
                    account.id,
                    name,
                    wildcard,
                    now=now,
                    valid_not_before=reuse_from,
                    min_remaining=timedelta(minutes=5),
                    method_not_before={
                        **{
                            method: now - min(self.reuse_period(), cap)
                            for method, cap in METHOD_REUSE_CAPS.items()
                        },
                        **{method: _NEVER for method in NOT_REUSED_BY_NEW_ORDERS},
                    },
                )
            reuse.append(existing)
            if existing is not None:
                new.append(None)
                continue
            offered = self._methods.offered(wildcard)
            kinds = profile_challenges(profile, offered)
            if not kinds:
                raise AcmeError(
                    problems.rejected_identifier(
                        f"{ident.value}: no enabled validation method can validate a "
                        "Wildcard Domain Name (BR 3.2.2.4)"
                        if not offered
                        else f"{ident.value}: the {profile.name} profile allows only "
                        f"{', '.join(profile.challenges or ())}, which cannot validate it"
                    )
                )
            new.append(
                NewAuthorization(
                    identifier=name,
                    wildcard=wildcard,
                    expires_at=now + self._policy.pending_authz_lifetime,
                    challenges=tuple((kind, new_token()) for kind in kinds),
                )
            )
        try:
            order = await self._orders.create_order(
                account_id=account.id,
                identifiers=identifiers,
                expires_at=now + self._policy.order_lifetime,
                reuse=reuse,
                new_authzs=new,
                now=now,
                replaces=replaces,
                profile=profile.name,
            )
        except AlreadyReplaced as exc:
            raise AcmeError(
                problems.already_replaced(
                    "the certificate named in replaces is already being replaced by another "
                    "order (RFC 9773 §5)"
                )
            ) from exc
        log.info(
            "order.created",
            account_id=account.id,
            order_id=order.id,
            status=order.status,
            identifiers=[i.value for i in identifiers],
            reused_authzs=sum(1 for r in reuse if r),
            replaces=replaces.cert_id if replaces else None,
            profile=profile.name,
        )
        return order

    async def _replacement(
        self, account: Account, identifiers: tuple[Identifier, ...], raw: str | None
    ) -> Replacement | None:
        """Check newOrder's ``replaces`` (RFC 9773 §5, ARI-5): a well-formed certID of a
        certificate we issued to this account, sharing at least one identifier with the order.
        Whether another order already replaces it is settled when the order is stored."""
        if raw is None:
            return None
        try:
            wanted = ari.parse_cert_id(raw)
        except ari.CertIdError as exc:
            raise AcmeError(problems.malformed(f"replaces is not a valid certID: {exc}")) from None
        record = await self._orders.certificate_by_serial(wanted.serial_hex)
        if record is None or not ari.matches(record.der, wanted):
            raise AcmeError(problems.malformed("replaces names no certificate issued by this CA"))
        if record.account_id != account.id:
            raise AcmeError(
                problems.unauthorized(
                    "the certificate named in replaces was not issued to this account"
                )
            )
        cert = x509.load_der_x509_certificate(record.der)
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            names = {n.lower() for n in san.get_values_for_type(x509.DNSName)}
        except x509.ExtensionNotFound:
            names = set()
        if not names & {i.value for i in identifiers}:
            raise AcmeError(
                problems.malformed(
                    "the order shares no identifier with the certificate named in replaces"
                )
            )
        return Replacement(cert_id=raw, certificate_id=record.id, account_id=account.id)

    async def finalize_profile(self, account: Account, order: Order) -> Profile:
        """The order's profile at finalize: still offered (``invalidProfile`` if withdrawn
        since, PROF-2) and still usable by the account (an organization revoked since
        newOrder stops OV issuance)."""
        profile = self.profiles.for_finalize(order.profile)
        await self._account_gate.check(profile, account.id)
        return profile

    def current_status(self, order: Order) -> OrderStatus:
        """The order's status now (expired, or moved by its authorizations); writes nothing."""
        return order_status(order.status, order.expires_at, order.authz_states, self._clock.now())
