"""``serve --test`` issues for the special-use names CI suites use (issue 21 item 7) to an
account with a P-521 key signing ES512 (item 6), end to end with the ``acme`` library:
``ci.test`` and ``localhost`` through dns-01 records set over the management API, the
certificate verified against ``/roots/0``, and the one lint waiver (the internal-name
finding) logged; every other lint finding would still have blocked it.  Outside test mode the
same names are refused (``tests/test_special_use_names.py``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.jwa import ES512
from josepy.jwk import JWKEC

from integration.clients import acme_account, answer_dns01, csr_pem, openssl_verify
from integration.processes import CaProcesses
from integration.testmode_server import QuietProcesses, start_test_mode, write_pem

pytestmark = pytest.mark.integration

NAMES = ["ci.test", "localhost"]


@pytest.fixture
def processes(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[CaProcesses]:
    with QuietProcesses(tmp_path / "logs", request.session) as procs:
        yield procs


def test_special_use_names_issued_in_test_mode_to_a_p521_account(
    dsn: str, tmp_path: Path, processes: CaProcesses
) -> None:
    ca = start_test_mode(
        processes,
        "serve-names",
        tmp_path / "ca-home",
        dsn=dsn,
        env={"ACME_CA_RETRY_AFTER_SECONDS": "1"},
    )
    key = JWKEC(key=ec.generate_private_key(ec.SECP521R1()))
    acme, _ = acme_account(ca.directory_url, ca.cafile, key=key, alg=ES512)
    assert acme.net.account is not None
    assert acme.net.account.body.key.public_key() == key.public_key()  # `key` in the account
    order = acme.new_order(csr_pem(NAMES))
    answer_dns01(acme, key, order, ca.set_txt)
    done = acme.poll_and_finalize(order, dt.datetime.now() + dt.timedelta(seconds=30))
    chain = x509.load_pem_x509_certificates(done.fullchain_pem.encode())
    san = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(san.get_values_for_type(x509.DNSName)) == sorted(NAMES)
    leaf = write_pem(tmp_path / "leaf.pem", chain[:1])
    openssl_verify(ca.root_pem(tmp_path), write_pem(tmp_path / "chain.pem", chain[1:]), leaf)
    waivers = ca.proc.events("issuance.lint_waived")
    assert waivers, ca.proc.tails()
    assert all("cabf.internal_domain_name" in w["finding"] for w in waivers), waivers
    assert all(sorted(w["names"]) == sorted(NAMES) for w in waivers), waivers
