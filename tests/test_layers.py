"""The layers of README's "Where things live" map, checked against the imports of every module:
model code knows nothing of Lightning, training code nothing of files and configs, data code
nothing of models, and only the entry points know Hydra."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "abswin"
THIRD_PARTY = {  # besides the standard library
    "models": {"torch"},
    "checkpoint": {"torch", "safetensors"},
    "analysis": {"torch", "PIL", "matplotlib", "numpy"},
    "optim.py": {"torch"},
    "batch.py": {"torch"},
    "seeding.py": {"numpy"},
    "training": {"torch", "lightning", "torchmetrics", "torchvision", "numpy", "PIL", "fsspec", "wandb"},
    "data": {"torch", "torchvision", "lightning", "numpy", "PIL", "decord", "av", "mlxtend"},
    "run_directory.py": set(),
    "pretrained.py": {"torch", "huggingface_hub"},  # huggingface_hub: only for timm's files, imported when used
}
OURS = {  # which of our own layers each may use (itself always)
    "models": set(),
    "checkpoint": {"models"},
    "analysis": {"models", "checkpoint"},
    "optim.py": set(),
    "batch.py": set(),
    "seeding.py": set(),
    "training": {"models", "optim", "batch", "seeding", "analysis"},
    "data": {"batch", "seeding"},
    "run_directory.py": set(),
    "pretrained.py": set(),
}


def _imports(path: Path) -> set[str]:
    """Top-level names of everything a module imports (relative imports made absolute)."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
                names |= {module} if node.module else {f"{module}.{a.name}" for a in node.names}
            else:
                names.add(node.module)
    return names


def _layer_files(layer: str) -> list[Path]:
    target = PACKAGE / layer
    return sorted(target.rglob("*.py")) if target.is_dir() else [target]


@pytest.mark.parametrize("layer", sorted(THIRD_PARTY))
def test_each_layer_imports_only_what_the_map_allows(layer):
    own = layer.removesuffix(".py")
    allowed_ours = {f"abswin.{name}" for name in OURS[layer] | {own}}
    bad = []
    for path in _layer_files(layer):
        for name in _imports(path):
            top = name.split(".")[0]
            if top == "abswin":
                second = ".".join(name.split(".")[:2])
                if second not in allowed_ours:
                    bad.append(f"{path.relative_to(PACKAGE)} imports {name}")
            elif top not in sys.stdlib_module_names and top not in THIRD_PARTY[layer] and top != "__future__":
                bad.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert not bad, "\n".join(bad)


def test_the_map_covers_every_module():
    """A new module or folder must find its place in the map (and README's table)."""
    entry_points = {"__init__.py", "launch.py", "cli.py", "evaluate.py", "convert.py", "analyze.py", "conf"}
    listed = set(THIRD_PARTY) | entry_points
    present = {p.name for p in PACKAGE.iterdir() if not p.name.startswith((".", "_")) or p.name == "__init__.py"}
    present = {p for p in present if p.endswith(".py") or (PACKAGE / p).is_dir()} - {"__pycache__"}
    assert present <= listed, present - listed
