"""A diverging run never ends "successfully" and never writes NaN weights over a good checkpoint."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
from PIL import Image

import abswin
from abswin import CheckpointError
from datamodules import collate_images
from training import FinetuneModule, NonFiniteError, NonFiniteGuard, RunCheckpoint
from recipe_modules import finetune_module  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _module(**kw) -> FinetuneModule:
    return finetune_module("hiera_atto_224", {"img_size": 64}, num_classes=3, lr=1e-3, batch_size=4,
                          mixup=0.0, cutmix=0.0, warmup_epochs=0, **kw)


def _nan_grads(module: FinetuneModule) -> None:
    for p in module.parameters():
        p.grad = torch.full_like(p, float("nan"))


TRAINER = SimpleNamespace(global_step=0, precision_plugin=SimpleNamespace())  # what the guard reads


def test_a_nan_gradient_stops_or_is_skipped_as_configured():
    module = _module()
    _nan_grads(module)
    with pytest.raises(NonFiniteError, match=r"^step 0: the loss is nan and the gradient norm nan: .*"
                                             r"skip such steps with callbacks\.nonfinite\.max_skips=N\)$"):
        NonFiniteGuard(max_skips=0).on_before_optimizer_step(TRAINER, module, None)

    guard = NonFiniteGuard(max_skips=2)
    for _ in range(2):  # skipped: no gradient left, so AdamW leaves every weight as it is
        _nan_grads(module)
        guard.on_before_optimizer_step(TRAINER, module, None)
        assert all(p.grad is None for p in module.parameters())
    _nan_grads(module)
    with pytest.raises(NonFiniteError):
        guard.on_before_optimizer_step(TRAINER, module, None)

    for p in module.parameters():  # a finite gradient is left alone
        p.grad = torch.ones_like(p)
    NonFiniteGuard(max_skips=0).on_before_optimizer_step(TRAINER, module, None)
    assert all(p.grad is not None for p in module.parameters())
    with pytest.raises(ValueError, match="max_skips=-1"):
        NonFiniteGuard(max_skips=-1)


def _loader(n: int = 8):
    images = torch.randn(n, 3, 64, 64)
    items = list(zip(images, (torch.arange(n) % 3).tolist(), range(n)))  # (image, label, index)
    return torch.utils.data.DataLoader(items, batch_size=4, collate_fn=collate_images)


class NaNGradientAt(pl.Callback):
    """Makes the gradient of the given global steps NaN."""

    def __init__(self, steps):
        self.steps = set(steps)

    def on_after_backward(self, trainer, pl_module):
        if trainer.global_step in self.steps:
            _nan_grads(pl_module)


def _fit(tmp_path, guard, nan_steps, max_steps, ckpt_path=None):
    trainer = pl.Trainer(accelerator="cpu", max_steps=max_steps, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0,
                         callbacks=[NaNGradientAt(nan_steps), guard, RunCheckpoint(dirpath=tmp_path, filename="last",
                                                                                every_n_train_steps=1,
                                                                                enable_version_counter=False)])
    trainer.fit(_module(), train_dataloaders=_loader(), ckpt_path=ckpt_path)
    return trainer


@pytest.mark.filterwarnings("ignore:.*step skipped")
def test_the_skip_count_survives_a_resume(tmp_path):
    """max_skips is for the whole run: a resumed run continues the count in last.ckpt."""
    guard = NonFiniteGuard(max_skips=2)
    _fit(tmp_path, guard, nan_steps={1}, max_steps=3)
    assert guard.skipped == 1
    last = tmp_path / "last.ckpt"
    assert torch.load(last, weights_only=True)["callbacks"]["NonFiniteGuard"] == {"skipped": 1}

    resumed = NonFiniteGuard(max_skips=2)  # one more skip is left, not two
    with pytest.raises(NonFiniteError, match="^step 5: "):
        _fit(tmp_path, resumed, nan_steps={4, 5}, max_steps=8, ckpt_path=str(last))
    assert resumed.skipped == 2

    # a checkpoint of before the guard was a callback: the count beside the step seed
    ckpt = torch.load(last, weights_only=True)
    del ckpt["callbacks"]["NonFiniteGuard"]
    ckpt["step_seed"] = {"base": 0, "micro_step": 0, "nonfinite_skipped": 2}
    legacy = tmp_path / "legacy.ckpt"
    torch.save(ckpt, legacy)
    older = NonFiniteGuard(max_skips=2)
    with pytest.raises(NonFiniteError, match="^step 6: "):
        _fit(tmp_path, older, nan_steps={6}, max_steps=8, ckpt_path=str(legacy))
    assert older.skipped == 2


def test_nan_weights_are_never_written_over_a_good_checkpoint(tmp_path):
    module = _module()
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0,
                         callbacks=[NonFiniteGuard(max_skips=0),
                                    RunCheckpoint(dirpath=tmp_path, filename="last", enable_version_counter=False)])
    trainer.fit(module, train_dataloaders=_loader())
    last = tmp_path / "last.ckpt"
    before = last.read_bytes()
    with torch.no_grad():
        module.model.head.projection.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="head.projection.weight"):
        trainer.save_checkpoint(last)
    assert last.read_bytes() == before


def test_load_checkpoint_refuses_non_finite_weights(tmp_path):
    model = abswin.create_model("hiera_atto_224", img_size=64, num_classes=3)
    sd = model.state_dict()
    sd["blocks.0.mlp.fc1.weight"][0, 0] = float("inf")
    path = tmp_path / "diverged.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as e:
        abswin.load_checkpoint(abswin.create_model("hiera_atto_224", img_size=64, num_classes=3), path)
    assert str(e.value) == (f"checkpoint {path}: holds NaN or infinite values in blocks.0.mlp.fc1.weight "
                            f"(weights of a diverged run?)")


@pytest.mark.slow
def test_a_diverging_run_exits_1_naming_its_last_finite_checkpoint(tmp_path):
    """train.py with last.ckpt saved every step and every gradient NaN at step 3
    (tests/injected_callbacks.py): exit 1, one line naming the step and last.ckpt, which holds
    step 3's finite weights; no results.json."""
    for c in range(2):
        d = tmp_path / "data" / "train" / f"c{c}"
        d.mkdir(parents=True)
        for i in range(8):
            Image.new("RGB", (40, 48), (120 * c, 60, 90)).save(d / f"{i}.jpg")
    env = dict(os.environ, ABSWIN_OUTPUT_ROOT=str(tmp_path / "out"), WANDB_MODE="offline")
    r = subprocess.run([sys.executable, "train.py", "data=imagefolder", f"data.root={tmp_path / 'data'}",
                        "data.img_size=64", "data.batch_size=4", "data.num_workers=0", "trainer.max_epochs=3",
                        "trainer.enable_progress_bar=false", "callbacks.last.every_n_train_steps=1",
                        "+callbacks.nan._target_=tests.injected_callbacks.NaNGradientAt", "+callbacks.nan.steps=[3]",
                        "run_name=diverge"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stderr[-2000:]
    last_line = r.stderr.strip().splitlines()[-1]
    run_dir = tmp_path / "out" / "pretrain" / "diverge"
    last = run_dir / "checkpoints" / "last.ckpt"
    assert re.fullmatch(rf"error: step 3: the loss is \S+ and the gradient norm nan: training diverged .*"
                        rf"the last finite checkpoint is {re.escape(str(last))} \(step 3\)", last_line), last_line
    assert not (run_dir / "results.json").exists()
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["global_step"] == 3
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


@pytest.mark.slow
def test_a_full_disk_during_a_save_is_one_line_and_keeps_the_last_checkpoint(tmp_path):
    """The save at step 4 fails as on a full disk (tests/injected_callbacks.py): exit 1, one line that
    says so and names the checkpoint that is kept (step 3's, untouched)."""
    env = dict(os.environ, ABSWIN_OUTPUT_ROOT=str(tmp_path / "out"), WANDB_MODE="offline")
    r = subprocess.run([sys.executable, "train.py", "data.num_workers=0", "trainer.max_epochs=1",
                        "trainer.limit_train_batches=6", "trainer.enable_progress_bar=false",
                        "callbacks.last.every_n_train_steps=1", "+callbacks.disk._target_=tests.injected_callbacks.DiskFullAt",
                        "+callbacks.disk.step=4", "run_name=full"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
    last = tmp_path / "out" / "pretrain" / "full" / "checkpoints" / "last.ckpt"
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and lines[0] == r.stderr.strip().splitlines()[-1], r.stderr[-2000:]
    assert "the disk is full" in lines[0] and "No space left on device" in lines[0] and str(last) in lines[0]
    assert torch.load(last, weights_only=True)["global_step"] == 3
