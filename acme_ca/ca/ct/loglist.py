"""The CT log list, in Chrome's v3 JSON format (``log_list_schema.json``), reloadable.

Each operator has ``logs`` (RFC 6962 logs: ``url``) and ``tiled_logs`` (static-ct-api logs:
``submission_url`` for ``add-pre-chain``, ``monitoring_url`` for reads).  Each log has its
``log_id`` (SHA-256 of ``key``), its DER SubjectPublicKeyInfo ``key`` (base64), ``mmd``, one
``state`` (``pending``, ``qualified``, ``usable``, ``readonly``, ``retired``, ``rejected``,
each ``{"timestamp": ...}``) and, for temporally sharded logs, a ``temporal_interval``
(``start_inclusive`` ≤ notAfter < ``end_exclusive``).

A log whose ``log_id`` is not the hash of its ``key``, or whose key is neither ECDSA P-256 nor
RSA ≥ 2048 (RFC 6962 §2.1.4), is left out with a warning: its SCTs could not be verified.

:class:`FileLogList` re-reads the file whenever its size, mtime or inode changed, so an operator
replaces the list (atomically, e.g. ``mv``) without restarting anything; a file that does not
parse keeps the last good list in use and is reported once.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal, Protocol

import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from acme_ca.ca.ct.sct import log_id_of

log = structlog.get_logger(component="acme_ca.ca.ct.loglist")

LogApi = Literal["rfc6962", "static-ct-api"]
STATES: Final = ("pending", "qualified", "usable", "readonly", "retired", "rejected")


class LogListError(ValueError):
    """The log list cannot be read or does not follow the v3 format."""


def _time(value: Any, where: str) -> datetime:
    if not isinstance(value, str):
        raise LogListError(f"{where}: expected an RFC 3339 time string")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as e:
        raise LogListError(f"{where}: {value!r} is not an RFC 3339 time") from e
    if parsed.tzinfo is None:
        raise LogListError(f"{where}: {value!r} has no time zone")
    return parsed


def _b64(value: Any, where: str) -> bytes:
    if not isinstance(value, str):
        raise LogListError(f"{where}: expected base64")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as e:
        raise LogListError(f"{where}: not base64") from e


@dataclass(frozen=True)
class CtLog:
    """One log a precertificate may be submitted to."""

    operator: str
    description: str
    log_id: bytes
    #: DER SubjectPublicKeyInfo.
    key_der: bytes
    public_key: PublicKeyTypes
    #: Prefix of ``ct/v1/add-pre-chain``, ending in ``/``.
    submission_url: str
    api: LogApi
    #: The current state's name, or ``""`` when the list gives none.
    state: str
    mmd: int
    start_inclusive: datetime | None
    end_exclusive: datetime | None

    @property
    def name(self) -> str:
        return self.description or self.log_id_b64

    @property
    def log_id_b64(self) -> str:
        return base64.b64encode(self.log_id).decode()

    @property
    def rfc6962(self) -> bool:
        return self.api == "rfc6962"

    def covers(self, not_after: datetime) -> bool:
        """Whether the temporal interval (if any) accepts a certificate expiring ``not_after``."""
        if self.start_inclusive is not None and not_after < self.start_inclusive:
            return False
        return self.end_exclusive is None or not_after < self.end_exclusive

    def endpoint(self, call: str) -> str:
        return f"{self.submission_url}ct/v1/{call}"


@dataclass(frozen=True)
class LogList:
    logs: tuple[CtLog, ...]
    version: str = ""
    timestamp: datetime | None = None

    def by_id(self, log_id: bytes) -> CtLog | None:
        for ct_log in self.logs:
            if ct_log.log_id == log_id:
                return ct_log
        return None

    def usable_for(self, not_after: datetime) -> list[CtLog]:
        """Logs in the ``usable`` state whose temporal interval covers ``not_after``."""
        return [
            ct_log for ct_log in self.logs if ct_log.state == "usable" and ct_log.covers(not_after)
        ]

    def operators(self) -> set[str]:
        return {ct_log.operator for ct_log in self.logs}


def _check_key(key_der: bytes, where: str) -> PublicKeyTypes:
    try:
        key = serialization.load_der_public_key(key_der)
    except ValueError as e:
        raise LogListError(f"{where}: key is not a DER SubjectPublicKeyInfo") from e
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1":
        return key
    if isinstance(key, rsa.RSAPublicKey) and key.key_size >= 2048:
        return key
    raise LogListError(f"{where}: key must be ECDSA P-256 or RSA >= 2048 (RFC 6962 §2.1.4)")


def _state(raw: Any, where: str) -> str:
    if raw is None:
        return ""
    if not isinstance(raw, Mapping):
        raise LogListError(f"{where}.state: expected an object")
    names = [name for name in STATES if name in raw]
    if len(names) != 1:
        raise LogListError(f"{where}.state: expected exactly one of {', '.join(STATES)}")
    entry = raw[names[0]]
    if not isinstance(entry, Mapping):
        raise LogListError(f"{where}.state.{names[0]}: expected an object")
    _time(entry.get("timestamp"), f"{where}.state.{names[0]}.timestamp")
    return names[0]


def _url(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.startswith(("https://", "http://")):
        raise LogListError(f"{where}: expected an http(s) URL")
    return value if value.endswith("/") else value + "/"


def _parse_log(operator: str, raw: Any, api: LogApi, where: str) -> CtLog:
    if not isinstance(raw, Mapping):
        raise LogListError(f"{where}: expected an object")
    key_der = _b64(raw.get("key"), f"{where}.key")
    log_id = _b64(raw.get("log_id"), f"{where}.log_id")
    if log_id != log_id_of(key_der):
        raise LogListError(f"{where}: log_id is not the SHA-256 of key")
    public_key = _check_key(key_der, where)
    url_key = "url" if api == "rfc6962" else "submission_url"
    interval = raw.get("temporal_interval")
    start = end = None
    if interval is not None:
        if not isinstance(interval, Mapping):
            raise LogListError(f"{where}.temporal_interval: expected an object")
        start = _time(interval.get("start_inclusive"), f"{where}.temporal_interval.start")
        end = _time(interval.get("end_exclusive"), f"{where}.temporal_interval.end")
        if end <= start:
            raise LogListError(f"{where}.temporal_interval: end is not after start")
    mmd = raw.get("mmd", 0)
    if not isinstance(mmd, int):
        raise LogListError(f"{where}.mmd: expected an integer")
    description = raw.get("description", "")
    return CtLog(
        operator=operator,
        description=description if isinstance(description, str) else "",
        log_id=log_id,
        key_der=key_der,
        public_key=public_key,
        submission_url=_url(raw.get(url_key), f"{where}.{url_key}"),
        api=api,
        state=_state(raw.get("state"), where),
        mmd=mmd,
        start_inclusive=start,
        end_exclusive=end,
    )


def parse_log_list(data: bytes | str | Mapping[str, Any]) -> LogList:
    """Parse a v3 log list; a log whose entry is unusable is skipped with a warning."""
    if isinstance(data, bytes | str):
        try:
            data = json.loads(data)
        except ValueError as e:
            raise LogListError(f"log list is not JSON: {e}") from e
    if not isinstance(data, Mapping) or not isinstance(data.get("operators"), list):
        raise LogListError("log list has no operators array")
    logs: list[CtLog] = []
    seen: set[bytes] = set()
    for i, operator in enumerate(data["operators"]):
        if not isinstance(operator, Mapping) or not isinstance(operator.get("name"), str):
            raise LogListError(f"operators[{i}]: expected an object with a name")
        name = operator["name"]
        kinds: Iterable[tuple[str, LogApi]] = (("logs", "rfc6962"), ("tiled_logs", "static-ct-api"))
        for field, api in kinds:
            entries = operator.get(field, [])
            if not isinstance(entries, list):
                raise LogListError(f"operators[{i}].{field}: expected an array")
            for j, raw in enumerate(entries):
                where = f"operators[{i}].{field}[{j}]"
                try:
                    ct_log = _parse_log(name, raw, api, where)
                except LogListError as e:
                    log.warning("ct.log_list_entry_skipped", error=str(e))
                    continue
                if ct_log.log_id in seen:
                    log.warning("ct.log_list_duplicate_log", log=ct_log.name, where=where)
                    continue
                seen.add(ct_log.log_id)
                logs.append(ct_log)
    version = data.get("version", "")
    stamp = data.get("log_list_timestamp")
    return LogList(
        tuple(logs),
        version=version if isinstance(version, str) else "",
        timestamp=_time(stamp, "log_list_timestamp") if stamp is not None else None,
    )


class LogListSource(Protocol):
    def current(self) -> LogList:
        """The log list to use now (raises :class:`LogListError` when there is none)."""
        ...


class StaticLogList:
    """A log list held in memory (the in-process test logs, tests)."""

    def __init__(self, log_list: LogList) -> None:
        self._list = log_list

    def current(self) -> LogList:
        return self._list

    def replace(self, log_list: LogList) -> None:
        self._list = log_list


class FileLogList:
    """The log list file, re-read when it changes (no restart needed)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._list: LogList | None = None
        self._reported: tuple[int, int, int] | None = None

    def current(self) -> LogList:
        with self._lock:
            try:
                st = os.stat(self.path)
            except OSError as e:
                if self._list is not None:
                    return self._list
                raise LogListError(f"cannot read the CT log list {self.path}: {e}") from e
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
            if stamp != self._stamp:
                try:
                    parsed = parse_log_list(self.path.read_bytes())
                except (OSError, LogListError) as e:
                    if self._reported != stamp:
                        self._reported = stamp
                        log.warning(
                            "ct.log_list_invalid",
                            path=str(self.path),
                            error=str(e),
                            keeps_previous=self._list is not None,
                        )
                    if self._list is None:
                        raise LogListError(f"CT log list {self.path}: {e}") from e
                    return self._list
                first = self._list is None
                self._list, self._stamp = parsed, stamp
                log.info(
                    "ct.log_list_loaded" if first else "ct.log_list_reloaded",
                    path=str(self.path),
                    logs=len(parsed.logs),
                    usable=sum(1 for x in parsed.logs if x.state == "usable"),
                    operators=len(parsed.operators()),
                    version=parsed.version,
                )
            assert self._list is not None
            return self._list


def openssl_ctlog_config(log_list: LogList) -> str:
    """The log list as an OpenSSL CT log store file (``openssl s_client -ct -ctlogfile``,
    ``CTLOG_STORE_load_file``): ``enabled_logs`` then one section per log with its
    description and base64 DER key."""
    sections = []
    names = []
    for i, ct_log in enumerate(log_list.logs):
        name = f"log{i}"
        names.append(name)
        description = (ct_log.name or name).replace("\n", " ")
        sections.append(
            f"[{name}]\ndescription = {description}\n"
            f"key = {base64.b64encode(ct_log.key_der).decode()}\n"
        )
    return f"enabled_logs = {','.join(names)}\n\n" + "\n".join(sections)
