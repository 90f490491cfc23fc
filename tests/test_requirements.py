"""tests/support/requirements.py: a missing requirement is a skip on a developer's machine and
a failure where CI must run the test (as root under CI=true)."""

from __future__ import annotations

import pytest

from tests.support import requirements


@pytest.mark.parametrize(
    ("ci", "euid", "even_unprivileged", "outcome"),
    [
        (None, 0, False, "skip"),
        ("true", 1000, False, "skip"),
        ("true", 0, False, "fail"),
        ("true", 1000, True, "fail"),
        ("false", 0, True, "skip"),
    ],
)
def test_unavailable_skips_unless_ci_must_run(
    monkeypatch: pytest.MonkeyPatch,
    ci: str | None,
    euid: int,
    even_unprivileged: bool,
    outcome: str,
) -> None:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    monkeypatch.setattr("os.geteuid", lambda: euid)
    expected = pytest.fail.Exception if outcome == "fail" else pytest.skip.Exception
    with pytest.raises(expected, match="pebble is not installed"):
        requirements.unavailable("pebble is not installed", even_unprivileged=even_unprivileged)
