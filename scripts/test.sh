#!/usr/bin/env bash
# One command from a fresh clone to a full test run: setup, lint, types, then every test tier
# (unit, protocol over real sockets, end-to-end on the real Asterisk 22 with SIPp and PostgreSQL).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
echo "== ruff"; .venv/bin/ruff check callcenter tests bench
echo "== mypy"; .venv/bin/mypy
echo "== import layers"; .venv/bin/lint-imports
# The slowest tests are listed at the end: where the run's time goes (CI must stay well inside its limit).
echo "== pytest"; exec .venv/bin/python -m pytest -p no:cacheprovider -q --durations=15 "$@"
