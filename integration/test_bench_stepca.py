"""step-ca as a benchmark target (issue 20, Benchmark).

CI checks what is made here for step-ca without building it: the two-level hierarchy and the
``ca.json`` rendered from ``integration/bench/stepca/ca.json.template``.  Building step-ca
needs the Go toolchain and Debian's step-ca source, which CI does not install, so running it
under load is opt-in: ``ACME_CA_BENCH_STEP_CA=1`` (as root, for port 80 on 127.0.34.80).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from integration.bench import step_ca
from integration.bench.servers import REPO

pytestmark = pytest.mark.integration


def test_step_ca_hierarchy_and_config(tmp_path: Path) -> None:
    config_path, root_path = step_ca.write_config(tmp_path, 8443)
    config = json.loads(config_path.read_text())
    assert config["authority"]["provisioners"] == [{"type": "ACME", "name": step_ca.PROVISIONER}]
    assert config["db"]["type"] == "badgerv2" and Path(config["db"]["dataSource"]).is_dir()
    assert config["address"] == "127.0.0.1:8443"
    root = x509.load_pem_x509_certificate(root_path.read_bytes())
    inter = x509.load_pem_x509_certificate(Path(config["crt"]).read_bytes())
    assert Path(config["root"]) == root_path
    # The intermediate chains to the root, and both may sign: the root one level down only.
    inter.verify_directly_issued_by(root)
    root.verify_directly_issued_by(root)
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 1
    assert inter.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    key_path = Path(config["key"])
    assert key_path.stat().st_mode & 0o777 == 0o600
    key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    public = inter.public_key()
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert key.public_key().public_numbers() == public.public_numbers()


@pytest.mark.skipif(
    os.environ.get("ACME_CA_BENCH_STEP_CA") != "1",
    reason="opt-in (ACME_CA_BENCH_STEP_CA=1): builds step-ca with Go, not installed in CI",
)
def test_bench_step_ca(tmp_path: Path) -> None:
    problem = step_ca.missing()
    if problem is not None:
        pytest.skip(problem)
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "integration.bench",
            "--targets",
            "step-ca",
            "--levels",
            "1",
            "--duration",
            "3",
            "--json",
            str(out),
            "--workdir",
            str(tmp_path / "runs"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,  # the first run builds step-ca
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    [result] = json.loads(out.read_text())["targets"]
    assert result["start_error"] is None, run.stderr
    [level] = result["levels"]
    assert level["issuances"] >= 1 and level["errors"] == {}, run.stderr
    assert level["probe"] == "ok" and set(level["cpu_split"]) == {"step-ca"}
    assert level["cpu_seconds"] > 0
