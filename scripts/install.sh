#!/usr/bin/env bash
# Install endoview into a virtual environment kept outside the checkout, and say where it is.
#
#   bash scripts/install.sh                           the viewer and the default models (no torch)
#   EXTRAS=train,seg bash scripts/install.sh          ... plus optional extras (pyproject.toml)
#   EXTRAS=train,dev,seg,batch bash scripts/install.sh    everything: what scripts/test.sh installs
#
# Extras: train (torch and torchvision: the torch backend and `endoview train`), seg (MMDetection
# 3.3 for the Cascade Mask R-CNN second pass; needs train), batch (Ray and pyarrow: annotate --ray
# and the Parquet log), dev (pytest, import-linter), gpu (TensorRT, pycuda).
#
# Each set of extras has its own environment, $cache/envs/<hash of pyproject.toml and this
# script>-<extras>, rebuilt only when the requirements change; otherwise this only points it at
# this checkout again (a few seconds). A link names the newest one of each set:
#   $cache/viewer      no extras (the quick start)
#   $cache/venv        at least train,dev,seg,batch (the test command's; scripts/test.sh uses it)
#   $cache/env-<extras>  any other set, e.g. $cache/env-seg-train
# where $cache is $ENDOVIEW_HOME, default ~/.cache/endoview. The last line printed names the
# environment's endoview.
#
# seg: PyPI has only mmcv 2.1.0's source (no wheel for torch 2.14), so it is built once into
# $cache/wheels (CPU ops, about 10.5 minutes on 2 cores, 2.9 GB peak memory; a lock keeps two
# installs from building it together) and reused by every later install. mmengine pulls the GUI
# opencv-python beside opencv-python-headless (both own cv2/, and the GUI one clashes with
# PySide6's Qt), so it is removed again and the headless one reinstalled.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${ENDOVIEW_HOME:-$HOME/.cache/endoview}"
python="${PYTHON:-python3}"
mmcv_version=2.1.0
full=(batch dev seg train)  # what the test command needs

# the extras as a set: sorted, without blanks or repeats ("train, seg" = "seg,train")
extras="$(tr ', ' '\n\n' <<<"${EXTRAS:-}" | sed '/^$/d' | sort -u | paste -sd, -)"
has() { case ",$extras," in *,"$1",*) return 0 ;; esac; return 1; }
if [ -z "$extras" ]; then
  link="$cache/viewer"
else
  link="$cache/venv"
  for extra in "${full[@]}"; do has "$extra" || link="$cache/env-${extras//,/-}"; done
fi

"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "endoview needs Python 3.11 or newer ($python is $("$python" --version 2>&1))" >&2; exit 1; }
# pip only warns about an extra the project does not have; refuse it here instead
"$python" - "$here/pyproject.toml" "$extras" <<'EOF' || exit 1
import sys, tomllib
known = tomllib.load(open(sys.argv[1], "rb"))["project"]["optional-dependencies"]
unknown = [e for e in sys.argv[2].split(",") if e and e not in known]
if unknown:
    sys.exit(f"endoview: unknown extra {', '.join(unknown)} in EXTRAS (known: {', '.join(known)})")
EOF

# pip's local mirror configuration warns about absent folders on every call: keep those out
quiet() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

# System packages, installed when missing and we are root on Debian/Ubuntu: two xcb libraries
# that Qt needs to open a window; with the dev extra also Xvfb (tests take screenshots of a real
# window on a virtual screen) and ffmpeg (command-line checks of the files written).
need=()
ldconfig -p 2>/dev/null | grep -q libxcb-icccm.so.4 || need+=(libxcb-icccm4)
ldconfig -p 2>/dev/null | grep -q libxcb-keysyms.so.1 || need+=(libxcb-keysyms1)
if has dev; then
  command -v Xvfb >/dev/null || need+=(xvfb)
  command -v ffprobe >/dev/null || need+=(ffmpeg)
fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "endoview: installing system packages: ${need[*]}" >&2
    apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 ||
      { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq "${need[@]}" >/dev/null; }
  else
    echo "endoview: optional system packages missing: ${need[*]} (headless commands run without them;" \
         "the window may not open, tests that need them skip)" >&2
  fi
fi

# mmcv wheel for the seg extra: $cache/wheels/mmcv-<version>-<python tag>-*.whl, built once
mmcv_wheel() {
  local tag
  tag="$("$python" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
  ls -1 "$cache/wheels/mmcv-$mmcv_version-$tag-$tag-"*.whl 2>/dev/null | head -n 1
}

build_mmcv_wheel() {
  # pip download the sdist, switch its C++ standard to C++20 (torch 2.14's headers need it), build
  # with setuptools < 81 (setup.py imports pkg_resources) against the torch that train pins, in a
  # throwaway venv. FORCE_CUDA=1 (with nvcc) adds the CUDA ops.
  local tmp torch_pin
  torch_pin="$(grep -o '"torch==[^"]*"' "$here/pyproject.toml" | head -n 1 | tr -d '"')"
  rm -rf "$cache"/wheels/.build.*  # a build that was killed (we hold the lock)
  tmp="$(mktemp -d "$cache/wheels/.build.XXXXXX")"
  echo "endoview: building mmcv $mmcv_version against $torch_pin (once, about 10 minutes)" >&2
  "$python" -m venv "$tmp/venv"
  quiet "$tmp/venv/bin/python" -m pip install -q "$torch_pin" numpy "setuptools<81" wheel ninja packaging
  quiet "$tmp/venv/bin/python" -m pip download -q --no-deps --no-binary :all: "mmcv==$mmcv_version" -d "$tmp/src"
  tar xzf "$tmp/src/mmcv-$mmcv_version.tar.gz" -C "$tmp"
  sed -i 's/-std=c++17/-std=c++20/g' "$tmp/mmcv-$mmcv_version/setup.py"
  grep -q -- '-std=c++20' "$tmp/mmcv-$mmcv_version/setup.py" || {
    echo "endoview: mmcv $mmcv_version's setup.py has no -std=c++17 to patch" >&2; return 1; }
  MAX_JOBS="${MAX_JOBS:-$(nproc)}" quiet "$tmp/venv/bin/python" -m pip wheel -q --no-build-isolation \
    --no-deps "$tmp/mmcv-$mmcv_version" -w "$tmp/dist"
  mv "$tmp"/dist/mmcv-*.whl "$cache/wheels/"
  rm -rf "$tmp"
}

ensure_mmcv_wheel() {
  mkdir -p "$cache/wheels"
  [ -n "$(mmcv_wheel)" ] && return 0
  exec 9>"$cache/wheels/.mmcv.lock"
  flock 9  # another install may be building it: wait, then look again
  [ -n "$(mmcv_wheel)" ] || build_mmcv_wheel
  exec 9>&-
  [ -n "$(mmcv_wheel)" ] || { echo "endoview: the mmcv $mmcv_version wheel was not built" >&2; exit 1; }
}

# one cv2: keep opencv-python-headless (the core dependency), drop the GUI opencv-python
headless_cv2() {
  local py="$1" version
  "$py" -m pip show opencv-python >/dev/null 2>&1 || return 0
  version="$("$py" -m pip show opencv-python-headless 2>/dev/null | sed -n 's/^Version: //p')"
  quiet "$py" -m pip uninstall -q -y opencv-python
  quiet "$py" -m pip install -q --force-reinstall --no-deps "opencv-python-headless${version:+==$version}"
}

name="${extras//,/-}"
key="$(cat "$here/pyproject.toml" "$here/scripts/install.sh" | sha256sum | cut -c1-16)-${name:-viewer}"
venv="$cache/envs/$key"
target="$here${extras:+[$extras]}"
mkdir -p "$cache/envs"
if [ ! -x "$venv/bin/endoview-ready" ]; then
  echo "endoview: building the environment in $venv (once per change of requirements)" >&2
  rm -rf "$venv"
  "$python" -m venv "$venv"
  quiet "$venv/bin/python" -m pip install -q --upgrade pip "setuptools>=77" wheel
  if has seg; then
    ensure_mmcv_wheel
    quiet "$venv/bin/python" -m pip install -q "$(mmcv_wheel)"
    quiet "$venv/bin/python" -m pip install -q --find-links "$cache/wheels" -e "$target"
    headless_cv2 "$venv/bin/python"
    "$venv/bin/python" -c 'import cv2, mmcv.ops, mmdet' || {
      echo "endoview: mmdet does not import in $venv; if mmcv.ops fails, remove $(mmcv_wheel) to rebuild it" >&2
      exit 1; }
  else
    quiet "$venv/bin/python" -m pip install -q -e "$target"
  fi
  printf '#!/bin/sh\n# marker: this environment finished installing\n' > "$venv/bin/endoview-ready"
  chmod +x "$venv/bin/endoview-ready"
  # keep the two newest environments of this set of extras (another checkout may use the older)
  ls -1dt "$cache"/envs/*-"${name:-viewer}"/ 2>/dev/null | grep -E "/[0-9a-f]{16}-${name:-viewer}/\$" |
    tail -n +3 | xargs -r rm -rf
else
  quiet "$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$here"
fi
ln -sfn "$venv" "$link"
echo "endoview: ready: $link/bin/endoview (${extras:+extras $extras, }environment $venv)" >&2
