#!/usr/bin/env bash
# Debian packages the test suite needs: headless Chromium and its driver for the browser
# tests (tests/service/test_browser.py). Idempotent: quiet and instant when both are there.
set -euo pipefail

packages=(chromium chromium-driver)
missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed"; then
    missing+=("$package")
  fi
done
[ "${#missing[@]}" -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "system_deps: missing Debian packages: ${missing[*]}; apt-get not found, install them by hand" >&2
  exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "system_deps: missing Debian packages: ${missing[*]}; run as root (or: sudo apt-get install -y ${missing[*]})" >&2
  exit 1
fi

echo "system_deps: installing ${missing[*]} (apt-get)"
export DEBIAN_FRONTEND=noninteractive
log="$(mktemp)"
if ! { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
  tail -n 30 "$log" >&2
  rm -f "$log"
  echo "system_deps: apt-get failed installing ${missing[*]}; output above" >&2
  exit 1
fi
rm -f "$log"
echo "system_deps: done ($(/usr/bin/chromium --version 2>/dev/null || echo chromium))"
