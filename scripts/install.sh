#!/usr/bin/env bash
# Install endoview and everything it needs into a virtual environment kept outside the checkout:
#   ~/.cache/endoview/venv-<hash of the requirements>  (and a link ~/.cache/endoview/venv to it)
# The environment is rebuilt only when pyproject.toml or this script changes; otherwise this only
# points the existing environment at this checkout (a few seconds).
# Extras: EXTRAS="train,dev" by default (torch and torchvision for the torch backend and train/).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${ENDOVIEW_HOME:-$HOME/.cache/endoview}"
extras="${EXTRAS:-train,dev}"
python="${PYTHON:-python3}"

"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "endoview needs Python 3.11 or newer ($python is $("$python" --version 2>&1))" >&2; exit 1; }

# pip's local mirror configuration warns about absent folders on every call: keep those out
quiet() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

# System packages: Xvfb and two xcb libraries for a real window on a virtual screen (tests take
# a screenshot), ffmpeg for command-line checks. Installed when missing and we are root.
need=()
command -v Xvfb >/dev/null || need+=(xvfb)
command -v ffprobe >/dev/null || need+=(ffmpeg)
ldconfig -p 2>/dev/null | grep -q libxcb-icccm.so.4 || need+=(libxcb-icccm4)
ldconfig -p 2>/dev/null | grep -q libxcb-keysyms.so.1 || need+=(libxcb-keysyms1)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "endoview: installing system packages: ${need[*]}" >&2
    apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 ||
      { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq "${need[@]}" >/dev/null; }
  else
    echo "endoview: optional system packages missing: ${need[*]} (the window still runs on a desktop;" \
         "tests that need them skip)" >&2
  fi
fi

key="$(cat "$here/pyproject.toml" "$here/scripts/install.sh" | sha256sum | cut -c1-16)-${extras//,/-}"
venv="$cache/venv-$key"
mkdir -p "$cache"
if [ ! -x "$venv/bin/endoview-ready" ]; then
  echo "endoview: building the environment in $venv (once per change of requirements)" >&2
  rm -rf "$venv"
  "$python" -m venv "$venv"
  quiet "$venv/bin/python" -m pip install -q --upgrade pip "setuptools>=77" wheel
  quiet "$venv/bin/python" -m pip install -q -e "$here[$extras]"
  printf '#!/bin/sh\n# marker: this environment finished installing\n' > "$venv/bin/endoview-ready"
  chmod +x "$venv/bin/endoview-ready"
  # keep the two newest environments, remove older ones
  ls -1dt "$cache"/venv-*/ 2>/dev/null | tail -n +3 | xargs -r rm -rf
else
  quiet "$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$here"
fi
ln -sfn "$venv" "$cache/venv"
echo "endoview: environment ready: $cache/venv (endoview is $cache/venv/bin/endoview)" >&2
