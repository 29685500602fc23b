#!/bin/sh
# Creates the project's virtual environment and installs the package with the
# server and dev extras. Idempotent: re-running only upgrades what changed.
set -eu
py="$1"
venv="$2"
if ! command -v "$py" >/dev/null 2>&1; then
    echo "nigehbaan setup: $py not found; install Python 3.10 or newer" >&2
    exit 1
fi
"$py" - <<'PYEOF'
import sys
if sys.version_info < (3, 10):
    sys.exit(f"nigehbaan setup: Python 3.10+ needed, found {sys.version.split()[0]}")
PYEOF
if [ ! -x "$venv/bin/python" ]; then
    "$py" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -e '.[server,dev]'
