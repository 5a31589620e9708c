#!/usr/bin/env bash
# Build MinkowskiEngine 0.5.4 CPU-only and install it into the project's .venv (optional sparse-conv backend).
#
# MinkowskiEngine has not been maintained since 2021: its setup.py needs numpy.distutils (numpy < 2, setuptools
# < 60) and its Python code imports `collections.Sequence` and `torch._six`, both gone from current Python and
# torch. This script fetches the sdist from a scratch venv that satisfies the old setup.py, patches those
# imports, builds a wheel against torch==2.13.0 (about 8 minutes on 2 cores) and caches it in
# $SPADE4D_WHEEL_CACHE (default ~/.cache/spade4d/wheels), so a second run on the same machine installs in seconds.
#
#   scripts/install_minkowski.sh            # uses .venv/bin/python
#   PYTHON=/path/to/python scripts/install_minkowski.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
CACHE=${SPADE4D_WHEEL_CACHE:-$HOME/.cache/spade4d/wheels}
VERSION=0.5.4
mkdir -p "$CACHE"

if "$PY" -c "import MinkowskiEngine" 2>/dev/null; then
    echo "MinkowskiEngine already importable from $PY"
    exit 0
fi

if ! dpkg -s libopenblas-dev >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq libopenblas-dev
fi

wheel=$(ls "$CACHE"/MinkowskiEngine-$VERSION-*.whl 2>/dev/null | head -n1 || true)
if [ -z "$wheel" ]; then
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    echo "building MinkowskiEngine $VERSION in $work (about 8 minutes)"
    python3 -m venv "$work/venv"
    "$work/venv/bin/pip" install -q torch==2.13.0
    "$work/venv/bin/pip" install -q "setuptools<60" "numpy<2" "wheel<0.43" ninja
    # the sdist's setup.py runs even to fetch it, hence the scratch venv and --no-build-isolation
    (cd "$work" && "$work/venv/bin/pip" download -q --no-deps --no-binary :all: --no-build-isolation \
        "minkowskiengine==$VERSION" -d dl)
    tar xzf "$work"/dl/MinkowskiEngine-$VERSION.tar.gz -C "$work"
    src="$work/MinkowskiEngine-$VERSION"
    # Python-side fixes for Python >= 3.10 and torch >= 2
    find "$src/MinkowskiEngine" -name '*.py' -print0 | xargs -0 sed -i \
        -e 's/^from collections import Sequence, namedtuple/from collections import namedtuple\nfrom collections.abc import Sequence/' \
        -e 's/^from collections import Sequence$/from collections.abc import Sequence/'
    sed -i 's/^from torch._six import container_abcs, istuple$/import collections.abc as container_abcs\nistuple = lambda x: isinstance(x, tuple)/' \
        "$src/MinkowskiEngine/utils/gradcheck.py"
    (cd "$src" && MAX_JOBS=${MAX_JOBS:-2} "$work/venv/bin/python" setup.py -q bdist_wheel --cpu_only --blas=openblas)
    cp "$src"/dist/MinkowskiEngine-$VERSION-*.whl "$CACHE"/
    wheel=$(ls "$CACHE"/MinkowskiEngine-$VERSION-*.whl | head -n1)
fi
"$PY" -m pip install -q --no-deps "$wheel"
"$PY" -c "import MinkowskiEngine as ME; print('MinkowskiEngine', ME.__version__, 'installed from $wheel')"
