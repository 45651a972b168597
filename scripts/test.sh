#!/usr/bin/env bash
# Install (or reuse) the environment, then run the whole test suite offscreen.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$here/scripts/install.sh"
cd "$here"
export QT_QPA_PLATFORM=offscreen
exec "${ENDOVIEW_HOME:-$HOME/.cache/endoview}/venv/bin/python" -m pytest "$@"
