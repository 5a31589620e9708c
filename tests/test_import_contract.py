"""The package's imports run one way: core (structures, io, rle, vocab, geometry, batch, provenance) <- data <-
models <- inference <- training (its validation pass predicts) <- demo/cli; evaluation needs only the core.
Checked on the source (every import statement, function-level ones included), so a new back edge fails here
instead of growing into a cycle."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "spade4d"
LAYER = {  # what each part may import from spade4d (besides itself)
    "core": {"core"},
    "data": {"core", "data"},
    "evaluation": {"core", "evaluation"},
    "models": {"core", "data", "models"},
    "inference": {"core", "data", "models", "evaluation", "inference"},
    "training": {"core", "data", "models", "evaluation", "inference", "training"},
    "viz": {"core", "data", "evaluation", "viz"},
    "cli": {"core", "data", "models", "evaluation", "inference", "training", "viz", "cli"},
}


CORE = ("structures", "io", "rle", "vocab", "geometry", "batch", "config", "version", "provenance")


def part_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in CORE:
        return "core"
    if parts[1] in ("cli", "cli_types", "cli_viz", "cli_video", "demo", "__init__"):
        return "cli"
    return parts[1]


def imports_of(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("spade4d"):
            out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("spade4d")]
    return out


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        yield ".".join(rel.parts), path


@pytest.mark.parametrize("module, path", list(modules()), ids=lambda x: str(x) if isinstance(x, str) else "")
def test_imports_run_one_way(module, path):
    mine = part_of(module)
    allowed = LAYER[mine]
    bad = [
        f"{path.name}:{line} imports {m} ({part_of(m)})" for line, m in imports_of(path) if part_of(m) not in allowed
    ]
    assert not bad, f"{module} ({mine}) may import only {sorted(allowed)}: " + "; ".join(bad)
