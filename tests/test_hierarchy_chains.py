"""Test mode's Pebble-shaped hierarchy (PEBBLE_ALTERNATE_ROOTS, PEBBLE_CHAIN_LENGTH; issue 21
item 3): what issuers.toml records, and a kept home of another shape refused rather than
rebuilt under the certificates it issued.  Issuance through it, beside the real Pebble, is
integration/test_pebble_chains.py."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from acme_ca.ca.hierarchy import init_hierarchy
from acme_ca.ca.hierarchy_chains import ChainShape, check_chain_shape
from acme_ca.ca.issuers_file import IssuerConfigError, alternate_path, read_issuers_file
from acme_ca.ca.settings import HierarchySettings
from acme_ca.config import ConfigError, load_config
from tests.support.pkilint import pkilint

LINT_CERT = Path(sys.executable).parent / "lint_cabf_serverauth_cert"


def _config(home: Path, **env: str) -> HierarchySettings:
    config = load_config(env={"ACME_CA_HOME": str(home), **env}, overrides={"test_mode": True})
    return HierarchySettings.from_config(config)


def _init(settings: HierarchySettings) -> None:
    asyncio.run(init_hierarchy(settings))


def test_pebble_shape_recorded_and_a_kept_home_of_another_shape_refused(tmp_path: Path) -> None:
    shaped = _config(tmp_path / "a", PEBBLE_ALTERNATE_ROOTS="1", PEBBLE_CHAIN_LENGTH="2")
    _init(shaped)
    parsed = read_issuers_file(shaped.pki_path)
    assert ChainShape.of_file(parsed) == ChainShape(1, 2)
    for entry in parsed.issuers.values():
        [alternate] = entry.alternate_chains
        path = alternate_path(entry.certificate, alternate)
        assert path[0] != entry.certificate and path[0].subject == entry.certificate.subject
        assert path[0].public_key() == entry.certificate.public_key()
    check_chain_shape(shaped)  # the same shape starts
    with pytest.raises(
        ConfigError, match=r"for 2 chain\(s\) of length 3, but .* 2 chain\(s\) of length 2:"
    ):
        check_chain_shape(
            _config(tmp_path / "a", PEBBLE_CHAIN_LENGTH="3", PEBBLE_ALTERNATE_ROOTS="1")
        )

    default = _config(tmp_path / "b")
    _init(default)
    assert ChainShape.of_file(read_issuers_file(default.pki_path)) is None  # the cross-certificate
    check_chain_shape(default)  # no variable: any hierarchy
    with pytest.raises(ConfigError, match="holds a hierarchy of another shape"):
        check_chain_shape(_config(tmp_path / "b", PEBBLE_ALTERNATE_ROOTS="1"))


def test_alternate_chain_beginning_with_a_stranger_is_refused(tmp_path: Path) -> None:
    """Only a certificate with the issuer's own subject and key stands in for it: another
    chain's root-signed certificate of a different issuer breaks the link and is refused."""
    config = _config(tmp_path, PEBBLE_ALTERNATE_ROOTS="1")
    _init(config)
    toml = config.pki_path / "issuers.toml"
    text = toml.read_text()
    assert '"dv-rsa-r2.pem"' in text
    toml.write_text(
        text.replace(
            'alternate_chains = [["dv-rsa-r2.pem"]]', 'alternate_chains = [["dv-ecc-r2.pem"]]'
        )
    )
    with pytest.raises(IssuerConfigError, match="alternate_chains\\[0\\]"):
        read_issuers_file(config.pki_path)


@pytest.mark.skipif(not LINT_CERT.exists(), reason="pkilint not installed in .venv")
def test_pkilint_finds_nothing_above_notice_in_the_chains(tmp_path: Path) -> None:
    """Every CA certificate of a two-chain, length-3 hierarchy: the roots, the intermediates
    above the issuers (anyPolicy, as BR 7.1.2.10.5 allows an affiliated CA) and each issuing
    CA's certificate in each chain."""
    settings = _config(tmp_path, PEBBLE_ALTERNATE_ROOTS="1", PEBBLE_CHAIN_LENGTH="3")
    _init(settings)
    files = sorted(p.name for p in settings.pki_path.glob("*.pem"))
    assert len(files) == 2 + 2 * 2 + 4 * 2, files  # roots, intermediates, issuers per chain
    for name in files:
        kind = "ROOT-CA" if name.startswith("root") else "INTERNAL-UNCONSTRAINED-TLS-CA"
        result = pkilint(LINT_CERT, "lint", "-t", kind, "-s", "WARNING", settings.pki_path / name)
        assert result.returncode == 0, (name, result.stdout + result.stderr)


def test_supplied_keys_used_when_they_match_their_type(tmp_path: Path) -> None:
    """``serve --test --ephemeral`` makes its RSA keys in a child process while it imports
    (main/early_cluster.EarlyKeys); the key store takes a supplied key only of the type asked
    for, and generates the rest itself."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    from acme_ca.main.early_cluster import EarlyKeys

    x1_key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    wrong = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    asked: list[str] = []

    def supplied(key_spec: str) -> rsa.RSAPrivateKey | None:
        asked.append(key_spec)
        return x1_key if key_spec == "rsa3072" else wrong if key_spec == "ec-p256" else None

    settings = _config(tmp_path)
    asyncio.run(init_hierarchy(settings, supplied=supplied))
    parsed = read_issuers_file(settings.pki_path)
    x1 = next(e for e in parsed.roots.values() if e.name == "root-x1")
    assert x1.certificate.public_key() == x1_key.public_key()
    assert parsed.issuers["dv-ecc"].certificate.public_key() != wrong.public_key()
    assert sorted(set(asked)) == ["ec-p256", "ec-p384", "rsa2048", "rsa3072"]

    keys = EarlyKeys({"rsa2048": 1})
    try:
        first = keys.take("rsa2048")
        assert isinstance(first, rsa.RSAPrivateKey) and first.key_size == 2048
        assert keys.take("rsa2048") is None and keys.take("rsa3072") is None
    finally:
        keys.close()
