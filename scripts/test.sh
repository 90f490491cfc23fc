#!/usr/bin/env bash
# Set up and run every check CI runs: ruff (lint and format), mypy (acme_ca, tests and
# integration), import contracts, then the whole pytest suite (unit, component and integration
# tests against real PostgreSQL, SoftHSM2, DNS and HTTP servers on 127.0.0.1, and real ACME
# clients).
#
# pytest runs on pytest-xdist workers, one per core up to 4 (`-n auto --maxprocesses 4`): each
# worker is a process with its own PostgreSQL cluster, and the ports tests hand out stay apart
# between workers (tests/support/ports.py).  A module's tests stay on one worker
# (`--dist loadfile`), so its module-scoped fixtures (SoftHSM2 tokens, hierarchies) are made
# once.  On a 2-core machine like CI's this took pytest from 14 to about 8 minutes.  Arguments go to pytest after these (`-n 0` runs in one process, e.g.
# for `--pdb`); the 25 slowest tests are listed at the end to keep the suite's time in view.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh" test
echo "== ruff";          ruff check acme_ca tests integration
echo "== ruff format";   ruff format --check acme_ca tests integration
echo "== mypy";          mypy
echo "== import contracts"; lint-imports
echo "== pytest";        exec pytest -n auto --maxprocesses 4 --dist loadfile --durations 25 "$@"
