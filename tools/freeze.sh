#!/usr/bin/env bash
# Rewrites constraints.txt and constraints-lerobot.txt from fresh virtualenvs, after a dependency
# change: run it, run the whole suite, and commit the two files together.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install -q --upgrade pip
"$tmp/venv/bin/python" -m pip install -q -e '.[test]'
{ echo "# Versions the test suite passed with (pip freeze of a fresh .venv). tools/setup.sh installs"
  echo "# with -c constraints.txt so a fresh machine gets these; regenerate with tools/freeze.sh."
  "$tmp/venv/bin/python" -m pip freeze --exclude-editable; } > constraints.txt
if [ -x .venv-lerobot/bin/python ]; then
  { echo "# Versions in .venv-lerobot the LeRobot conformance tests passed with (see tools/setup.sh)."
    .venv-lerobot/bin/python -m pip freeze; } > constraints-lerobot.txt
fi
echo "freeze: wrote the constraints files" >&2
