"""Two real DDP processes on the CPU (gloo): every validation image or video is counted exactly once,
through ``finetune.py trainer=ddp`` launched as users launch it, and through a ``ddp_spawn`` Trainer
with a counting callback (which also checks the labels)."""

from __future__ import annotations

import json

import lightning.pytorch as pl
import pytest
import torch
import torch.distributed as dist
from PIL import Image

from recipe_data_modules import data_module  # noqa: E402
from launching import COMMON, run, unique_name  # noqa: E402
from recipe_modules import finetune_module  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("launches")]  # multi-process runs: one at a time


class CountSeen(pl.Callback):
    """Sums, over ranks, how many validation images were evaluated and which labels."""

    def on_validation_epoch_start(self, trainer, pl_module):
        self.count = torch.zeros(1)
        self.labels = torch.zeros(3)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.count += batch.labels.numel()
        self.labels += torch.bincount(batch.labels, minlength=3).float()

    def on_validation_epoch_end(self, trainer, pl_module):
        dist.all_reduce(self.count)
        dist.all_reduce(self.labels)
        pl_module.log("seen/count", self.count.item(), rank_zero_only=True)
        for c in range(3):
            pl_module.log(f"seen/class{c}", self.labels[c].item(), rank_zero_only=True)


VAL_COUNTS = [5, 4, 4]  # 13 validation images: an odd total, which padding samplers would round up to 14


def write_odd_folder(root) -> None:
    for split, counts in (("train", [4, 4, 4]), ("val", VAL_COUNTS)):
        for c, n in enumerate(counts):
            d = root / split / f"c{c}"
            d.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (40, 48), (80 * c, 60, 200 - 60 * c)).save(d / f"{i}.jpg")


def test_finetune_under_trainer_ddp_evaluates_every_image_once(tmp_path):
    write_odd_folder(tmp_path / "data")
    overrides = ["data=imagefolder", f"data.root={tmp_path / 'data'}", "data.img_size=64", "data.batch_size=4",
                 *COMMON, "trainer.max_epochs=1", "logger=csv", "module.ema_decay=0.5"]
    job = run("lightning", "finetune.py", overrides, output_root=tmp_path, run_name=unique_name("odd"))
    metrics = json.loads((job.run_dir / "results.json").read_text())["metrics"]
    assert metrics["val/samples"] == 13, metrics
    for name in ("val/acc1", "val_ema/acc1"):  # the weights' EMA is evaluated on every image once too
        correct = metrics[name] * 13
        assert abs(correct - round(correct)) < 1e-4, f"{name}={metrics[name]} is not k/13"
    weights = torch.load(job.run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert not torch.equal(weights["ema_model.head.projection.weight"], weights["model.head.projection.weight"])


def test_ddp_two_ranks_shard_without_duplicates(tmp_path):
    write_odd_folder(tmp_path)
    dm = data_module("imagefolder", tmp_path, img_size=64, batch_size=4, num_workers=0, randaug_mstd=None,
                     random_erasing=0.0)
    module = finetune_module("hiera_atto_224", {"img_size": 64}, num_classes=3, lr=1e-3, batch_size=4,
                            mixup=0.0, cutmix=0.0, warmup_epochs=0)
    trainer = pl.Trainer(
        accelerator="cpu", devices=2, strategy="ddp_spawn", max_epochs=1, limit_train_batches=2,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        use_distributed_sampler=False, num_sanity_val_steps=0, callbacks=[CountSeen()],
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=dm)
    m = trainer.callback_metrics
    assert m["seen/count"].item() == 13
    assert [m[f"seen/class{c}"].item() for c in range(3)] == VAL_COUNTS
    correct = m["val/acc1"].item() * 13  # the accuracy of exactly the 13 images, not of a padded 14
    assert abs(correct - round(correct)) < 1e-4, f"val/acc1={m['val/acc1'].item()} is not k/13"


def test_ddp_video_multi_view_eval_counts_every_video_once(tmp_path):
    """7 validation videos (5 decodable, 2 broken) over 2 ranks: 5 evaluated, 2 missing, summed."""
    import numpy as np

    from datamodules.video_demo import write_mp4

    rng = np.random.default_rng(0)
    lines = {"train": [], "val": []}
    for split, n in (("train", 4), ("val", 5)):
        for i in range(n):
            write_mp4(tmp_path / f"{split}{i}.mp4", rng.integers(0, 255, (12, 48, 64, 3), dtype=np.uint8))
            lines[split].append(f"{split}{i}.mp4 {i % 2}")
    (tmp_path / "broken.mp4").write_bytes((tmp_path / "val0.mp4").read_bytes()[:300])
    (tmp_path / "text.mp4").write_text("not a video")
    lines["val"] += ["broken.mp4 0", "text.mp4 1"]
    for split, ls in lines.items():
        (tmp_path / f"{split}.csv").write_text("\n".join(ls) + "\n")
    dm = data_module("video", tmp_path, img_size=32, num_frames=4, sampling_rate=2, batch_size=2,
                     eval_batch_size=2, num_workers=0, num_temporal_views=2, num_spatial_views=1,
                     randaug_mstd=None, random_erasing=0.0)
    module = finetune_module("hiera_atto_16x224", {"img_size": 32, "num_frames": 4}, num_classes=2, lr=1e-3,
                            batch_size=2, mixup=0.0, cutmix=0.0, warmup_epochs=0)
    trainer = pl.Trainer(
        accelerator="cpu", devices=2, strategy="ddp_spawn", max_epochs=1, limit_train_batches=1,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        use_distributed_sampler=False, num_sanity_val_steps=0, default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=dm)
    m = trainer.callback_metrics
    assert (m["val/samples"].item(), m["val/missing"].item()) == (5, 2)
    # the same weights evaluated by one process: the DDP accuracy is the whole set's accuracy
    one = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                     enable_model_summary=False, use_distributed_sampler=False)
    single = one.validate(module, datamodule=dm)[0]
    assert (single["val/samples"], single["val/missing"]) == (5, 2)
    assert single["val/acc1"] == pytest.approx(m["val/acc1"].item())
    assert single["val/acc5"] == pytest.approx(m["val/acc5"].item())
