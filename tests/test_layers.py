"""The layers of README's "Where things live" map, checked against the imports of every module:
the library (abswin/) knows nothing of Lightning, Hydra or the application; model code knows
nothing of checkpoints' files; data code nothing of models or training; training code nothing of
files and configs; only the entry points and the modules that turn a composed config into a run
(CONFIG_AWARE) know Hydra."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
THIRD_PARTY = {  # besides the standard library
    "abswin/models": {"torch"},
    "abswin/checkpoint": {"torch", "safetensors"},
    "abswin/analysis": {"torch", "PIL", "matplotlib", "numpy"},
    "abswin/optim.py": {"torch"},
    "abswin/batch.py": {"torch"},
    "abswin/seeding.py": {"numpy"},
    "abswin/normalization.py": {"torch"},
    "abswin/pretrained.py": {"torch", "huggingface_hub"},  # huggingface_hub: only for timm's files, when used
    "abswin/convert.py": {"torch", "safetensors"},
    "abswin/export.py": {"torch", "safetensors", "huggingface_hub"},  # huggingface_hub: only to push
    "abswin/exported.py": {"torch"},
    "abswin/__init__.py": set(),
    "datamodules": {"torch", "torchvision", "lightning", "numpy", "PIL", "decord", "av", "torchcodec", "mlxtend",
                    "tqdm"},
    "training": {"torch", "lightning", "torchmetrics", "torchvision", "numpy", "PIL", "fsspec", "wandb",
                 "hydra", "omegaconf"},
}
OURS = {  # which of our own packages and modules each may use (itself always)
    "abswin/models": set(),
    "abswin/checkpoint": {"abswin.models"},
    "abswin/analysis": {"abswin.models", "abswin.checkpoint", "abswin.normalization"},
    "abswin/optim.py": set(),
    "abswin/batch.py": set(),
    "abswin/seeding.py": set(),
    "abswin/normalization.py": set(),
    "abswin/pretrained.py": {"abswin.normalization"},
    "abswin/convert.py": {"abswin"},  # a command: the package it converts with
    "abswin/export.py": {"abswin"},  # a command: the package it exports with
    "abswin/exported.py": {"abswin.checkpoint", "abswin.models", "abswin.pretrained"},
    "abswin/__init__.py": {"abswin.checkpoint", "abswin.exported", "abswin.models", "abswin.pretrained"},
    "datamodules": {"abswin.batch", "abswin.seeding", "abswin.normalization"},
    "training": {"abswin"},  # the library, never the data modules (batches arrive as abswin.batch.Batch)
}
# the only modules of training/ that may know Hydra and OmegaConf: they turn a composed config into objects
CONFIG_AWARE = {"training/config.py", "training/evaluation.py", "training/failures.py", "training/run_logs.py",
                "training/recipe.py"}


def _imports(path: Path) -> set[str]:
    """Full names of everything a module imports (relative imports made absolute)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
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
    target = ROOT / layer
    return sorted(target.rglob("*.py")) if target.is_dir() else [target]


def _own(layer: str) -> str:
    return layer.removesuffix(".py").removesuffix("/__init__").replace("/", ".")


@pytest.mark.parametrize("layer", sorted(THIRD_PARTY))
def test_each_layer_imports_only_what_the_map_allows(layer):
    ours = {"abswin", "datamodules", "training"}
    allowed = OURS[layer] | {_own(layer)}
    bad = []
    for path in _layer_files(layer):
        rel = path.relative_to(ROOT).as_posix()
        for name in _imports(path):
            top = name.split(".")[0]
            if top in ours:
                if not any(name == a or name.startswith(a + ".") for a in allowed):
                    bad.append(f"{rel} imports {name}")
            elif top in ("hydra", "omegaconf") and rel not in CONFIG_AWARE:
                bad.append(f"{rel} imports {name} (only the entry points and {sorted(CONFIG_AWARE)} know Hydra)")
            elif top not in sys.stdlib_module_names and top not in THIRD_PARTY[layer] and top != "__future__":
                bad.append(f"{rel} imports {name}")
    assert not bad, "\n".join(bad)


def test_the_map_covers_every_module():
    """A new module or folder of the library must find its place in the map (and README's table)."""
    listed = {Path(layer).name for layer in THIRD_PARTY if layer.startswith("abswin/")}
    present = {p.name for p in (ROOT / "abswin").iterdir() if p.suffix == ".py" or (p.is_dir() and p.name != "__pycache__")}
    assert present <= listed, present - listed


def test_the_top_level_is_the_cards():
    """The card's layout: conf/ abswin/ datamodules/ train.py finetune.py notebooks/ tests/ Dockerfile."""
    for name in ("conf", "abswin", "datamodules", "notebooks", "tests", "training"):
        assert (ROOT / name).is_dir(), name
    for name in ("train.py", "finetune.py", "eval.py", "Dockerfile"):
        assert (ROOT / name).is_file(), name
