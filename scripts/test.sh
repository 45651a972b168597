#!/usr/bin/env bash
# Install (or reuse) the environment, check the import contracts, then run the whole test suite
# offscreen.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$here/scripts/install.sh"
cd "$here"
venv="${ENDOVIEW_HOME:-$HOME/.cache/endoview}/venv"
# pyproject.toml [tool.importlinter]: layers, no Qt or inference library outside its place, no cycles
"$venv/bin/lint-imports" --no-cache --no-logo
export QT_QPA_PLATFORM=offscreen
exec "$venv/bin/python" -m pytest "$@"
