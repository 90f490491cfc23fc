"""``serve --test --ephemeral``'s spare hierarchy (issue 21 item 8): made by a real builder
child into a real home, taken once, discarded when made for other settings, and never taken
when its builder died part-way.  ``integration/test_ephemeral.py`` runs it through the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import structlog

from acme_ca.ca.hierarchy_chains import ChainShape, check_chain_shape
from acme_ca.ca.issuers_file import read_issuers_file
from acme_ca.ca.settings import HierarchySettings
from acme_ca.config import load_config
from acme_ca.own_python import own_python
from acme_ca.testsrv import ephemeral_spare
from acme_ca.testsrv.ephemeral_spare import (
    BUILDING,
    CLAIMED,
    SPARE,
    STAMP,
    build_spare,
    claim_spare,
    finish_next_spare,
    make_next_spare,
)

#: The builder child as make_next_spare starts it, but at normal priority. serve gives it
#: SCHED_IDLE so that it never takes CPU from requests; on a saturated CI runner that is a
#: tiny share of a core, too little for these tests' deadlines. What it builds is the same;
#: test_builder_runs_at_idle_priority checks the priority itself.
_BUILDER_AT_NORMAL_PRIORITY = (
    "import sys; from acme_ca.testsrv import ephemeral_spare as m; "
    "m._lowest_priority = lambda: None; sys.exit(m.main(sys.argv[1:]))"
)


@pytest.fixture(scope="module", autouse=True)
def builder_at_normal_priority() -> Iterator[None]:
    def own(*args: str) -> tuple[list[str], dict[str, str]]:
        assert args[:2] == ("-m", ephemeral_spare.__name__), args
        return own_python("-c", _BUILDER_AT_NORMAL_PRIORITY, *args[2:])

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ephemeral_spare, "own_python", own)
        yield


def test_builder_runs_at_idle_priority() -> None:
    """The builder's first step lowers it below every request-serving process."""
    code = (
        "import os; from acme_ca.testsrv.ephemeral_spare import _lowest_priority; "
        "_lowest_priority(); print(os.sched_getscheduler(0), os.nice(0))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    policy, niceness = (int(x) for x in out.stdout.split())
    assert policy == os.SCHED_IDLE or niceness == 19, out.stdout


def _settings(home: Path, **env: str) -> HierarchySettings:
    config = load_config(env={"ACME_CA_HOME": str(home), **env}, overrides={"test_mode": True})
    return HierarchySettings.from_config(config)


async def _make(home: Path, settings: HierarchySettings) -> bool:
    """What a run does once ready (serve.py): the builder child, waited for at the end."""
    ready = asyncio.Event()
    making = asyncio.create_task(make_next_spare(ready, home, settings))
    ready.set()
    await finish_next_spare(ready, making, wait_seconds=120)
    return making.result()


def _build(home: Path, settings: HierarchySettings) -> None:
    assert asyncio.run(_make(home, settings)), "the builder child made a spare"


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One spare made by the real builder child, for the tests to copy."""
    home = tmp_path_factory.mktemp("made")
    _build(home, _settings(home))
    return home / SPARE


def _home_with(made: Path, tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    shutil.copytree(made, home / SPARE)
    return home


def test_spare_is_whole_and_taken_once(made: Path, tmp_path: Path) -> None:
    home = _home_with(made, tmp_path)
    settings = _settings(home)
    stamp = json.loads((home / SPARE / STAMP).read_text())
    assert stamp["chain_length"] is None and stamp["alternate_roots"] is None
    assert abs(stamp["created"] - time.time()) < 600

    spare = claim_spare(home, settings)
    assert spare is not None
    assert not (home / SPARE).exists(), "claimed: renamed away before it is read"
    assert claim_spare(home, settings) is None, "a spare serves one start only"

    run_home = tmp_path / "run"
    run_home.mkdir()
    spare.move_into(run_home)
    parsed = read_issuers_file(run_home / "pki")
    assert {"dv-rsa", "dv-ecc", "ov-rsa", "ov-ecc"} <= set(parsed.issuers)
    assert (run_home / "pki" / "keys").stat().st_mode & 0o777 == 0o700
    assert sorted(p.name for p in home.iterdir()) == [], "nothing of the spare is left"


@pytest.mark.parametrize(
    ("change", "env", "reason"),
    [
        ({}, {"PEBBLE_CHAIN_LENGTH": "2"}, "made for other settings: chain_length"),
        ({}, {"PEBBLE_ALTERNATE_ROOTS": "1"}, "made for other settings: alternate_roots"),
        ({"code": "0" * 64}, {}, "made for other settings: code"),
        ({"format": 0}, {}, "made for other settings: format"),
        ({"created": time.time() + 3600}, {}, "stamped in the future"),
        (None, {}, "no readable stamp"),
    ],
    ids=["chain-length", "alternate-roots", "other-code", "other-format", "future", "no-stamp"],
)
def test_spare_made_for_anything_else_is_discarded(
    made: Path, tmp_path: Path, change: dict[str, object] | None, env: dict[str, str], reason: str
) -> None:
    home = _home_with(made, tmp_path)
    stamp_file = home / SPARE / STAMP
    if change is None:
        stamp_file.unlink()
    else:
        stamp_file.write_text(json.dumps({**json.loads(stamp_file.read_text()), **change}))
    with structlog.testing.capture_logs() as logs:
        assert claim_spare(home, _settings(home, **env)) is None
    [discarded] = [e for e in logs if e["event"] == "testmode.ephemeral_spare_discarded"]
    assert discarded["reason"].startswith(reason)
    assert list(home.iterdir()) == [], "a discarded spare is removed"


def test_no_spare_for_hsm_keys(tmp_path: Path) -> None:
    """Test mode refuses an HSM (config checks); were one set, no spare holds its keys."""
    software = _settings(tmp_path)
    settings = replace(
        software, hsm=replace(software.hsm, module="/usr/lib/softhsm/libsofthsm2.so")
    )
    assert not asyncio.run(_make(tmp_path, settings))
    assert not build_spare(tmp_path, settings)
    assert list(tmp_path.iterdir()) == []


def test_nothing_is_started_for_a_run_that_never_became_ready(tmp_path: Path) -> None:
    async def run() -> bool:
        making = asyncio.create_task(
            make_next_spare(asyncio.Event(), tmp_path, _settings(tmp_path))
        )
        await finish_next_spare(asyncio.Event(), making)
        return making.cancelled()

    assert asyncio.run(run())
    assert list(tmp_path.iterdir()) == []


def test_builder_killed_part_way_leaves_nothing_a_start_takes(tmp_path: Path) -> None:
    """SIGKILL the real builder while it writes keys: no spare appears, a start finds none,
    and the next builder removes what the dead one left (and a start's claimed leftover)."""
    home = tmp_path / "home"
    home.mkdir()
    settings = _settings(home)

    async def kill_part_way() -> tuple[Path, bool]:
        ready = asyncio.Event()
        ready.set()
        making = asyncio.create_task(make_next_spare(ready, home, settings))
        deadline = time.monotonic() + 60
        while not (keys := list(home.glob(f"{BUILDING}*/pki/keys/root-r1.key.pem"))):
            assert time.monotonic() < deadline, "the builder never wrote a key"
            await asyncio.sleep(0.005)
        # The first key of five: the RSA ones are still to come.
        building = keys[0].parents[2]
        os.kill(int(building.name.removeprefix(BUILDING)), signal.SIGKILL)
        return building, await making

    building, made = asyncio.run(kill_part_way())
    assert not made
    assert not (home / SPARE).exists()
    assert building.is_dir(), "killed part-way: its half-written spare is still there"
    assert claim_spare(home, settings) is None
    # A start that died between claiming and moving the spare in leaves a claimed directory.
    shutil.copytree(building, home / f"{CLAIMED}{building.name.removeprefix(BUILDING)}-0000")

    assert build_spare(home, settings)
    assert sorted(p.name for p in home.iterdir()) == [SPARE]
    assert claim_spare(home, settings) is not None


def test_builder_leaves_a_spare_already_there(made: Path, tmp_path: Path) -> None:
    home = _home_with(made, tmp_path)
    before = (home / SPARE / "pki" / "root.pem").read_bytes()
    with structlog.testing.capture_logs() as logs:
        _build(home, _settings(home))
    assert [e["made"] for e in logs if e["event"] == "testmode.ephemeral_spare_made"] == [False]
    assert (home / SPARE / "pki" / "root.pem").read_bytes() == before


def test_a_stopping_run_kills_a_builder_past_its_bound(tmp_path: Path) -> None:
    async def run() -> bool:
        ready = asyncio.Event()
        making = asyncio.create_task(make_next_spare(ready, tmp_path, _settings(tmp_path)))
        ready.set()
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(f"{BUILDING}*")):  # the child is at work
            assert time.monotonic() < deadline, "the builder never started"
            await asyncio.sleep(0.005)
        await finish_next_spare(ready, making, wait_seconds=0.01)
        return making.cancelled()

    with structlog.testing.capture_logs() as logs:
        assert asyncio.run(run())
    assert [e["event"] for e in logs if "spare" in e["event"]] == [
        "testmode.ephemeral_spare_building",
        "testmode.ephemeral_spare_abandoned",
    ]
    assert not (tmp_path / SPARE).exists()


def test_spare_moves_into_a_home_on_another_filesystem(made: Path, tmp_path: Path) -> None:
    """The throwaway home is in the temporary directory, ``$ACME_CA_HOME`` anywhere: across
    filesystems the spare is copied (modes kept) instead of renamed, then removed."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second filesystem at /dev/shm")
    home = _home_with(made, tmp_path)
    spare = claim_spare(home, _settings(home))
    assert spare is not None
    run_home = Path(tempfile.mkdtemp(dir=shm))
    try:
        spare.move_into(run_home)
        assert read_issuers_file(run_home / "pki").issuers
        assert (run_home / "pki" / "keys").stat().st_mode & 0o777 == 0o700
        key = run_home / "pki" / "keys" / "root-r1.key.pem"
        assert key.stat().st_mode & 0o777 == 0o600
        assert list(home.iterdir()) == []
    finally:
        shutil.rmtree(run_home)


def test_spare_of_pebble_shape_serves_a_start_of_that_shape(tmp_path: Path) -> None:
    """PEBBLE_CHAIN_LENGTH / PEBBLE_ALTERNATE_ROOTS: the builder makes the shape asked for,
    and a start of that shape takes it and passes the chain-shape check it makes on a kept
    hierarchy."""
    home = tmp_path / "home"
    home.mkdir()
    env = {"PEBBLE_CHAIN_LENGTH": "2", "PEBBLE_ALTERNATE_ROOTS": "1"}
    _build(home, _settings(home, **env))
    spare = claim_spare(home, _settings(home, **env))
    assert spare is not None
    run_home = tmp_path / "run"
    run_home.mkdir()
    spare.move_into(run_home)
    run = _settings(run_home, **env)
    assert ChainShape.of_file(read_issuers_file(run.pki_path)) == ChainShape(1, 2)
    check_chain_shape(run)
