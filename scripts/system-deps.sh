#!/usr/bin/env bash
# System packages the tests need beyond PyPI: Debian's chromium for the report's browser test.
# Installs them when missing and this user can (root with apt-get); otherwise says what is missing.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: installing chromium (Debian package) for the report's browser test"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
  echo "system-deps: chromium is missing and cannot be installed here (needs root and apt-get);" \
       "the browser test will be skipped (it fails instead when CI=true)." >&2
fi
