#!/usr/bin/env bash
# One command for an NVIDIA machine, no network needed: what endoview's GPU paths do here.
#   scripts/gpu-check.sh [--out DIR] [--parts env,contract,plans,latency,bench,cascade] [--device cuda:N]
# Writes DIR/gpu-check.json (default DIR: ./gpu-check-out) and prints a table, within 8 minutes;
# see scripts/gpu_check.py for the parts. Installs nothing. Without an NVIDIA GPU it prints one
# line, writes {"gpu": null} and exits 0.
# Python: endoview's venv (scripts/install.sh) when it exists, else python3 from PATH; either
# way this checkout comes first on PYTHONPATH, so a copy of the working tree runs as it is.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${ENDOVIEW_HOME:-$HOME/.cache/endoview}/venv"
if [ -x "$venv/bin/python" ]; then
  python="$venv/bin/python"
else
  python="$(command -v python3 || true)"
  [ -n "$python" ] || { echo "gpu-check: no python3 on PATH and no venv at $venv" >&2; exit 2; }
fi
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
# 8 minutes in all: the parts stop themselves earlier; this is the backstop
exec timeout --kill-after=10 480 "$python" "$here/scripts/gpu_check.py" "$@"
