#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian machine: system packages, the venv, the test PBX.
# Idempotent and quiet when everything is already there; sourced by demo.sh and test.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# debootstrap builds the Asterisk 22 chroot; sip-tester is SIPp; postgresql gives the server binaries the
# tests start themselves; espeak-ng/sox regenerate prompts; chromium drives the console tests.
APT_PACKAGES=(debootstrap sip-tester postgresql espeak-ng sox chromium chromium-driver python3-venv ca-certificates)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts a system cluster on install; the tests run their own throwaway clusters instead.
  $SUDO systemctl disable --now postgresql >/dev/null 2>&1 || true
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
stamp=".venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "setup: installing Python packages"
  .venv/bin/pip install -q --disable-pip-version-check -U pip
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
  rm -f .venv/.installed-*; touch "$stamp"
fi

# The Asterisk 22 chroot (~540 MB) lives in a cache outside the repo and is built once.
.venv/bin/python -m callcenter.pbx build
