"""The shipped Prometheus alert rules and Grafana dashboard (deploy/, docs/operations.md
"Metrics and alerts"): promtool accepts the rules and their unit tests pass, every alert
fires in at least one test, the dashboard's queries parse, and both name only series the
processes expose (so a renamed family cannot leave a silent alert behind).

promtool comes with Debian's ``prometheus`` package (scripts/bootstrap.sh installs it for
tests); without it these tests are skipped, except under CI=true, where they must run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client.metrics_core import Metric

from acme_ca import metrics

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "acme_ca_rules.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "acme_ca_rules_test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "acme_ca_dashboard.json"
PROMTOOL = shutil.which("promtool")

needs_promtool = pytest.mark.skipif(
    PROMTOOL is None and os.environ.get("CI") != "true",
    reason="promtool (Debian package prometheus) is not installed",
)

#: PromQL words that look like series names in an expression but are not.
PROMQL_WORDS = frozenset(
    {
        "sum", "max", "min", "avg", "count", "rate", "increase", "histogram_quantile",
        "by", "without", "unless", "and", "or", "on", "ignoring", "label_values", "up",
    }
)  # fmt: skip


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None, "CI=true: promtool must be installed (scripts/bootstrap.sh)"
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def exposed_series() -> set[str]:
    """Every series name the registry can expose: counters' _total, histograms' _bucket,
    _count and _sum, gauges as named."""
    names = {"up"}
    families: list[Metric] = list(metrics.REGISTRY.collect())
    for family in families:
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + s for s in ("_bucket", "_count", "_sum"))
        else:
            names.add(family.name)
    return names


def series_named(expr: str) -> set[str]:
    """The series an expression reads: identifiers outside label matchers, grouping
    clauses and strings, minus PromQL's own words."""
    expr = re.sub(r'"[^"]*"', "", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    words = set(re.findall(r"[a-zA-Z_][a-zA-Z0-9_]*", expr))
    return {w for w in words if "_" in w or w == "up"} - (PROMQL_WORDS - {"up"})


def rule_expressions() -> list[str]:
    """Each alert's expr (one line, or a folded ``>-`` block) from the rules file."""
    exprs, lines = [], RULES.read_text().splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("expr:"):
            value = stripped.removeprefix("expr:").strip()
            if value == ">-":
                block = []
                for follow in lines[i + 1 :]:
                    if follow.strip().startswith(("for:", "labels:")):
                        break
                    block.append(follow.strip())
                value = " ".join(block)
            exprs.append(value)
    return exprs


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


@needs_promtool
def test_alert_rules_pass_promtool_check() -> None:
    checked = promtool("check", "rules", RULES.name, cwd=RULES.parent)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 16 rules found" in checked.stdout


@needs_promtool
def test_alert_rules_unit_tests_pass_and_every_alert_fires_in_one() -> None:
    """Among them BR-CRL-1 / CP 4.9.7: AcmeCaCrlTooOld fires once the newest CRL is older
    than the CP's 24 hours, and not for an issuer whose CRL is an hour old."""
    tested = promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    alerts = set(re.findall(r"^\s*- alert: (\w+)$", RULES.read_text(), re.MULTILINE))
    assert len(alerts) == 16
    firing = set(
        re.findall(r"alertname: (\w+)\n\s*exp_alerts:\n\s*- exp_labels:", RULE_TESTS.read_text())
    )
    assert alerts == firing, alerts ^ firing


@needs_promtool
def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """Each panel query, with Grafana's variables filled in, is valid PromQL (checked by
    promtool as recording rules)."""
    exprs = dashboard_expressions()
    assert len(exprs) >= 25
    rules = ["groups:", "  - name: dashboard", "    rules:"]
    for i, expr in enumerate(exprs):
        filled = expr.replace("$__rate_interval", "5m").replace("$job", "acme_ca.*")
        filled = filled.replace("$instance", ".*")
        rules += [f"      - record: dashboard:query{i}", f"        expr: {json.dumps(filled)}"]
    (tmp_path / "dashboard_rules.yml").write_text("\n".join(rules) + "\n")
    checked = promtool("check", "rules", "dashboard_rules.yml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_rules_and_dashboard_read_only_series_the_processes_expose() -> None:
    exposed = exposed_series()
    for expr in rule_expressions() + dashboard_expressions():
        named = series_named(expr)
        assert named, expr
        assert named <= exposed, (expr, named - exposed)
    used = set().union(*(series_named(e) for e in dashboard_expressions()))
    # Every family of acme_ca.metrics has a panel (process_* and python_* aside).
    ours = {
        f.name
        for f in metrics.REGISTRY.collect()
        if not f.name.startswith(("process_", "python_", "metrics_refresh"))
    }
    shown = {name.removesuffix(s) for name in used for s in ("_total", "_bucket", "_count")}
    assert ours <= shown | used, ours - shown - used
