#!/usr/bin/env bash
# One command from a fresh clone to a running demo: setup, then the test PBX (Asterisk 22 with two
# SIPp call-takers) and the callcenter app on the embedded SQLite database. Ctrl-C stops everything.
# In another terminal: `.venv/bin/callcenter call 112` places a test call.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
export CALLCENTER_LOG_JSON="${CALLCENTER_LOG_JSON:-false}"
exec .venv/bin/callcenter demo "$@"
