"""Video MAE and video finetuning through Lightning, ``train(cfg)`` and train.py / finetune.py, on real
H.264 files decoded by decord: multi-view evaluation, missing videos, resizing at finetune time."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

import abswin
from training.config import compose_config, register_resolvers

import decord  # noqa: F401  the test extra installs it: a missing one fails, never skips
from datamodules import VideoDataModule  # noqa: E402
from datamodules.video_demo import write_mp4  # noqa: E402
from recipe_data_modules import data_module  # noqa: E402
from recipe_modules import pretrain_module, finetune_module  # noqa: E402
from launching import run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
register_resolvers()


def _clip(label: int, n: int, h: int, w: int, seed: int) -> np.ndarray:
    """A moving texture whose colour says the class: learnable and real work for the encoder."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (h + n, w + n, 3), dtype=np.uint8)
    frames = np.stack([base[i:i + h, i:i + w] for i in range(n)]).astype(np.int16)
    frames[..., label % 3] = np.clip(frames[..., label % 3] + 120, 0, 255)
    return frames.astype(np.uint8)


@pytest.fixture(scope="module")
def video_root(tmp_path_factory) -> Path:
    """2 classes; train 6 videos (one too short), val 5 good + 1 truncated + 1 not a video."""
    root = tmp_path_factory.mktemp("videos")
    lines = {"train": [], "val": []}
    k = 0
    for split, per_class in (("train", 3), ("val", 2)):
        for label in range(2):
            for i in range(per_class + (split == "val" and label == 0)):
                n = 6 if (split == "train" and i == 0) else 20  # one short video: padded
                path = root / "v" / f"{split}{k}.mp4"
                path.parent.mkdir(exist_ok=True)
                write_mp4(path, _clip(label, n, 72, 96, k))
                lines[split].append(f"v/{path.name} {label}")
                k += 1
    good = (root / "v" / "val6.mp4").read_bytes()
    (root / "v" / "trunc.mp4").write_bytes(good[: len(good) // 3])
    (root / "v" / "text.mp4").write_text("not a video\n")
    lines["val"] += ["v/trunc.mp4 0", "v/text.mp4 1"]
    for split, ls in lines.items():
        (root / f"{split}.csv").write_text("\n".join(ls) + "\n")
    return root


def _dm(root: Path, mode: str, **kw) -> VideoDataModule:
    args = dict(img_size=64, num_frames=8, sampling_rate=2, batch_size=2, eval_batch_size=None, num_workers=0,
                mode=mode, repeated_sampling=2, num_temporal_views=2, num_spatial_views=3, randaug_mstd=None, seed=0)
    args.update(kw)
    return data_module("video", root, **args)


def _trainer(tmp_path: Path, **kw) -> pl.Trainer:
    args = dict(accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=2, logger=False,
                enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                num_sanity_val_steps=0, use_distributed_sampler=False, default_root_dir=tmp_path,
                precision="bf16-mixed")
    args.update(kw)
    return pl.Trainer(**args)


def test_video_mae_trains_and_validates(video_root, tmp_path):
    module = pretrain_module("mae_hiera_atto_16x224", {"img_size": 64, "num_frames": 8}, mask_ratio=0.9,
                               lr=1e-3, batch_size=2, warmup_epochs=0)
    assert module.model.mask_spatial_shape == [4, 2, 2]  # 16 mask units: 0.9 keeps one
    trainer = _trainer(tmp_path)
    before = module.model.pos_embed_temporal.detach().clone()
    trainer.fit(module, datamodule=_dm(video_root, "pretrain"))
    m = trainer.callback_metrics
    assert torch.isfinite(m["train/loss"]) and torch.isfinite(m["val/loss"])
    assert not torch.equal(before, module.model.pos_embed_temporal)  # the temporal embedding trains


@pytest.mark.slow
def test_video_finetune_multi_view_eval_reports_missing(video_root, tmp_path, caplog):
    module = finetune_module("hiera_atto_16x224", {"img_size": 64, "num_frames": 8}, num_classes=2, lr=1e-3,
                            batch_size=2, warmup_epochs=0, mixup=0.8, cutmix=1.0)
    trainer = _trainer(tmp_path, max_epochs=2)
    with pytest.warns(UserWarning, match="2 video"):
        trainer.fit(module, datamodule=_dm(video_root, "finetune", eval_batch_size=3))
    m = trainer.callback_metrics
    assert m["val/samples"].item() == 5  # every decodable video once, over the 2 epochs' resets
    assert m["val/missing"].item() == 2  # the truncated file and the text file: reported, not swapped
    correct = m["val/acc1"].item() * 5  # over the 5 decodable videos, each once
    assert abs(correct - round(correct)) < 1e-4 and torch.isfinite(m["val/loss"])
    assert "MISSING in evaluation" in caplog.text


def test_multi_view_probabilities_are_the_mean_softmax_and_chunking_agrees():
    module = finetune_module("hiera_atto_16x224", {"img_size": 64, "num_frames": 8}, num_classes=3, lr=1e-3,
                            batch_size=2, mixup=0.0, cutmix=0.0).eval()
    views = torch.randn(2, 4, 3, 8, 64, 64)
    with torch.no_grad():
        probs = module._multi_view_probs(module.model, views)
        manual = torch.stack([module.model(v).softmax(-1).mean(0) for v in views])
        module.hparams.eval_views_per_forward = 3  # 8 clips in chunks of 3, 3, 2
        chunked = module._multi_view_probs(module.model, views)
    torch.testing.assert_close(probs, manual, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(chunked, probs, atol=1e-5, rtol=1e-4)
    assert torch.allclose(probs.sum(-1), torch.ones(2))


def test_one_video_per_device_with_activation_checkpointing(video_root, tmp_path):
    """What the 32x320 runs need: batch 1 (mixup then off), grad_ckpt, gradient clipping."""
    module = finetune_module("hiera_atto_16x224", {"img_size": 64, "num_frames": 8, "grad_ckpt": True},
                            num_classes=2, lr=1e-3, batch_size=1, warmup_epochs=0, mixup=0.0, cutmix=0.0)
    trainer = _trainer(tmp_path, gradient_clip_val=5.0, limit_val_batches=2)
    trainer.fit(module, datamodule=_dm(video_root, "finetune", batch_size=1, repeated_sampling=1,
                                       eval_batch_size=1))
    assert torch.isfinite(trainer.callback_metrics["train/loss"])


# ------------------------------------------------------------------ train.py / finetune.py
FAST = ["data.num_workers=0", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "trainer.log_every_n_steps=1",
        "data.img_size=64", "data.num_frames=8", "data.sampling_rate=2", "data.batch_size=2",
        "data.num_temporal_views=2", "data.num_spatial_views=1", "data.randaug_mstd=null", "logger=csv"]


def _cfg(config: str, run_dir: Path, overrides: list[str]):
    return compose_config(config, [f"paths.run_dir={run_dir}", *FAST, *overrides])


@pytest.mark.slow
def test_video_pretrain_then_finetune_at_more_frames_and_pixels(video_root, tmp_path):
    """train.py then finetune.py (processes) with data=video: video models, mask 0.9; finetuning at
    16 frames x 96px from the 8x64 MAE run starts from the linear interpolation of its temporal
    embedding and from every other encoder tensor unchanged (abs-win needs no spatial resize). The
    finetuning run trains at lr 0, so its checkpoint holds what it started from. (data=k400
    is the same data module with the paper's recipe, which takes GPUs and 16x224 or 32x320 clips.)"""
    data = ["data=video", f"data.root={video_root}", "data.num_classes=2", *FAST]
    cfg = _cfg("train", tmp_path / "composed", data)
    assert cfg.module.model_name == "mae_hiera_atto_16x224" and cfg.module.mask_ratio == 0.9
    pre = run("single", "train.py", data, output_root=tmp_path, run_name="mae").run_dir
    ckpt = pre / "checkpoints" / "last.ckpt"
    ft = run("single", "finetune.py", [*data, f"pretrained={ckpt}", "data.num_frames=16", "data.img_size=96",
                                       "module.lr=0", "module.min_lr=0"],
             output_root=tmp_path, run_name="ft").run_dir
    results = json.loads((ft / "results.json").read_text())["metrics"]
    assert results["val/samples"] == 5 and results["val/missing"] == 2

    src = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    got = torch.load(ft / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert src["model.pos_embed_temporal"].shape[1] == 4 and got["model.pos_embed_temporal"].shape[1] == 8
    expected = torch.nn.functional.interpolate(src["model.pos_embed_temporal"].transpose(1, 2), size=8,
                                               mode="linear", align_corners=False).transpose(1, 2)
    torch.testing.assert_close(got["model.pos_embed_temporal"], expected)
    encoder = [k for k in got if k in src and k != "model.pos_embed_temporal"]
    assert len(encoder) > 50 and all(torch.equal(src[k], got[k]) for k in encoder)


def test_video_mae_reconstruction_picture_folds_the_target_layout():
    """The picture's patches are the MAE's own video targets, and fold back to the target's frames;
    the callback's picture shows the middle one (one row per clip)."""
    from abswin.analysis.reconstructions import frames_of
    from training.callbacks import MAEReconstructionLogger

    mae = abswin.create_model("mae_hiera_atto_16x224", img_size=64, num_frames=8).eval()
    x = torch.randn(2, 3, 8, 64, 64)
    torch.testing.assert_close(frames_of(mae, mae.patchify(x)), x[:, :, :: mae.patch_stride[0]])
    image = MAEReconstructionLogger(num_images=2).make_image(mae, x, 0.9)
    assert image.dtype == torch.uint8 and image.shape[-1] > 4 * 3 * 64  # 4 columns of tiles enlarged 3x
    from abswin.analysis.reconstructions import reconstruct

    assert reconstruct(mae, x, 0.9).columns().shape == (2, 4, 3, 64, 64)  # a row per clip: its middle frame
