#!/usr/bin/env bash
# Installs everything capture needs on a fresh Debian/Ubuntu machine: system packages (as root or
# through sudo), a virtualenv in .venv with the package and its test tools, and (unless
# --no-lerobot, as for `capture demo`, which does not need it) a second virtualenv in .venv-lerobot
# with the real LeRobot 0.6.1 on Python 3.12 that the tests load our datasets with. Safe to re-run:
# what is already there is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."

with_lerobot=1
for arg in "$@"; do
  case "$arg" in
    --no-lerobot) with_lerobot=0 ;;
    *) echo "usage: tools/setup.sh [--no-lerobot]" >&2; exit 2 ;;
  esac
done

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
.venv/bin/python -m pip install -q -c constraints.txt -e '.[test]'  # the versions CI tested

# A working Python 3.12 (pyenv's shims exist for versions not selected, so each is tried).
find_python312() {
  local candidates=()
  if command -v pyenv >/dev/null; then
    candidates+=("$(pyenv root)"/versions/3.12*/bin/python3.12)
  fi
  candidates+=("$(command -v python3.12 || true)")
  for candidate in "${candidates[@]}"; do
    if [ -x "$candidate" ] && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; then
      echo "$candidate"
      return
    fi
  done
}

# The real LeRobot for the conformance tests (tests/export/test_lerobot_real.py). It needs
# Python >= 3.12 and torch (~5 GB), so it lives in its own venv and the main one stays light.
LEROBOT_SPEC=("lerobot[dataset]==0.6.1" "lerobot-doctor==0.2.0")
if [ "$with_lerobot" = 1 ]; then
  if [ -x .venv-lerobot/bin/python ] \
      && .venv-lerobot/bin/python -c 'import importlib.metadata as m, sys; sys.exit(m.version("lerobot") != "0.6.1")' 2>/dev/null \
      && [ -x .venv-lerobot/bin/lerobot-doctor ]; then
    :  # present: nothing to do
  else
    py312="$(find_python312)"
    if [ -z "$py312" ] && command -v pyenv >/dev/null; then
      echo "setup: installing Python 3.12 through pyenv for LeRobot" >&2
      pyenv install -s 3.12
      py312="$(find_python312)"
    fi
    if [ -z "$py312" ]; then
      echo "setup: LeRobot needs Python 3.12 (install it, or pyenv); skipping .venv-lerobot" >&2
    else
      echo "setup: installing LeRobot 0.6.1 into .venv-lerobot (~5 GB with torch, a few minutes)" >&2
      "$py312" -m venv .venv-lerobot
      .venv-lerobot/bin/python -m pip install -q -c constraints-lerobot.txt "${LEROBOT_SPEC[@]}"
    fi
  fi
fi
echo "setup: ready (.venv/bin/capture)" >&2
