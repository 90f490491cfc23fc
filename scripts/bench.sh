#!/usr/bin/env bash
# Benchmark acme_ca (production shape: own PostgreSQL, SoftHSM2, serve + separate worker)
# against Pebble, at 1, 5, 50 and 200 concurrent ACME clients; prints a Markdown table.
# Extra arguments go to `python -m integration.bench`, e.g.
#   scripts/bench.sh --json bench.json --markdown bench.md --workdir bench-logs
#   scripts/bench.sh --levels 1,5 --duration 10 --targets acme_ca
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# What the benchmark itself runs; bootstrap.sh below adds the test suite's packages.
bench_debs=(pebble softhsm2 postgresql)
missing=()
for pkg in "${bench_debs[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "bench: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
    # The postgresql package starts a system cluster we do not use; the CA runs its own.
    command -v pg_ctlcluster >/dev/null && service postgresql stop >/dev/null 2>&1 || true
  else
    echo "bench: not root; cannot install ${missing[*]} (the pebble target needs pebble)." >&2
  fi
fi

# The same virtualenv as scripts/test.sh (.venv with the project and its test extras).
source "$root/scripts/bootstrap.sh" test
exec .venv/bin/python -m integration.bench "$@"
