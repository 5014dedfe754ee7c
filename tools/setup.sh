#!/usr/bin/env bash
# Installs everything capture needs on a fresh Debian/Ubuntu machine: system packages (as root or
# through sudo) and a virtualenv in .venv with the package and its test tools. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

packages=(xvfb x11-utils xdotool ffmpeg minetest minetest-data libgl1-mesa-dri libgl1 libglib2.0-0
          obs-studio chromium
          postgresql   # the collector tests start a throwaway PostgreSQL cluster of their own
          dbus-daemon) # the agent's notification tests start a private session bus
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then packages+=(python3-venv); fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'
echo "setup: ready (.venv/bin/capture)" >&2
