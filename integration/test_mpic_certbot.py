"""certbot against ``acme-ca serve --test --perspectives 5``: the BR 3.2.2.9 shape end to end.

The test-mode server starts five remote VAs in its own process (``test-1`` .. ``test-5``, one
per RIR); certbot obtains a certificate for one name through dns-01 (``--manual`` hooks
calling the management API's ``/set-txt``). The challenge's stored ``validationRecord`` must
then carry the quorum record (``perspective: "primary"``, ``quorum: "5/5"``) and one
corroborating summary record per remote, and the server log a passing ``va.mpic.quorum``
event for the name (see ``docs/mpic.md``, "How an auditor reads a quorum").
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from integration.clients import CERTBOT, certbot_dirs, certbot_run, challenge_records, write_hooks
from integration.processes import CaProcesses, describe, tail
from integration.testmode_server import start_test_mode

pytestmark = pytest.mark.integration

PERSPECTIVES = 5
NAME = "mpic5.certbot.example.com"


def _certbot(
    ca_dir: str, cafile: Path, work: Path, hooks: Path
) -> subprocess.CompletedProcess[str]:
    argv = [
        CERTBOT,
        "certonly",
        "--server",
        ca_dir,
        "-n",
        *certbot_dirs(work),
        "--manual",
        "--preferred-challenges",
        "dns",
        "--manual-auth-hook",
        str(hooks / "certbot-dns01-auth.sh"),
        "--manual-cleanup-hook",
        str(hooks / "certbot-dns01-cleanup.sh"),
        "--key-type",
        "ecdsa",
        "--elliptic-curve",
        "secp256r1",
        "--agree-tos",
        "-m",
        "mpic@example.test",
        "--cert-name",
        NAME,
        "-d",
        NAME,
    ]
    return certbot_run(argv, cafile, timeout=180, cwd=work)


async def test_br_mpic_certbot_with_five_perspectives(
    dsn: str, tmp_path: Path, processes: CaProcesses
) -> None:
    ca = start_test_mode(
        processes,
        "serve-mpic5",
        tmp_path / "ca-home",
        dsn=dsn,
        args=("--perspectives", str(PERSPECTIVES)),
        env={"ACME_CA_RETRY_AFTER_SECONDS": "1"},
    )
    hooks = write_hooks(tmp_path / "hooks", ca.management_url)
    work = tmp_path / "certbot"
    work.mkdir()

    run = _certbot(ca.directory_url, ca.cafile, work, hooks)
    assert run.returncode == 0, "\n".join(
        [describe(run), tail(work / "logs" / "letsencrypt.log", 60), ca.proc.tails()]
    )
    assert (work / "config" / "live" / NAME / "cert.pem").is_file()

    # The dns-01 challenge is valid, and its records carry the quorum: 5 of 5 remotes.
    challenges = await challenge_records(dsn, NAME)
    valid = [(kind, records) for kind, status, records in challenges if status == "valid"]
    assert [kind for kind, _ in valid] == ["dns-01"], challenges
    records = valid[0][1]
    quorum = [r for r in records if r.get("perspective") == "primary" and "quorum" in r]
    assert quorum, records
    assert all(r["quorum"] == f"{PERSPECTIVES}/{PERSPECTIVES}" for r in quorum), quorum
    assert all(r.get("corroborated") is True for r in quorum), quorum
    summaries = [
        r for r in records if "corroborated" in r and r.get("perspective") not in (None, "primary")
    ]
    ids = {r["perspective"] for r in summaries}
    assert ids == {f"test-{i}" for i in range(1, PERSPECTIVES + 1)}, summaries
    assert all(r["corroborated"] is True for r in summaries), summaries
    assert len({r["rir"] for r in summaries}) == PERSPECTIVES, summaries

    # The log has the same facts: a passing va.mpic.quorum event for the name.
    events = [e for e in ca.proc.events("va.mpic.quorum") if e.get("identifier") == NAME]
    assert events, ca.proc.tails()
    dcv = [e for e in events if e.get("kind") == "dcv"]
    assert dcv, events
    assert all(e.get("ok") is True for e in events), events
    assert all(e.get("quorum") == f"{PERSPECTIVES}/{PERSPECTIVES}" for e in dcv), dcv
    assert len(dcv[0].get("perspectives", [])) == PERSPECTIVES, dcv

    ca.stop()
