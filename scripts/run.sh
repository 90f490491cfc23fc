#!/usr/bin/env bash
# Set up and run the CA on its embedded defaults: a private PostgreSQL under ./.acme-ca,
# HTTPS on https://127.0.0.1:14000/directory, trusting ./.acme-ca/tls/ca.pem.
# Extra arguments go to `acme-ca serve` (e.g. --listen 0.0.0.0:14000).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh" runtime
exec acme-ca serve "$@"
