"""The remote perspectives the primary asks (``mpic_perspectives_file``) and the start-up refusals.

The file is TOML::

    [primary]                       # where this CA's own (primary) VA and its resolver run
    latitude = 35.68
    longitude = 139.69
    resolver_latitude = 35.68       # optional: default the primary's location
    resolver_longitude = 139.69

    [[perspectives]]
    id = "us-east"                  # a DNS label; the remote's TLS certificate names it
    rir = "ARIN"                    # ARIN, RIPE NCC (or RIPE), APNIC, LACNIC, AFRINIC
    url = "https://va-us-east.example.net:14443"
    latitude = 39.04
    longitude = -77.49
    resolver_latitude = 39.04       # optional: default the perspective's location
    resolver_longitude = -77.49

What the CA refuses to start with (BR 3.2.2.9, BR-MPIC-2/4), as :class:`MpicConfigError`:

* in every mode: an unknown RIR, a duplicate or malformed id, a non-https URL, a file that
  lists no perspective, two perspectives (or two resolvers, the primary's included) closer
  than 500 km, a perspective closer than 500 km to the primary, missing mutual-TLS material;
* in production (not test mode and ``dnssec = "require"``): fewer remotes than the date of
  start-up requires, remotes that cannot span the RIRs the date requires, no ``[primary]``.

When is corroboration skipped?  Only when no remote is configured at all: no perspectives
file (the embedded defaults), or test mode without ``--perspectives``.  That is logged as a
warning at start-up and announced in the directory's ``meta``.  A test configuration (test
mode or ``dnssec = "off"``) with remotes corroborates with the same quorum and RIR rules but
without the date's minimum number of remotes (see :func:`acme_ca.va.quorum.rule_for`).
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import combinations
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from acme_ca.config.base import ConfigError
from acme_ca.va.quorum import Remote, UnknownRir, canonical_rir, phase_for
from acme_ca.va.records import PRIMARY_PERSPECTIVE
from acme_ca.va.settings import MpicSettings

MIN_DISTANCE_KM: Final = 500.0
"""BR 3.2.2.9: perspectives (and their resolvers) at least this far apart and from the primary."""
EARTH_RADIUS_KM: Final = 6371.0088
"""The mean Earth radius (IUGG), for the haversine distance."""
MAX_TEST_PERSPECTIVES: Final = 16

_ID_RE: Final = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", re.ASCII)


class MpicConfigError(ConfigError):
    """A multi-perspective configuration the CA refuses to start with; the message says why."""


@dataclass(frozen=True)
class Location:
    """A point on Earth in decimal degrees."""

    latitude: float
    longitude: float

    def __post_init__(self) -> None:
        if not (-90.0 <= self.latitude <= 90.0 and -180.0 <= self.longitude <= 180.0):
            raise ValueError(f"({self.latitude}, {self.longitude}) is not a latitude/longitude")


def haversine_km(a: Location, b: Location) -> float:
    """Great-circle distance between two points, in kilometres."""
    lat1, lat2 = math.radians(a.latitude), math.radians(b.latitude)
    dlat = lat2 - lat1
    dlon = math.radians(b.longitude - a.longitude)
    h = math.sin(dlat / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin(dlon / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def valid_perspective_id(text: str) -> bool:
    """A lowercase DNS label (the remote's certificate names it) and not ``primary``."""
    return _ID_RE.fullmatch(text) is not None and text != PRIMARY_PERSPECTIVE


@dataclass(frozen=True)
class Perspective:
    """One remote VA: where to reach it, who it is, where it and its resolver are."""

    id: str
    rir: str
    url: str
    location: Location | None = None
    resolver: Location | None = None
    """None only for the in-process perspectives of ``serve --test --perspectives N``."""

    @property
    def remote(self) -> Remote:
        return Remote(self.id, self.rir)


@dataclass(frozen=True)
class PrimarySite:
    location: Location
    resolver: Location


@dataclass(frozen=True)
class MpicSetup:
    """Everything the primary needs to corroborate, checked once at start-up.

    ``perspectives`` empty means corroboration is skipped, and ``skip_reason`` says why;
    ``local_test_perspectives`` is N of ``serve --test --perspectives N`` before they run.
    """

    perspectives: tuple[Perspective, ...]
    strict: bool
    source: str
    client_cert: Path | None = None
    client_key: Path | None = None
    server_ca: Path | None = None
    timeout_seconds: float = 10.0
    #: Once decided, how long replies already on their way may still arrive, so the record
    #: is as complete as promptness allows (five prompt remotes read "5/5", not "4/5"):
    #: ``mpic_grace_milliseconds``.
    grace_seconds: float = 0.25
    primary: PrimarySite | None = None
    skip_reason: str | None = None
    local_test_perspectives: int = 0

    @property
    def remotes(self) -> tuple[Remote, ...]:
        return tuple(p.remote for p in self.perspectives)


def distance_violations(
    perspectives: Sequence[Perspective], primary: PrimarySite | None
) -> list[str]:
    """Every pair closer than :data:`MIN_DISTANCE_KM`: perspective/perspective,
    perspective/primary, resolver/resolver (the primary's resolver included).  Perspectives
    without a location (in-process test ones) are not compared."""
    problems: list[str] = []

    def check(what: str, a_name: str, a: Location, b_name: str, b: Location) -> None:
        km = haversine_km(a, b)
        if km < MIN_DISTANCE_KM:
            problems.append(
                f"{what} {a_name} and {b_name} are {km:.0f} km apart; BR 3.2.2.9 requires at "
                f"least {MIN_DISTANCE_KM:.0f} km"
            )

    located = [p for p in perspectives if p.location is not None]
    for a, b in combinations(located, 2):
        assert a.location is not None and b.location is not None
        check("perspectives", a.id, a.location, b.id, b.location)
    if primary is not None:
        for p in located:
            assert p.location is not None
            check("perspective", p.id, p.location, "the primary", primary.location)
    resolvers = [(f"of {p.id}", p.resolver) for p in located if p.resolver is not None]
    if primary is not None:
        resolvers.append(("of the primary", primary.resolver))
    for (a_name, a_loc), (b_name, b_loc) in combinations(resolvers, 2):
        assert a_loc is not None and b_loc is not None
        check("resolvers", a_name, a_loc, b_name, b_loc)
    return problems


def _number(table: Mapping[str, Any], key: str, where: str) -> float:
    value = table.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MpicConfigError(f"{where}: {key} must be a number")
    return float(value)


def _location(table: Mapping[str, Any], where: str, prefix: str = "") -> Location:
    try:
        return Location(
            _number(table, f"{prefix}latitude", where), _number(table, f"{prefix}longitude", where)
        )
    except ValueError as exc:
        raise MpicConfigError(f"{where}: {exc}") from None


def _optional_location(table: Mapping[str, Any], where: str, default: Location) -> Location:
    if "resolver_latitude" not in table and "resolver_longitude" not in table:
        return default
    return _location(table, where, "resolver_")


def parse_perspectives(
    data: Mapping[str, Any], source: str
) -> tuple[PrimarySite | None, tuple[Perspective, ...]]:
    """The ``[primary]`` site and the ``[[perspectives]]`` of a parsed file (shape checks only)."""
    unknown = set(data) - {"primary", "perspectives"}
    if unknown:
        raise MpicConfigError(f"{source}: unknown key(s) {', '.join(sorted(unknown))}")
    primary: PrimarySite | None = None
    if "primary" in data:
        table = data["primary"]
        if not isinstance(table, dict):
            raise MpicConfigError(f"{source}: [primary] must be a table")
        where = f"{source} [primary]"
        location = _location(table, where)
        primary = PrimarySite(location, _optional_location(table, where, location))
    entries = data.get("perspectives", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise MpicConfigError(f"{source}: perspectives must be an array of tables")
    perspectives: list[Perspective] = []
    for index, entry in enumerate(entries, start=1):
        where = f"{source} perspective #{index}"
        pid, rir, url = entry.get("id"), entry.get("rir"), entry.get("url")
        if not isinstance(pid, str) or not valid_perspective_id(pid):
            raise MpicConfigError(
                f"{where}: id {pid!r} must be a lowercase DNS label other than 'primary'"
            )
        where = f"{source} perspective {pid!r}"
        if not isinstance(rir, str):
            raise MpicConfigError(f"{where}: rir is required")
        try:
            rir = canonical_rir(rir)
        except UnknownRir as exc:
            raise MpicConfigError(f"{where}: {exc}") from None
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme != "https" or not parts.hostname:
            raise MpicConfigError(
                f"{where}: url {url!r} must be an https:// URL (BR 3.2.2.9: the channel to a "
                "remote perspective is authenticated and encrypted)"
            )
        location = _location(entry, where)
        perspectives.append(
            Perspective(
                id=pid,
                rir=rir,
                url=str(url).rstrip("/"),
                location=location,
                resolver=_optional_location(entry, where, location),
            )
        )
    return primary, tuple(perspectives)


def phase_violations(perspectives: Sequence[Perspective], at: datetime) -> list[str]:
    """What the BR 3.2.2.9 phase in force at ``at`` asks of the configured remotes and they
    lack: the minimum number, the RIR span.  Date-dependent, so the signing worker asks it
    again at every signing (:func:`acme_ca.deployment.signing_guard`)."""
    phase = phase_for(at)
    if not phase.enforced:
        return []
    problems: list[str] = []
    count = len(perspectives)
    if count < phase.min_remotes:
        problems.append(
            f"{count} remote perspective(s) configured; BR 3.2.2.9 requires at least "
            f"{phase.min_remotes} from {phase.label}"
        )
    rirs = {p.rir for p in perspectives}
    if len(rirs) < phase.min_rirs:
        problems.append(
            f"the remote perspectives span {len(rirs)} RIR(s) ({', '.join(sorted(rirs))}); "
            f"corroboration needs {phase.min_rirs} distinct RIRs from {phase.label}"
        )
    return problems


def check_setup(setup: MpicSetup, at: datetime) -> None:
    """Every refusal for ``setup`` at start-up time ``at``, joined into one error."""
    problems: list[str] = []
    ids = [p.id for p in setup.perspectives]
    for pid in sorted({i for i in ids if ids.count(i) > 1}):
        problems.append(f"perspective id {pid!r} appears more than once")
    urls = [p.url for p in setup.perspectives]
    for url in sorted({u for u in urls if urls.count(u) > 1}):
        problems.append(f"url {url} appears more than once")
    problems.extend(distance_violations(setup.perspectives, setup.primary))
    if setup.strict:
        problems.extend(phase_violations(setup.perspectives, at))
        if setup.primary is None:
            problems.append(
                "no [primary] location: the remotes cannot be shown to be 500 km from the primary"
            )
    for name, path in (
        ("mpic_client_cert", setup.client_cert),
        ("mpic_client_key", setup.client_key),
        ("mpic_server_ca", setup.server_ca),
    ):
        if path is None:
            problems.append(
                f"{name} is not set: remote perspectives are reached over mutual TLS only "
                "(acme-ca mpic-certs creates the material)"
            )
        elif not path.is_file():
            problems.append(f"{name}: {path} is not a readable file")
    if setup.timeout_seconds <= 0:
        problems.append("mpic_timeout_seconds must be positive")
    if problems:
        raise MpicConfigError(f"{setup.source}: " + "; ".join(problems))


def load_mpic_setup(
    settings: MpicSettings, at: datetime, *, strict: bool | None = None
) -> MpicSetup:
    """Read and check the multi-perspective configuration; raises :class:`MpicConfigError`.

    Called at start-up (before anything else is started), so a configuration the BRs do not
    allow never serves a request.  ``strict`` defaults to ``settings.strict``; the production
    invariants (:mod:`acme_ca.deployment`) pass True to judge any configuration as production.
    """
    strict = settings.strict if strict is None else strict
    if settings.test_perspectives:
        if not settings.test_mode:
            raise MpicConfigError("test_perspectives (--perspectives N) needs test mode (--test)")
        if settings.perspectives_file is not None:
            raise MpicConfigError(
                "use either test_perspectives (--perspectives N) or mpic_perspectives_file"
            )
        if not 1 <= settings.test_perspectives <= MAX_TEST_PERSPECTIVES:
            raise MpicConfigError(f"test_perspectives must be 1..{MAX_TEST_PERSPECTIVES}")
        return MpicSetup(
            perspectives=(),
            strict=False,
            source=f"serve --test --perspectives {settings.test_perspectives}",
            timeout_seconds=float(settings.timeout_seconds),
            grace_seconds=settings.grace_milliseconds / 1000,
            local_test_perspectives=settings.test_perspectives,
        )
    path = settings.perspectives_file
    if path is None:
        reason = (
            "test mode without --perspectives"
            if settings.test_mode
            else "no mpic_perspectives_file configured"
        )
        return MpicSetup(perspectives=(), strict=strict, source="-", skip_reason=reason)
    source = str(path)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise MpicConfigError(f"cannot read mpic_perspectives_file {path}: {exc}") from None
    primary, perspectives = parse_perspectives(data, source)
    if not perspectives:
        raise MpicConfigError(
            f"{source}: lists no [[perspectives]]; remove mpic_perspectives_file to run "
            "without corroboration (never in production)"
        )
    setup = MpicSetup(
        perspectives=perspectives,
        strict=strict,
        source=source,
        client_cert=settings.client_cert,
        client_key=settings.client_key,
        server_ca=settings.server_ca,
        timeout_seconds=float(settings.timeout_seconds),
        grace_seconds=settings.grace_milliseconds / 1000,
        primary=primary,
    )
    check_setup(setup, at)
    return setup
