#!/usr/bin/env bash
# Shared set-up for scripts/run.sh and scripts/test.sh on a fresh Debian machine:
# Debian packages when root (idempotent), then a virtualenv in .venv with the project.
# Usage: source scripts/bootstrap.sh [runtime|test]
set -euo pipefail

ACME_CA_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ACME_CA_ROOT"
profile="${1:-runtime}"

runtime_debs=(python3-venv openssl)
# prometheus: promtool checks and unit-tests deploy/prometheus/acme_ca_rules.yml.
# haproxy: the load balancer of integration/test_faults.py's two-front-end topology.
# patroni, etcd-server: integration/test_patroni.py's failover (a 2-node Patroni cluster on
# one etcd, Debian's PostgreSQL binaries); their services are not used (started by the test).
test_debs=(postgresql softhsm2 opensc unbound openssl iproute2 dnsutils curl lego dehydrated uacme pebble prometheus haproxy patroni etcd-server)

need_install=()
wanted=("${runtime_debs[@]}")
[ "$profile" = test ] && wanted+=("${test_debs[@]}")
for pkg in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_install+=("$pkg")
done
if [ "${#need_install[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "bootstrap: installing Debian packages: ${need_install[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${need_install[@]}" >/dev/null
    # The postgresql package starts a system cluster we do not use; the CA runs its own.
    command -v pg_ctlcluster >/dev/null && service postgresql stop >/dev/null 2>&1 || true
    # Likewise the Prometheus server the prometheus package starts: only promtool is used.
    command -v promtool >/dev/null && service prometheus stop >/dev/null 2>&1 || true
    # And etcd's: integration/test_patroni.py runs an etcd of its own on a free port.
    command -v etcd >/dev/null && service etcd stop >/dev/null 2>&1 || true
  else
    echo "bootstrap: not root; skipping Debian packages (${need_install[*]})." >&2
    echo "bootstrap: PostgreSQL falls back to the pgserver wheel's binaries." >&2
  fi
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.acme-ca-$profile-$(cat pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip >/dev/null
  if [ "$profile" = test ]; then
    .venv/bin/pip install -q -e '.[test]'
  else
    .venv/bin/pip install -q -e .
  fi
  touch "$stamp"
fi
export PATH="$ACME_CA_ROOT/.venv/bin:$PATH"

# Byte-code for the project's own modules, written now: where PYTHONDONTWRITEBYTECODE is set
# (CI images often set it) every `acme-ca` process would otherwise recompile about 200
# modules at each start, about 0.5 s of `serve --test --ephemeral`'s 1.5 s (issue 21 item 8).
# compileall writes regardless of that variable; a stale file is recompiled by mtime anyway.
.venv/bin/python -m compileall -q -j 0 acme_ca integration tests >/dev/null
