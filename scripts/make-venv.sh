#!/usr/bin/env bash
# Creates the project's virtual environment. On Debian the stock python3 needs the python3-venv
# package for `python -m venv`; install it when running as root, else say what is missing.
set -euo pipefail
python=${1:-python3}
venv=${2:-.venv}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "cigate needs Python 3.11 or newer; $python is $("$python" --version 2>&1)" >&2
  exit 1
fi
if ! "$python" -m venv "$venv" 2>/dev/null; then
  rm -rf "$venv"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    ver=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq "python${ver}-venv" >/dev/null 2>&1 || apt-get install -y -qq python3-venv >/dev/null
    "$python" -m venv "$venv"
  else
    echo "cigate: '$python -m venv' failed; install your distribution's python3-venv package" >&2
    exit 1
  fi
fi
# pip itself is pinned in the lock the Makefile installs next; nothing is upgraded here.
