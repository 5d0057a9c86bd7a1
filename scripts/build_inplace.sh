#!/usr/bin/env bash
# Developer build: compile miprun._core next to the sources so that
# `PYTHONPATH=python` picks it up without reinstalling the package.
# Usage: scripts/build_inplace.sh [build-dir]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bdir=${1:-$root/build/inplace}
cmake -S "$root" -B "$bdir" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -Dpybind11_DIR="$(python -m pybind11 --cmakedir)" >/dev/null
cmake --build "$bdir"
lib=$(ls "$bdir"/_core*.so | head -n1)
# copy then rename so a concurrent import never sees a half-written file
cp "$lib" "$root/python/miprun/.$(basename "$lib").tmp"
mv "$root/python/miprun/.$(basename "$lib").tmp" "$root/python/miprun/$(basename "$lib")"
echo "built $(basename "$lib")"
