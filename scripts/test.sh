#!/usr/bin/env bash
# Set up and run every check CI runs: ruff (lint and format), mypy (acme_ca, tests and
# integration), import contracts, then the whole pytest suite (unit, component and integration
# tests against real PostgreSQL, SoftHSM2, DNS and HTTP servers on 127.0.0.1, and real ACME
# clients).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh" test
echo "== ruff";          ruff check acme_ca tests integration
echo "== ruff format";   ruff format --check acme_ca tests integration
echo "== mypy";          mypy
echo "== import contracts"; lint-imports
echo "== pytest";        exec pytest "$@"
