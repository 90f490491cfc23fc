"""Multi-perspective corroboration rules (BR 3.2.2.9; BR-MPIC-1..4): the date table, the
quorum, the RIR rule, distances and the start-up refusals -- pure functions, table-tested."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from acme_ca.config import Config
from acme_ca.va.perspectives import (
    Location,
    MpicConfigError,
    Perspective,
    PrimarySite,
    distance_violations,
    haversine_km,
    load_mpic_setup,
    valid_perspective_id,
)
from acme_ca.va.quorum import (
    RIRS,
    Remote,
    UnknownRir,
    Verdict,
    allowed_non_corroborations,
    canonical_rir,
    decide,
    phase_for,
    rule_for,
)
from acme_ca.va.settings import MpicSettings


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


# ------------------------------------------------------------------------------ the date table


@pytest.mark.parametrize(
    ("at", "min_remotes", "enforced", "min_rirs"),
    [
        (utc(2024, 1, 1), 0, False, 1),
        (utc(2025, 3, 14, 23, 59, 59), 0, False, 1),
        (utc(2025, 3, 15), 2, False, 1),
        (utc(2025, 9, 14, 23, 59, 59), 2, False, 1),
        (utc(2025, 9, 15), 2, True, 1),
        (utc(2026, 3, 14, 23, 59, 59), 2, True, 1),
        (utc(2026, 3, 15), 3, True, 2),
        (utc(2026, 6, 14, 23, 59, 59), 3, True, 2),
        (utc(2026, 6, 15), 4, True, 2),
        (utc(2026, 12, 14, 23, 59, 59), 4, True, 2),
        (utc(2026, 12, 15), 5, True, 2),
        (utc(2030, 1, 1), 5, True, 2),
    ],
    ids=lambda v: v.isoformat() if isinstance(v, datetime) else str(v),
)
def test_br_mpic_2_phase_by_date(
    at: datetime, min_remotes: int, enforced: bool, min_rirs: int
) -> None:
    phase = phase_for(at)
    assert (phase.min_remotes, phase.enforced, phase.min_rirs) == (min_remotes, enforced, min_rirs)


@pytest.mark.parametrize(
    ("remotes", "allowed"),
    [(0, 0), (1, 0), (2, 1), (3, 1), (4, 1), (5, 1), (6, 2), (7, 2), (12, 2)],
)
def test_br_mpic_3_allowed_non_corroborations(remotes: int, allowed: int) -> None:
    assert allowed_non_corroborations(remotes) == allowed


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("ARIN", "ARIN"),
        ("arin", "ARIN"),
        ("RIPE NCC", "RIPE NCC"),
        ("ripe", "RIPE NCC"),
        ("RIPE-NCC", "RIPE NCC"),
        ("  ripe   ncc ", "RIPE NCC"),
        ("APNIC", "APNIC"),
        ("LACNIC", "LACNIC"),
        ("AfriNIC", "AFRINIC"),
    ],
)
def test_rir_names(name: str, canonical: str) -> None:
    assert canonical_rir(name) == canonical


@pytest.mark.parametrize("name", ["", "IANA", "RIPE NCCC", "NIC", "ARIN2"])
def test_unknown_rir(name: str) -> None:
    with pytest.raises(UnknownRir):
        canonical_rir(name)


# ------------------------------------------------------------------------------ the quorum

# Five remotes, four ARIN and one RIPE NCC (the integration test's layout), and a spread set.
ONE_RIPE = [
    Remote("a1", "ARIN"),
    Remote("a2", "ARIN"),
    Remote("a3", "ARIN"),
    Remote("a4", "ARIN"),
    Remote("r1", "RIPE NCC"),
]
SPREAD = [Remote(f"p{i}", RIRS[i % 3]) for i in range(6)]
DEC_2026 = utc(2026, 12, 20)
JUL_2026 = utc(2026, 7, 1)


def res(remotes: list[Remote], ok: str) -> dict[str, bool]:
    """``ok`` spells each remote's result in order: y corroborated, n not, . pending."""
    return {r.id: c == "y" for r, c in zip(remotes, ok, strict=True) if c != "."}


@pytest.mark.parametrize(
    ("at", "remotes", "results", "verdict", "quorum"),
    [
        # all five agree
        (DEC_2026, ONE_RIPE, "yyyyy", Verdict.PASS, "5/5"),
        # one non-corroboration is allowed with 2-5 remotes
        (DEC_2026, ONE_RIPE, "nyyyy", Verdict.PASS, "4/5"),
        # two are not
        (DEC_2026, ONE_RIPE, "nnyyy", Verdict.FAIL, "3/5"),
        # the passing remotes all in one RIR: the RIR rule fails
        (DEC_2026, ONE_RIPE, "yyyyn", Verdict.FAIL, "4/5"),
        # decided early: four corroborate across two RIRs, the fifth is not needed
        (DEC_2026, ONE_RIPE, "yyy.y", Verdict.PASS, "4/5"),
        # four ARIN corroborate, the only RIPE remote pending: undecided (it may still fail)
        (DEC_2026, ONE_RIPE, "yyyy.", Verdict.UNDECIDED, "4/5"),
        # decided early: two non-corroborations are already too many
        (DEC_2026, ONE_RIPE, "nn...", Verdict.FAIL, "0/5"),
        # nothing yet
        (DEC_2026, ONE_RIPE, ".....", Verdict.UNDECIDED, "0/5"),
        # too few remotes for the date: failed before anyone is asked
        (DEC_2026, ONE_RIPE[1:], "....", Verdict.FAIL, "0/4"),
        (JUL_2026, ONE_RIPE[1:], "yyyy", Verdict.PASS, "4/4"),
        # six remotes tolerate two non-corroborations, not three
        (DEC_2026, SPREAD, "nnyyyy", Verdict.PASS, "4/6"),
        (DEC_2026, SPREAD, "nnnyyy", Verdict.FAIL, "3/6"),
        (DEC_2026, SPREAD, "nyyyy.", Verdict.PASS, "4/6"),
        # before the RIR rule (2025-10): two ARIN remotes suffice
        (utc(2025, 10, 1), ONE_RIPE[:2], "yy", Verdict.PASS, "2/2"),
        (utc(2025, 10, 1), ONE_RIPE[:2], "yn", Verdict.PASS, "1/2"),
        (utc(2025, 10, 1), ONE_RIPE[:2], "nn", Verdict.FAIL, "0/2"),
    ],
    ids=[
        "all-agree",
        "one-disagrees",
        "two-disagree",
        "one-rir",
        "early-pass",
        "wait-for-rir",
        "early-fail",
        "nothing-yet",
        "too-few-dec",
        "four-in-july",
        "six-two-bad",
        "six-three-bad",
        "six-early",
        "2025-two-arin",
        "2025-one-bad",
        "2025-both-bad",
    ],
)
def test_decide_strict(
    at: datetime, remotes: list[Remote], results: str, verdict: Verdict, quorum: str
) -> None:
    rule = rule_for(at, remotes, strict=True)
    decision = decide(rule, remotes, res(remotes, results))
    assert (decision.verdict, decision.quorum) == (verdict, quorum), decision.reason


def test_rir_rule_reason_names_the_rir() -> None:
    rule = rule_for(DEC_2026, ONE_RIPE, strict=True)
    decision = decide(rule, ONE_RIPE, res(ONE_RIPE, "yyyyn"))
    assert "span 1 RIR(s) (ARIN)" in decision.reason
    assert decision.rirs == ("ARIN",)


def test_advisory_phase_is_not_binding() -> None:
    remotes = ONE_RIPE[:2]
    rule = rule_for(utc(2025, 5, 1), remotes, strict=True)
    assert not rule.binding
    assert decide(rule, remotes, res(remotes, "nn")).verdict is Verdict.FAIL


@pytest.mark.parametrize(
    ("remotes", "results", "verdict"),
    [
        # test configurations waive the date's minimum number of remotes...
        ([Remote("t1", "ARIN"), Remote("t2", "RIPE NCC")], "yy", Verdict.PASS),
        ([Remote("t1", "ARIN"), Remote("t2", "RIPE NCC")], "yn", Verdict.FAIL),
        # ...and ask the RIR rule only as far as the configured remotes allow
        ([Remote("t1", "ARIN")], "y", Verdict.PASS),
        ([Remote("t1", "ARIN"), Remote("t2", "ARIN")], "yn", Verdict.PASS),
        # but with two RIRs configured, corroboration in one is not enough
        (ONE_RIPE, "yyyyn", Verdict.FAIL),
        (ONE_RIPE, "nyyyy", Verdict.PASS),
    ],
    ids=["two-agree", "two-one-bad", "one-remote", "same-rir-configured", "one-rir", "4-of-5"],
)
def test_decide_test_configuration(remotes: list[Remote], results: str, verdict: Verdict) -> None:
    rule = rule_for(DEC_2026, remotes, strict=False)
    assert rule.binding and rule.min_remotes == 0
    assert decide(rule, remotes, res(remotes, results)).verdict is verdict


# ------------------------------------------------------------------------------ distance

TOKYO = Location(35.6762, 139.6503)
OSAKA = Location(34.6937, 135.5023)
FRANKFURT = Location(50.1109, 8.6821)
AMSTERDAM = Location(52.3676, 4.9041)
ASHBURN = Location(39.0438, -77.4874)
SEATTLE = Location(47.6062, -122.3321)
LONDON = Location(51.5074, -0.1278)
NEW_YORK = Location(40.7128, -74.0060)


@pytest.mark.parametrize(
    ("a", "b", "km"),
    [
        (TOKYO, OSAKA, 392),
        (FRANKFURT, AMSTERDAM, 363),
        (LONDON, NEW_YORK, 5570),
        (TOKYO, TOKYO, 0),
        (Location(0, 179.5), Location(0, -179.5), 111),
    ],
    ids=["tokyo-osaka", "frankfurt-amsterdam", "london-new-york", "same", "antimeridian"],
)
def test_haversine(a: Location, b: Location, km: float) -> None:
    assert haversine_km(a, b) == pytest.approx(km, abs=5)
    assert haversine_km(b, a) == pytest.approx(haversine_km(a, b))


def at(pid: str, rir: str, where: Location, resolver: Location | None = None) -> Perspective:
    return Perspective(pid, rir, f"https://{pid}.example:14443", where, resolver or where)


PRIMARY = PrimarySite(TOKYO, TOKYO)


@pytest.mark.parametrize(
    ("perspectives", "primary", "expected"),
    [
        ([at("fra", "RIPE", FRANKFURT), at("iad", "ARIN", ASHBURN)], PRIMARY, []),
        (
            [at("fra", "RIPE", FRANKFURT), at("ams", "RIPE", AMSTERDAM)],
            PRIMARY,
            ["perspectives fra and ams are 363 km apart", "resolvers of fra and of ams are 363"],
        ),
        (
            [at("osa", "APNIC", OSAKA)],
            PRIMARY,
            ["perspective osa and the primary are 392 km", "resolvers of osa and of the primary"],
        ),
        (
            [at("fra", "RIPE", FRANKFURT, AMSTERDAM), at("lon", "RIPE", LONDON, FRANKFURT)],
            PRIMARY,
            ["resolvers of fra and of lon are 363 km apart"],
        ),
        (
            [at("iad", "ARIN", ASHBURN, OSAKA)],
            PRIMARY,
            ["resolvers of iad and of the primary are 392 km apart"],
        ),
        ([at("osa", "APNIC", OSAKA)], None, []),
    ],
    ids=[
        "far-apart",
        "two-close",
        "close-to-primary",
        "resolvers-close",
        "resolver-close-to-primary's",
        "no-primary-given",
    ],
)
def test_br_mpic_4_distance(
    perspectives: list[Perspective], primary: PrimarySite | None, expected: list[str]
) -> None:
    found = distance_violations(perspectives, primary)
    assert len(found) == len(expected), found
    for text, problem in zip(expected, found, strict=True):
        assert text in problem
        assert "at least 500 km" in problem


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("us-east", True),
        ("p1", True),
        ("primary", False),
        ("US-East", False),
        ("-a", False),
        ("a" * 63, True),
        ("a" * 64, False),
        ("a.b", False),
        ("", False),
    ],
)
def test_perspective_ids(text: str, ok: bool) -> None:
    assert valid_perspective_id(text) is ok


# ------------------------------------------------------------------------------ refusals

CITIES = [
    ("iad", "ARIN", ASHBURN),
    ("sea", "ARIN", SEATTLE),
    ("fra", "RIPE NCC", FRANKFURT),
    ("lon", "RIPE", LONDON),
    ("gru", "LACNIC", Location(-23.5505, -46.6333)),
    ("jnb", "AFRINIC", Location(-26.2041, 28.0473)),
]


def perspectives_toml(
    entries: list[tuple[str, str, Location]],
    *,
    primary: Location | None = TOKYO,
    resolvers: dict[str, Location] | None = None,
    url: str = "https://{id}.example:14443",
) -> str:
    lines = []
    if primary is not None:
        lines += [
            "[primary]",
            f"latitude = {primary.latitude}",
            f"longitude = {primary.longitude}",
            "",
        ]
    for pid, rir, where in entries:
        lines += [
            "[[perspectives]]",
            f'id = "{pid}"',
            f'rir = "{rir}"',
            f'url = "{url.format(id=pid)}"',
            f"latitude = {where.latitude}",
            f"longitude = {where.longitude}",
        ]
        resolver = (resolvers or {}).get(pid)
        if resolver is not None:
            lines += [
                f"resolver_latitude = {resolver.latitude}",
                f"resolver_longitude = {resolver.longitude}",
            ]
        lines.append("")
    return "\n".join(lines)


@pytest.fixture
def mtls(tmp_path: Path) -> dict[str, Path]:
    paths = {}
    for name in ("mpic_client_cert", "mpic_client_key", "mpic_server_ca"):
        path = tmp_path / f"{name}.pem"
        path.write_text("placeholder\n")
        paths[name] = path
    return paths


def production(tmp_path: Path, mtls: dict[str, Path], text: str, **changes: object) -> Config:
    path = tmp_path / "perspectives.toml"
    path.write_text(text)
    return replace(Config(), mpic_perspectives_file=path, **mtls, **changes)  # type: ignore[arg-type]


def test_production_setup_loads(tmp_path: Path, mtls: dict[str, Path]) -> None:
    config = production(tmp_path, mtls, perspectives_toml(CITIES[:5]))
    setup = load_mpic_setup(MpicSettings.from_config(config), DEC_2026)
    assert setup.strict
    assert [p.rir for p in setup.perspectives] == ["ARIN", "ARIN", "RIPE NCC", "RIPE NCC", "LACNIC"]
    assert setup.perspectives[0].resolver == ASHBURN  # defaults to the perspective's location


@pytest.mark.parametrize(
    ("text", "when", "message"),
    [
        (
            perspectives_toml(CITIES[:4]),
            DEC_2026,
            "4 remote perspective(s) configured; BR 3.2.2.9 requires at least 5 from 2026-12-15",
        ),
        (perspectives_toml(CITIES[:3]), JUL_2026, "requires at least 4 from 2026-06-15"),
        (
            perspectives_toml([*CITIES[:4], ("ams", "RIPE NCC", AMSTERDAM)]),
            DEC_2026,
            "perspectives fra and ams are 363 km apart",
        ),
        (
            perspectives_toml(CITIES[:5], resolvers={"iad": FRANKFURT}),
            DEC_2026,
            "resolvers of iad and of fra are 0 km apart",
        ),
        (
            perspectives_toml([*CITIES[:4], ("osa", "APNIC", OSAKA)]),
            DEC_2026,
            "perspective osa and the primary are 392 km apart",
        ),
        (
            perspectives_toml([*CITIES[:4], ("xxx", "IANA", Location(0, 0))]),
            DEC_2026,
            "unknown RIR 'IANA'",
        ),
        (
            perspectives_toml([(p, "ARIN", w) for p, _, w in CITIES[:5]]),
            DEC_2026,
            "span 1 RIR(s) (ARIN)",
        ),
        (perspectives_toml(CITIES[:5], primary=None), DEC_2026, "no [primary] location"),
        (
            perspectives_toml(CITIES[:5], url="http://{id}.example"),
            DEC_2026,
            "must be an https:// URL",
        ),
        (
            perspectives_toml([*CITIES[:4], ("iad", "AFRINIC", CITIES[5][2])]),
            DEC_2026,
            "perspective id 'iad' appears more than once",
        ),
        (
            perspectives_toml([*CITIES[:4], ("primary", "AFRINIC", CITIES[5][2])]),
            DEC_2026,
            "must be a lowercase DNS label other than 'primary'",
        ),
        (perspectives_toml([], primary=TOKYO), DEC_2026, "lists no [[perspectives]]"),
        ("[[perspectives]]\nid = 1\n", DEC_2026, "id 1 must be"),
        ("perspectives = [", DEC_2026, "cannot read mpic_perspectives_file"),
        ("[extra]\n", DEC_2026, "unknown key(s) extra"),
    ],
    ids=[
        "too-few-december",
        "too-few-july",
        "two-close",
        "resolvers-close",
        "close-to-primary",
        "unknown-rir",
        "one-rir",
        "no-primary",
        "not-https",
        "duplicate-id",
        "reserved-id",
        "empty",
        "bad-id-type",
        "not-toml",
        "unknown-key",
    ],
)
def test_production_refusals(
    tmp_path: Path, mtls: dict[str, Path], text: str, when: datetime, message: str
) -> None:
    config = production(tmp_path, mtls, text)
    with pytest.raises(MpicConfigError) as info:
        load_mpic_setup(MpicSettings.from_config(config), when)
    assert message in str(info.value)


def test_missing_mtls_material_is_refused(tmp_path: Path, mtls: dict[str, Path]) -> None:
    mtls["mpic_client_key"].unlink()
    del mtls["mpic_server_ca"]
    config = production(tmp_path, mtls, perspectives_toml(CITIES[:5]))
    with pytest.raises(MpicConfigError) as info:
        load_mpic_setup(MpicSettings.from_config(config), DEC_2026)
    assert "mpic_server_ca is not set" in str(info.value)
    assert "mpic_client_key" in str(info.value) and "not a readable file" in str(info.value)


@pytest.mark.parametrize(
    "changes", [{"test_mode": True}, {"dnssec": "off"}], ids=["test-mode", "dnssec-off"]
)
def test_test_configurations_waive_the_count_not_the_facts(
    tmp_path: Path, mtls: dict[str, Path], changes: dict[str, object]
) -> None:
    few = production(tmp_path, mtls, perspectives_toml(CITIES[:2], primary=None), **changes)
    setup = load_mpic_setup(MpicSettings.from_config(few), DEC_2026)
    assert not setup.strict and len(setup.perspectives) == 2
    close = production(
        tmp_path, mtls, perspectives_toml([CITIES[2], ("ams", "RIPE", AMSTERDAM)]), **changes
    )
    with pytest.raises(MpicConfigError, match="363 km apart"):
        load_mpic_setup(MpicSettings.from_config(close), DEC_2026)


@pytest.mark.parametrize(
    ("changes", "skip_reason"),
    [
        ({}, "no mpic_perspectives_file configured"),
        ({"test_mode": True}, "test mode without --perspectives"),
    ],
    ids=["embedded-defaults", "test-mode"],
)
def test_no_perspectives_skips_corroboration(changes: dict[str, object], skip_reason: str) -> None:
    setup = load_mpic_setup(MpicSettings.from_config(replace(Config(), **changes)), DEC_2026)  # type: ignore[arg-type]
    assert setup.perspectives == () and setup.skip_reason == skip_reason


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"test_perspectives": 3}, "needs test mode"),
        ({"test_perspectives": 99, "test_mode": True}, "must be 1..16"),
        (
            {"test_perspectives": 2, "test_mode": True, "mpic_perspectives_file": Path("x.toml")},
            "either",
        ),
    ],
    ids=["without-test-mode", "too-many", "and-a-file"],
)
def test_test_perspectives_refusals(changes: dict[str, object], message: str) -> None:
    with pytest.raises(MpicConfigError, match=message):
        load_mpic_setup(MpicSettings.from_config(replace(Config(), **changes)), DEC_2026)  # type: ignore[arg-type]


def test_test_perspectives_setup() -> None:
    config = replace(Config(), test_mode=True, test_perspectives=3)
    setup = load_mpic_setup(MpicSettings.from_config(config), DEC_2026)
    assert setup.local_test_perspectives == 3 and not setup.strict
