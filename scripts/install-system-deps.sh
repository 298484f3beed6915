#!/usr/bin/env bash
# Installs the Debian packages cigate's sandbox and test servers need, when running as root.
# --sandbox-only: just bubblewrap (what `make demo` needs). Without it: also PostgreSQL, nginx
# and Chromium (the gateway web page is tested in it, headless).
set -euo pipefail
want=(bubblewrap)
[ "${1:-}" = "--sandbox-only" ] || want+=(postgresql nginx-light chromium)
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "cigate: not root; please install: ${missing[*]} (the sandbox falls back to unisolated mode without bubblewrap)" >&2
  exit 0
fi
echo "cigate: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts a system nginx/postgresql on install; tests start their own on free ports.
for svc in nginx postgresql; do
  (service "$svc" stop >/dev/null 2>&1 || true)
done
