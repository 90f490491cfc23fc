"""Accounts by ``kid``, kept per front-end process so most requests read no account row.

Never trusted on its own: every cached account comes with the row version it was read at
(PostgreSQL's ``xmin``, new on every UPDATE of the row, whoever makes it), and
``verify_post`` gets the account's current version back from the same statement that
redeems the nonce. A version that moved (deactivation, key change, contact change, another
process or an operator's SQL) sends the request through a fresh read and every check again,
so a request is accepted only for the account as it stands when its nonce is consumed, as
it was before the cache. Bounded in size, and an entry lives at most ``ttl`` seconds (a
transaction id repeats only after 2^32 transactions).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

from acme_ca.db.accounts import Account

#: Entries kept per process (an account is a few hundred bytes).
DEFAULT_MAX_ENTRIES = 50_000
#: Longest an entry is used before it is read again.
DEFAULT_TTL_SECONDS = 3600.0


@dataclass(frozen=True)
class CachedAccount:
    account: Account
    #: The row version (``xmin``) the account was read at.
    version: str
    read_at: float


class AccountCache:
    """A bounded map from account id to :class:`CachedAccount`, least recently used out."""

    def __init__(
        self, max_entries: int = DEFAULT_MAX_ENTRIES, ttl: float = DEFAULT_TTL_SECONDS
    ) -> None:
        self._entries: OrderedDict[int, CachedAccount] = OrderedDict()
        self._max_entries = max_entries
        self._ttl = ttl

    def get(self, account_id: int) -> CachedAccount | None:
        entry = self._entries.get(account_id)
        if entry is None:
            return None
        if time.monotonic() - entry.read_at > self._ttl:
            del self._entries[account_id]
            return None
        self._entries.move_to_end(account_id)
        return entry

    def put(self, account: Account, version: str) -> CachedAccount:
        entry = CachedAccount(account, version, time.monotonic())
        self._entries[account.id] = entry
        self._entries.move_to_end(account.id)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
        return entry

    def drop(self, account_id: int) -> None:
        self._entries.pop(account_id, None)

    def __len__(self) -> int:
        return len(self._entries)
