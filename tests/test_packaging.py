"""What `pip install abswin[...]` gives: the model library alone, needing no training stack; the
application (conf/, datamodules/, training/, the entry points) runs from a clone, from any directory."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from launching import ROOT, clean_env


def test_the_model_library_imports_without_the_training_stack():
    code = ("import sys, torch, abswin; abswin.create_model('hiera_atto_224', img_size=64)(torch.randn(1, 3, 64, 64)); "
            "loaded = [m for m in ('lightning', 'hydra', 'omegaconf', 'wandb', 'decord', 'av') if m in sys.modules]; "
            "print(loaded); sys.exit(bool(loaded))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=clean_env(Path("unused")))
    assert out.returncode == 0, out.stdout + out.stderr


def test_wheel_ships_the_library_alone(tmp_path):
    source = tmp_path / "source"  # a copy: building writes build/ and *.egg-info next to the sources
    shutil.copytree(ROOT / "abswin", source / "abswin", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path)], check=True, capture_output=True)
    wheel = zipfile.ZipFile(next(tmp_path.glob("abswin-*.whl")))
    names = set(wheel.namelist())
    library = {p.relative_to(ROOT).as_posix() for p in (ROOT / "abswin").rglob("*.py")}
    assert library and library <= names
    assert not [n for n in names if n.startswith(("conf/", "datamodules/", "training/", "tests/", "bench/"))]
    assert not [n for n in names if n.endswith(".yaml")]
    meta = next(wheel.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    requires = [line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    core = [r for r in requires if "extra ==" not in r]
    assert sorted(r.split(">")[0] for r in core) == ["numpy", "safetensors", "torch", "torchvision"]
    assert not [r for r in requires if "==" in r.split(";")[0] and "hiera-transformer" not in r]  # lower bounds only
    for extra in ("train", "video", "demo", "test"):
        assert f"Provides-Extra: {extra}" in meta
    assert not [n for n in names if n.endswith("entry_points.txt")]  # no console scripts: the app runs from a clone


@pytest.mark.slow
def test_train_py_trains_from_any_directory(tmp_path):
    """``python /path/to/clone/train.py`` from another folder: the configs beside it compose, one
    step runs on the demo data, and the run directory lands under the working directory."""
    cmd = [sys.executable, str(ROOT / "train.py"), "trainer.max_steps=1", "trainer.limit_val_batches=1", "run_name=cli",
           "trainer.enable_progress_bar=false", "data.num_workers=0"]
    env = clean_env(tmp_path)
    env.pop("ABSWIN_OUTPUT_ROOT")
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = tmp_path / "outputs" / "pretrain" / "cli"
    assert (run_dir / "results.json").is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "train.log").is_file()
