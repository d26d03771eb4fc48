#!/usr/bin/env bash
# Bundle what a GPU machine without network access needs to run fastload's GPU check: DALI for
# CUDA 13 and its codec wheels, lmdb and py-spy (torch, CuPy, h5py, OpenCV are assumed there),
# unpacked for one Python version, trimmed of the other Pythons' extension modules and of
# nvCOMP's command-line tool and headers, as one tar.xz split into PARTS equal parts.
#
#   bash benchmarks/offline/bundle.sh [OUT_DIR] [PARTS] [PYTHON_VERSION]    # default .devparts 3 3.12
#
# 2026-12-04: 537 MB unpacked, 182 MB as tar.xz (xz -6, ~90 s on 2 cores): 3 parts of ~61 MB
# (the wheels as they are, zip-compressed, were 270 MB: 5 parts of 55 MB). On the target, in the
# project's root, with the parts copied to /tmp/fl/:  source benchmarks/offline/setup.sh
set -euo pipefail
out=${1:-.devparts}
parts=${2:-3}
py=${3:-3.12}
tag=cp${py/./}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
plat="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_5_x86_64"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$py" --implementation cp $plat -d "$work/wheels" \
  nvidia-dali-cuda130==2.4.0 "nvidia-nvimgcodec-cu13>=0.9,<0.10" nvidia-libnvcomp-cu13==5.3.0.16 \
  nvidia-nvjpeg nvidia-nvjpeg2k-cu13 nvidia-nvtiff-cu13 astunparse gast optree nvtx makefun "libcst~=1.8" lmdb py-spy
python3 - "$work/wheels" "$work/site" <<'PY'
import glob, sys, zipfile
for wheel in sorted(glob.glob(sys.argv[1] + "/*.whl")):
    zipfile.ZipFile(wheel).extractall(sys.argv[2])
PY
find "$work/site" -name "*cpython-3*" ! -name "*cpython-${tag#cp}-*" -delete
rm -rf "$work/site/nvidia/libnvcomp/bin" "$work/site/nvidia/libnvcomp/include"
mkdir -p "$out" && rm -f "$out"/part.*
tar cf - -C "$work" site | xz -T0 -6 > "$work/site.tar.xz"
split -n "$parts" -d "$work/site.tar.xz" "$out/part."
ls -la "$out"
