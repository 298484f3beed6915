#!/usr/bin/env bash
# Installs Azurite (the Azure Blob Storage emulator) locally for the storage test suite.
set -euo pipefail
[ -x node_modules/.bin/azurite-blob ] && exit 0
if ! command -v npm >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
  else
    echo "cigate: npm is missing; install Node.js 18+ for the Azurite storage tests" >&2; exit 1
  fi
fi
# Exactly what package-lock.json pins (npm ci refuses a lock that does not match package.json).
npm ci --no-audit --no-fund --silent
