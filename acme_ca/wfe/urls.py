"""Every path the front end serves, and the one place absolute URLs are built.

URLs come from the configured base URL, never from the request's Host header, so a client
cannot make the CA hand out, or accept signatures for, URLs of its choosing.
"""

from __future__ import annotations

DIRECTORY = "/directory"
NEW_NONCE = "/acme/new-nonce"
NEW_ACCOUNT = "/acme/new-account"
NEW_ORDER = "/acme/new-order"
REVOKE_CERT = "/acme/revoke-cert"
KEY_CHANGE = "/acme/key-change"
ACCOUNT = "/acme/acct/{account_id:[0-9]{1,18}}"
ACCOUNT_ORDERS = "/acme/acct/{account_id:[0-9]{1,18}}/orders"
ORDER = "/acme/order/{order_id:[0-9]{1,18}}"
FINALIZE = "/acme/order/{order_id:[0-9]{1,18}}/finalize"
AUTHZ = "/acme/authz/{authz_id:[0-9]{1,18}}"
CHALLENGE = "/acme/chall/{challenge_id:[0-9]{1,18}}"
CERTIFICATE = "/acme/cert/{certificate_id:[0-9]{1,18}}"
CERTIFICATE_ALTERNATE = "/acme/cert/{certificate_id:[0-9]{1,18}}/alt/{alt:[0-9]{1,2}}"
CERTIFICATE_ISSUER = "/acme/cert/{certificate_id:[0-9]{1,18}}/issuer"
#: ARI (RFC 9773 §4.1): the directory's renewalInfo URL, and the per-certificate resource.
RENEWAL_INFO_BASE = "/acme/renewal-info"
RENEWAL_INFO = "/acme/renewal-info/{cert_id}"

ACCOUNT_PREFIX = "/acme/acct/"


class Urls:
    """Absolute URLs under one base URL."""

    def __init__(self, base_url: str) -> None:
        self.base = base_url.rstrip("/")

    def absolute(self, path: str) -> str:
        return self.base + path

    def account(self, account_id: int) -> str:
        return f"{self.base}{ACCOUNT_PREFIX}{account_id}"

    def account_orders(self, account_id: int, cursor: int | None = None) -> str:
        url = f"{self.base}{ACCOUNT_PREFIX}{account_id}/orders"
        return url if cursor is None else f"{url}?cursor={cursor}"

    def order(self, order_id: int) -> str:
        return f"{self.base}/acme/order/{order_id}"

    def finalize(self, order_id: int) -> str:
        return f"{self.base}/acme/order/{order_id}/finalize"

    def authz(self, authz_id: int) -> str:
        return f"{self.base}/acme/authz/{authz_id}"

    def challenge(self, challenge_id: int) -> str:
        return f"{self.base}/acme/chall/{challenge_id}"

    def certificate(self, certificate_id: int) -> str:
        return f"{self.base}/acme/cert/{certificate_id}"

    def certificate_alternate(self, certificate_id: int, n: int) -> str:
        return f"{self.base}/acme/cert/{certificate_id}/alt/{n}"

    def certificate_issuer(self, certificate_id: int) -> str:
        return f"{self.base}/acme/cert/{certificate_id}/issuer"

    def account_id_from_kid(self, kid: str) -> int | None:
        """The account id if ``kid`` is exactly one of our account URLs, else None."""
        prefix = self.base + ACCOUNT_PREFIX
        if not kid.startswith(prefix):
            return None
        tail = kid[len(prefix) :]
        if not tail.isdigit() or tail.startswith("0") or len(tail) > 18:
            return None
        return int(tail)
