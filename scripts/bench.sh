#!/usr/bin/env bash
# Benchmark acme_ca (production shape: own PostgreSQL, SoftHSM2, serve + separate worker; the
# same with rate limits on and with five remote VAs; serve --test; the README shape)
# against Pebble and Smallstep's step-ca, at 1, 5, 50, 200 and 500 concurrent ACME clients;
# prints a Markdown table.  Extra arguments go to `python -m integration.bench`, e.g.
#   scripts/bench.sh --json bench.json --markdown bench.md --workdir bench-logs
#   scripts/bench.sh --levels 1,5 --duration 10 --targets acme_ca
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# The test suite's set-up: as root, its Debian packages (pebble, softhsm2, postgresql among
# them) and the .venv with the project and its test extras (py-spy for profiling included).
source "$root/scripts/bootstrap.sh" test

# The benchmark's own: step-ca's Go source and the Go toolchain that builds it (once, into
# ~/.cache/acme_ca-bench/step-ca; see integration/bench/step_ca.py).  Not part of CI.
bench_debs=(golang-go golang-github-smallstep-certificates-dev)
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
  else
    echo "bench: not root; step-ca cannot be built without ${missing[*]} (use --targets pebble,acme_ca)." >&2
  fi
fi
exec .venv/bin/python -m integration.bench "$@"
