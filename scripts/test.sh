#!/usr/bin/env bash
# Install (or reuse) the environment with every extra the tests need (train,dev,seg,batch, plus
# any in $EXTRAS), check the import contracts, then run the whole test suite offscreen.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EXTRAS="train,dev,seg,batch${EXTRAS:+,$EXTRAS}" bash "$here/scripts/install.sh"
cd "$here"
# scripts/install.sh links the newest environment with at least those extras here
venv="${ENDOVIEW_HOME:-$HOME/.cache/endoview}/venv"
# pyproject.toml [tool.importlinter]: layers, no Qt or inference library outside its place, no cycles
"$venv/bin/lint-imports" --no-cache --no-logo
export QT_QPA_PLATFORM=offscreen
exec "$venv/bin/python" -m pytest "$@"
