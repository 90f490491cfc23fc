"""The ten production invariants and their checks: static checks of the configuration and of
the files it names (issuers.toml, the perspectives file, the CT log list, the weak-key lists);
nothing is contacted.  Blocking file I/O: run from a thread inside a loop."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID

from acme_ca.ca.ct.loglist import LogList, LogListError, parse_log_list
from acme_ca.ca.ct.settings import CtSettings
from acme_ca.ca.issuers_file import IssuersFile
from acme_ca.ca.profile import max_validity
from acme_ca.config import Config
from acme_ca.ra.keys import DEFAULT_RSA_SIZES, load_openssl_blacklist, openssl_blacklist_size
from acme_ca.status.ocsp import ocsp_signing_problem
from acme_ca.va.perspectives import (
    MIN_DISTANCE_KM,
    MpicConfigError,
    load_mpic_setup,
)
from acme_ca.va.quorum import PHASES, phase_for
from acme_ca.va.settings import MpicSettings

#: BR 7.1.2.7: notBefore within 48 hours of the signing; the final certificate is signed at
#: most ``ct_deadline_seconds`` after its precertificate (whose notBefore it shares).
MAX_SIGNING_DELAY: Final = timedelta(hours=48)
#: Host names reserved for documentation and tests (RFC 2606, RFC 6761): never a real URL.
PLACEHOLDER_DOMAINS: Final = ("example.com", "example.net", "example.org")
PLACEHOLDER_TLDS: Final = ("example", "test", "invalid", "localhost", "local", "internal")


@dataclass(frozen=True)
class Invariant:
    """One production invariant: what it demands, the rule it comes from, what to set."""

    number: int
    id: str
    title: str
    clause: str
    keys: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.number} {self.id} ({self.clause})"


HSM_KEYS: Final = Invariant(
    1,
    "issuer-keys-in-hsm",
    "every issuer key is behind PKCS#11",
    "CP 6.2",
    ("pkcs11_module", "issuers.toml pkcs11_key_label"),
)
PERSPECTIVES: Final = Invariant(
    2,
    "mpic-perspectives",
    "remote perspectives: the date's minimum, 2 RIRs, 500 km from the primary",
    "BR 3.2.2.9",
    ("mpic_perspectives_file", "mpic_client_cert", "mpic_client_key", "mpic_server_ca"),
)
CT_LOGS: Final = Invariant(
    3,
    "ct-log-list",
    "a real CT log list that can meet the CT policy",
    "CP 4.3.1",
    ("ct_log_list",),
)
DNSSEC: Final = Invariant(
    4,
    "dnssec-required",
    "DNSSEC validation is not disabled",
    "BR 3.2.2.8.1",
    ("dnssec",),
)
HTTP01: Final = Invariant(
    5,
    "http01-port-80",
    "http-01 on port 80, loopback and private addresses refused",
    "BR 3.2.2.4.19",
    ("http01_port", "tlsalpn01_port", "allow_loopback_validation", "test_mode"),
)
WEAK_KEYS: Final = Invariant(
    6,
    "debian-weak-keys",
    "a Debian weak-key list covers every RSA size accepted",
    "BR 6.1.1.3",
    ("weak_key_blocklists",),
)
SIGNING_DELAY: Final = Invariant(
    7,
    "notbefore-48h",
    "ct_deadline_seconds + backdate_seconds under 48 hours",
    "BR 7.1.2.7",
    ("ct_deadline_seconds", "backdate_seconds"),
)
OCSP_SIGNER: Final = Invariant(
    8,
    "ocsp-signer",
    "OCSP is signed by a key allowed to (digitalSignature or OCSPSigning)",
    "BR 7.1.2.8",
    ("issuers.toml certificate",),
)
SERVER_AUTH_ONLY: Final = Invariant(
    9,
    "subordinate-eku-serverauth",
    "subordinate CA certificates are serverAuth-only",
    "Chrome Root Program Policy 1.8",
    ("issuers.toml certificate, chain, alternate_chains",),
)
REAL_URLS: Final = Invariant(
    10,
    "no-placeholder-urls",
    "status and terms URLs are real, not placeholders",
    "BR 4.10.2, 7.1.2.7.7; RFC 8555 §7.1.1",
    ("status_base_url", "terms_of_service", "issuers.toml crl_url, ocsp_url, ca_issuers_url"),
)
INVARIANTS: Final = (
    HSM_KEYS,
    PERSPECTIVES,
    CT_LOGS,
    DNSSEC,
    HTTP01,
    WEAK_KEYS,
    SIGNING_DELAY,
    OCSP_SIGNER,
    SERVER_AUTH_ONLY,
    REAL_URLS,
)


@dataclass(frozen=True)
class Context:
    """What every check sees: the configuration, the date, issuers.toml (or why not)."""

    config: Config
    at: datetime
    issuers: IssuersFile | None
    issuers_error: str


def _needs_issuers(
    check: Callable[[Context, IssuersFile], tuple[bool, str]],
) -> Callable[[Context], tuple[bool, str]]:
    def run(ctx: Context) -> tuple[bool, str]:
        if ctx.issuers is None:
            return False, ctx.issuers_error
        return check(ctx, ctx.issuers)

    return run


@_needs_issuers
def _hsm_keys(ctx: Context, parsed: IssuersFile) -> tuple[bool, str]:
    keys = [(f"issuers.{n}", e.key) for n, e in parsed.issuers.items()]
    keys += [(f"roots.{n}", e.key) for n, e in parsed.roots.items() if e.key is not None]
    software = [f"{name} ({key.key_file})" for name, key in keys if key.key_file is not None]
    problems = []
    if software:
        problems.append(f"software key files: {', '.join(software)}")
    if ctx.config.pkcs11_module is None:
        problems.append("pkcs11_module is not set")
    if problems:
        return False, "; ".join(problems)
    return True, (
        f"{len(keys)} key(s) in token {ctx.config.pkcs11_token_label!r} of "
        f"{ctx.config.pkcs11_module}"
    )


def _perspectives(ctx: Context) -> tuple[bool, str]:
    config = ctx.config
    phase = phase_for(ctx.at)
    need = (
        f"BR 3.2.2.9 requires {phase.min_remotes} from {phase.label}"
        if phase.enforced
        else "none required yet"
    )
    if config.test_perspectives:
        return False, "in-process test perspectives (--perspectives N) are not remote"
    if config.mpic_perspectives_file is None:
        return False, f"mpic_perspectives_file is not set: no corroboration ({need})"
    try:
        setup = load_mpic_setup(MpicSettings.from_config(config), ctx.at, strict=True)
    except MpicConfigError as e:
        return False, str(e)
    rirs = sorted({p.rir for p in setup.perspectives})
    upcoming = [
        f"; from {p.label} {p.min_remotes} are required and signing stops without them"
        for p in PHASES
        if p.since is not None and p.since > ctx.at and p.min_remotes > len(setup.perspectives)
    ][-1:]
    return True, (
        f"{len(setup.perspectives)} remote perspectives across {len(rirs)} RIRs "
        f"({', '.join(rirs)}), >= {MIN_DISTANCE_KM:.0f} km apart and from the primary; {need}"
        + "".join(upcoming)
    )


def _in_process_log_list(config: Config) -> Path:
    from acme_ca.testsrv.ct_logs_runner import log_list_path  # the test room, only its path

    return log_list_path(config)


def _read_log_list(path: Path) -> LogList:
    try:
        return parse_log_list(path.read_bytes())
    except OSError as e:
        raise LogListError(f"cannot read {path}: {e.strerror or e}") from e


def _ct_logs(ctx: Context) -> tuple[bool, str]:
    config = ctx.config
    path = config.ct_log_list
    if path is None:
        return False, (
            "ct_log_list is not set: in-process CT test logs would be started, "
            "whose SCTs no browser accepts"
        )
    in_process = _in_process_log_list(config)
    if path.resolve() == in_process.resolve():
        return False, f"{path} is the in-process CT test logs' list"
    try:
        log_list = _read_log_list(path)
    except LogListError as e:
        return False, f"ct_log_list {path}: {e}"
    if in_process.is_file():
        try:
            test_urls = {x.submission_url for x in _read_log_list(in_process).logs}
        except LogListError:
            test_urls = set()
        test_logs = [x.name for x in log_list.logs if x.submission_url in test_urls]
        if test_logs:
            return False, f"{path} names in-process CT test logs: {', '.join(test_logs)}"
    validity = max_validity(ctx.at)
    not_after = ctx.at + validity
    requirement = CtSettings.from_config(config).policy.requirement(validity)
    candidates = log_list.usable_for(not_after)
    if not requirement.satisfied_by(candidates):
        names = ", ".join(f"{x.name} ({x.operator})" for x in candidates) or "none"
        return False, (
            f"the usable logs covering notAfter {not_after.date().isoformat()} "
            f"({validity.days}-day certificates) cannot give {requirement.describe()}; "
            f"candidates: {names}"
        )
    return True, (
        f"{len(candidates)} usable logs from {len({x.operator for x in candidates})} operators "
        f"cover {validity.days}-day certificates: {requirement.describe()}"
    )


def _dnssec(ctx: Context) -> tuple[bool, str]:
    if ctx.config.dnssec != "require":
        return False, f"dnssec = {ctx.config.dnssec!r}: answers are taken unvalidated"
    if ctx.config.test_mode:
        return False, "test mode resolves through the challenge test server (no DNSSEC)"
    return True, f"dnssec = 'require' through {ctx.config.dns_resolver}"


def _http01(ctx: Context) -> tuple[bool, str]:
    config = ctx.config
    problems = []
    if config.http01_port != 80:
        problems.append(f"http01_port = {config.http01_port}, not 80")
    if "tls-alpn-01" in config.challenge_types and config.tlsalpn01_port != 443:
        problems.append(f"tlsalpn01_port = {config.tlsalpn01_port}, not 443 (BR 3.2.2.4.20)")
    if config.allow_loopback_validation:
        problems.append("allow_loopback_validation = true")
    if config.test_mode:
        problems.append("test_mode is on")
    if problems:
        return False, "; ".join(problems)
    return True, "http-01 connects to port 80; loopback and private addresses are refused"


def weak_key_coverage(paths: Iterable[Path]) -> tuple[frozenset[int], list[str]]:
    """The RSA sizes these openssl-blacklist files cover, and what is wrong with them
    (unreadable, malformed, a name that does not say its size)."""
    sizes: set[int] = set()
    problems: list[str] = []
    for path in paths:
        size = openssl_blacklist_size(path)
        if size is None:
            problems.append(
                f"{path}: the name does not say which RSA size it covers "
                "(Debian names them blacklist.RSA-<bits>)"
            )
            continue
        try:
            entries = load_openssl_blacklist(path)
        except (OSError, ValueError) as e:
            problems.append(f"{path}: {e}")
            continue
        if not entries:
            problems.append(f"{path}: holds no fingerprint")
            continue
        sizes.add(size)
    return frozenset(sizes), problems


def _weak_keys(ctx: Context) -> tuple[bool, str]:
    paths = [Path(p) for p in ctx.config.weak_key_blocklists]
    if not paths:
        return False, "weak_key_blocklists is empty: Debian weak keys would not be detected"
    covered, problems = weak_key_coverage(paths)
    accepted = covered & DEFAULT_RSA_SIZES
    if not accepted:
        problems.append(
            f"the lists cover none of the RSA sizes subscriber keys may have "
            f"({', '.join(str(s) for s in sorted(DEFAULT_RSA_SIZES))})"
        )
    if problems:
        return False, "; ".join(problems)
    refused = sorted(DEFAULT_RSA_SIZES - covered)
    return True, (
        f"RSA {', '.join(str(s) for s in sorted(covered))} checked against Debian lists"
        + (f"; RSA {', '.join(str(s) for s in refused)} refused (no list)" if refused else "")
    )


def _signing_delay(ctx: Context) -> tuple[bool, str]:
    config = ctx.config
    total = timedelta(seconds=config.ct_deadline_seconds + config.backdate_seconds)
    text = (
        f"ct_deadline_seconds + backdate_seconds = {int(total.total_seconds())} s "
        f"({total.total_seconds() / 3600:.1f} h)"
    )
    if total >= MAX_SIGNING_DELAY:
        return False, f"{text}: a final certificate could be signed 48 h after its notBefore"
    return True, f"{text} < 48 h"


@_needs_issuers
def _ocsp_signer(ctx: Context, parsed: IssuersFile) -> tuple[bool, str]:
    problems = [
        f"issuers.{name}: {problem}"
        for name, entry in parsed.issuers.items()
        if (problem := ocsp_signing_problem(entry.certificate)) is not None
    ]
    if problems:
        return False, "; ".join(problems) + "; no OCSP response is signed with such a key"
    return True, (
        f"{len(parsed.issuers)} issuer certificate(s) have digitalSignature "
        "(each issuer signs its own OCSP)"
    )


def _server_auth_only(cert: x509.Certificate) -> bool:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]


def _self_signed(cert: x509.Certificate) -> bool:
    if cert.subject != cert.issuer:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


@_needs_issuers
def _subordinate_eku(ctx: Context, parsed: IssuersFile) -> tuple[bool, str]:
    seen: dict[bytes, tuple[str, x509.Certificate]] = {}
    for name, entry in parsed.issuers.items():
        chains = (entry.chain, *entry.alternate_chains)
        for cert in (entry.certificate, *(c for chain in chains for c in chain)):
            if not _self_signed(cert):
                seen.setdefault(cert.fingerprint(hashes.SHA256()), (name, cert))
    bad = [
        f"{cert.subject.rfc4514_string()} (issuers.{name})"
        for name, cert in seen.values()
        if not _server_auth_only(cert)
    ]
    if bad:
        return False, "EKU is not exactly serverAuth: " + "; ".join(bad)
    return True, f"{len(seen)} subordinate CA certificate(s), each EKU serverAuth only"


def placeholder_problem(url: str) -> str | None:
    """Why ``url`` is not a real, public URL (a documentation or internal name), or None."""
    host = (urlsplit(url).hostname or "").rstrip(".").lower()
    if not host:
        return f"{url} has no host"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        return None if address.is_global else f"{url} names a non-public address"
    if "." not in host:
        return f"{url} names a single-label (internal) host"
    if any(host == d or host.endswith("." + d) for d in PLACEHOLDER_DOMAINS) or any(
        host == t or host.endswith("." + t) for t in PLACEHOLDER_TLDS
    ):
        return f"{url} is a documentation/reserved name (RFC 2606, RFC 6761)"
    return None


def _real_urls(ctx: Context) -> tuple[bool, str]:
    config, parsed = ctx.config, ctx.issuers
    defaults = Config()
    problems: list[str] = []
    urls: list[tuple[str, str]] = []
    if config.status_base_url == defaults.status_base_url:
        problems.append(f"status_base_url is the built-in default {config.status_base_url}")
    else:
        urls.append(("status_base_url", config.status_base_url))
    if not config.terms_of_service:
        problems.append("terms_of_service is not set: subscribers agree to no terms (BR 9.6.3)")
    elif config.terms_of_service == defaults.terms_of_service:
        problems.append(f"terms_of_service is the built-in default {config.terms_of_service}")
    else:
        urls.append(("terms_of_service", config.terms_of_service))
    if parsed is None:
        problems.append(f"the issuers' URLs are unknown: {ctx.issuers_error}")
    for name, entry in parsed.issuers.items() if parsed else ():
        urls += [
            (f"issuers.{name}.crl_url", entry.crl_url),
            (f"issuers.{name}.ca_issuers_url", entry.ca_issuers_url),
        ]
        if entry.ocsp_url is not None:
            urls.append((f"issuers.{name}.ocsp_url", entry.ocsp_url))
    for name, root in parsed.roots.items() if parsed else ():
        if root.crl_url is not None:
            urls.append((f"roots.{name}.crl_url", root.crl_url))
    for key, url in urls:
        problem = placeholder_problem(url)
        if problem is not None:
            problems.append(f"{key}: {problem}")
    if problems:
        return False, "; ".join(problems)
    return True, (
        f"{len(urls)} URLs, none a documentation or internal name "
        f"(status: {config.status_base_url})"
    )


CHECKS: Final[dict[str, Callable[[Context], tuple[bool, str]]]] = {
    HSM_KEYS.id: _hsm_keys,
    PERSPECTIVES.id: _perspectives,
    CT_LOGS.id: _ct_logs,
    DNSSEC.id: _dnssec,
    HTTP01.id: _http01,
    WEAK_KEYS.id: _weak_keys,
    SIGNING_DELAY.id: _signing_delay,
    OCSP_SIGNER.id: _ocsp_signer,
    SERVER_AUTH_ONLY.id: _subordinate_eku,
    REAL_URLS.id: _real_urls,
}
