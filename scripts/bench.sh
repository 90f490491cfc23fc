#!/usr/bin/env bash
# Benchmark acme_ca (production shape: own PostgreSQL, SoftHSM2, serve + separate worker)
# against Pebble, at 1, 5, 50 and 200 concurrent ACME clients; prints a Markdown table.
# Extra arguments go to `python -m integration.bench`, e.g.
#   scripts/bench.sh --json bench.json --markdown bench.md --workdir bench-logs
#   scripts/bench.sh --levels 1,5 --duration 10 --targets acme_ca
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# The test suite's set-up: as root, its Debian packages (pebble, softhsm2, postgresql among
# them) and the .venv with the project and its test extras (py-spy for profiling included).
source "$root/scripts/bootstrap.sh" test
exec .venv/bin/python -m integration.bench "$@"
