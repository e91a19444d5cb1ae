"""Lightning training: real (tiny, CPU) Trainer runs of MAE pretraining and finetuning, resume,
checkpoint IO and W&B set-up. Model: ``hiera_atto_224`` at 64px, batches of 4."""

from __future__ import annotations

import csv
import math
import os
import pickle
from pathlib import Path

import numpy as np

import pytest
import torch
import torch.nn.functional as F

import lightning.pytorch as pl
import torchmetrics  # noqa: F401  the test extra installs it: a missing one fails, never skips

from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402
from lightning.pytorch.loggers import CSVLogger  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from abswin.batch import Batch  # noqa: E402
from training import (  # noqa: E402
    AtomicCheckpointIO,
    ExactResume,
    FinetuneModule,
    LearningRateLogger,
    MAEReconstructionLogger,
    PosEmbedImageLogger,
    ThroughputLogger,
    WarmupCosine,
    WindowSimilarityLogger,
    configure_wandb_env,
    get_or_create_run_id,
    make_wandb_logger,
    read_run_id,
)
from recipe_modules import pretrain_module, finetune_module  # noqa: E402

IMG = 64
NUM_CLASSES = 10
MODEL_KW = {"img_size": IMG}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The models are tiny: one thread is as fast, and immune to stalls of multi-threaded
    kernels when the machine's few cores are busy."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_collate(items: list) -> Batch:
    """``(image, label)`` pairs to the :class:`~abswin.batch.Batch` the modules read."""
    return Batch(torch.stack([x for x, _ in items]), torch.stack([y for _, y in items]))


class TinyData(pl.LightningDataModule):
    """Smooth random images (bilinearly upsampled 4x4 noise; or linear ramps, which MAE learns
    to fill in within a few dozen steps), random labels; fixed seed, no shuffling: the same
    batches in every run."""

    def __init__(self, n_train: int = 8, n_val: int = 4, batch_size: int = 4, seed: int = 0, ramps: bool = False):
        super().__init__()
        g = torch.Generator().manual_seed(seed)

        def make(n):
            if ramps:
                u = torch.linspace(-1, 1, IMG)
                c = torch.randn(n, 3, 3, 1, 1, generator=g)
                x = c[:, :, 0] * u[:, None] + c[:, :, 1] * u[None, :] + c[:, :, 2]
            else:
                x = F.interpolate(torch.randn(n, 3, 4, 4, generator=g), size=(IMG, IMG), mode="bilinear")
            return TensorDataset(x, torch.randint(0, NUM_CLASSES, (n,), generator=g))

        self.train_set, self.val_set = make(n_train), make(n_val)
        self.batch_size = batch_size

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=False, drop_last=True,
                          collate_fn=tiny_collate)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=self.batch_size, collate_fn=tiny_collate)

    def test_dataloader(self):
        return self.val_dataloader()


class Recorder(pl.Callback):
    """Per training batch: the largest group lr before the step and the loss."""

    def __init__(self):
        self.lrs, self.losses = [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lrs.append(max(g["lr"] for g in trainer.optimizers[0].param_groups))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


def trainer(tmp_path, **kw) -> pl.Trainer:
    args = dict(
        accelerator="cpu", devices=1, enable_progress_bar=False, enable_model_summary=False,
        logger=False, enable_checkpointing=False, log_every_n_steps=1, default_root_dir=str(tmp_path),
        num_sanity_val_steps=0,
    )
    args.update(kw)
    return pl.Trainer(**args)


def finetune(**kw) -> FinetuneModule:
    args = dict(model_name="hiera_atto_224", model_kwargs=dict(MODEL_KW), num_classes=NUM_CLASSES,
                blr=1e-3, batch_size=4, warmup_epochs=0)
    args.update(kw)
    return finetune_module(**args)


def read_csv_metrics(logger: CSVLogger) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    with open(Path(logger.log_dir) / "metrics.csv") as f:
        for row in csv.DictReader(f):
            for k, v in row.items():
                if v not in ("", None):
                    out.setdefault(k, []).append(float(v))
    return out


# ---------------------------------------------------------------------------------------- schedule
def test_warmup_cosine_schedule():
    s = WarmupCosine(warmup_steps=4, total_steps=12, min_lr_ratio=0.1)
    assert [s(i) for i in range(5)] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert s(8) == pytest.approx(0.1 + 0.9 * 0.5)
    assert s(12) == pytest.approx(0.1) and s(100) == pytest.approx(0.1)
    assert WarmupCosine(0, 10)(0) == 1.0


# ---------------------------------------------------------------------------------------- MAE
def test_mae_pretrain_runs_logs_and_warms_up(tmp_path):
    pl.seed_everything(0, workers=True)
    module = pretrain_module("mae_hiera_atto_224", dict(MODEL_KW), blr=2e-3, batch_size=4, warmup_epochs=1)
    lr = 2e-3 * 4 / 256
    rec = Recorder()
    logger = CSVLogger(str(tmp_path), name="mae")
    t = trainer(tmp_path, max_epochs=2, logger=logger, callbacks=[
        rec, WindowSimilarityLogger(), PosEmbedImageLogger(every_n_epochs=2), MAEReconstructionLogger(every_n_epochs=2),
        LearningRateLogger(logging_interval="step"), ThroughputLogger(), ExactResume(step_seed=True),
    ])
    t.fit(module, datamodule=TinyData())  # 2 steps per epoch: warmup 2 steps, 4 in all
    # warmup from 0 over one epoch, then cosine to min_lr=0
    assert rec.lrs == pytest.approx([0.0, 0.5 * lr, lr, 0.5 * lr])
    assert all(math.isfinite(x) for x in rec.losses)
    m = read_csv_metrics(logger)
    for key in ("train/loss", "train/throughput", "val/loss", "pos_embed/window_similarity"):
        assert key in m and all(math.isfinite(v) for v in m[key]), key
    # the lr monitor: one metric per parameter group (layer x weight decay), the peak lr the schedule's
    lrs = {k: v for k, v in m.items() if k.startswith("train/lr/")}
    last = len(module.model.blocks) + 1
    assert {"train/lr/layer00", "train/lr/layer00_no_wd", f"train/lr/layer{last:02d}"} <= set(lrs), sorted(lrs)
    assert len({len(v) for v in lrs.values()}) == 1 and all(len(v) == len(rec.lrs) for v in lrs.values())
    assert [max(step) for step in zip(*lrs.values())] == pytest.approx(rec.lrs)
    assert lrs[f"train/lr/layer{last:02d}"] == pytest.approx(rec.lrs)  # no layer decay: every layer the same
    assert len(m["val/loss"]) == 2
    plots = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert plots == ["mae_reconstruction_epoch0001.png", "pos_embed_channels_epoch0001.png"]

    # the checkpoint holds only primitive types and tensors, model keys under "model."
    path = tmp_path / "mae.ckpt"
    t.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    assert all(k.startswith("model.") for k in ckpt["state_dict"])
    assert ckpt["hyper_parameters"]["model_kwargs"] == MODEL_KW
    assert {"step_seed", "max_nonfinite_skips"}.isdisjoint(ckpt["hyper_parameters"])  # the callbacks' settings
    assert ckpt["callbacks"]["ExactResume"]["batches"] == 4 and "rng_states" in ckpt["callbacks"]["ExactResume"]


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_val_loss_uses_a_fixed_mask():
    torch.manual_seed(0)
    module = pretrain_module("mae_hiera_atto_224", dict(MODEL_KW)).eval()
    batch = Batch(torch.randn(2, 3, IMG, IMG), torch.zeros(2, dtype=torch.long))
    state = torch.get_rng_state()
    with torch.no_grad():
        a = module._eval_step(batch, 0, "val")
        b = module._eval_step(batch, 0, "val")
    assert torch.equal(a, b)
    assert torch.equal(torch.get_rng_state(), state)  # its own generator: training draws are unchanged


def test_mae_reconstruction_picture_undoes_patch_normalisation_and_keeps_grey_grey():
    """With a decoder that predicts the normalised patches exactly, the prediction and composite
    columns are the original image (patch order, un-normalisation and folding are right), and a
    grey image normalised with ImageNet's mean and std comes back grey. The picture: 4 labelled
    columns, tiles enlarged to at least 160 px, the colour-cast note above."""
    from abswin import create_model
    from abswin.analysis.reconstructions import COLUMNS, TINT_NOTE, reconstruct
    from abswin.normalization import normalize

    torch.manual_seed(0)
    model = create_model("mae_hiera_atto_224", img_size=IMG).eval()
    grey = torch.rand(1, 1, IMG, IMG).expand(1, 3, IMG, IMG)
    pixels = torch.cat([torch.rand(1, 3, IMG, IMG), grey])
    x = normalize((pixels * 255).round().to(torch.uint8), 1)
    p = model.pred_stride
    patches = x.permute(0, 2, 3, 1).unfold(1, p, p).unfold(2, p, p).flatten(1, 2).flatten(2)
    norm = (patches - patches.mean(-1, keepdim=True)) / (patches.var(-1, keepdim=True) + 1e-6) ** 0.5
    model.forward_decoder = lambda latent, mask: (norm, torch.zeros(norm.shape[:2], dtype=torch.bool))
    rec = reconstruct(model, x, 0.6)
    cols = rec.columns()  # [2 rows, 4 columns, 3, IMG, IMG]
    assert cols.shape == (2, 4, 3, IMG, IMG)
    torch.testing.assert_close(cols[:, 0], (pixels * 255).round() / 255, atol=1e-5, rtol=0)
    for c in (2, 3):
        torch.testing.assert_close(cols[:, c], cols[:, 0], atol=2e-5, rtol=0)
    assert (cols[1, 2].max(0).values - cols[1, 2].min(0).values).max() < 1e-5  # grey stays grey
    assert (cols[:, 1] == 0.5).all()  # everything masked: grey
    img = MAEReconstructionLogger().make_image(model, x, 0.6, ["class a", "class b"])
    tile = 3 * IMG  # 32 px enlarged to 160 px or more
    assert img.dtype == torch.uint8 and img.shape[-1] >= 4 * tile and img.shape[-2] >= 2 * tile
    assert len(COLUMNS) == 4 and "colour cast" in TINT_NOTE


def test_the_reconstruction_samples_spread_over_the_classes():
    from training.callbacks.pictures import spread_over_classes

    labels = [0] * 10 + [1] * 3 + [2] * 10
    assert spread_over_classes(labels, 8) == [0, 10, 13, 1, 11, 14, 2, 12]
    assert spread_over_classes([], 8) == [] and spread_over_classes([5, 5], 8) == [0, 1]
    assert spread_over_classes(list(range(1000)), 4) == [0, 250, 500, 750]  # ImageNet: not four fish


def test_mae_overfits_one_batch(tmp_path):
    pl.seed_everything(0, workers=True)
    module = pretrain_module("mae_hiera_atto_224", dict(MODEL_KW), mask_ratio=0.6, lr=2e-3,
                               warmup_steps=0, min_lr=2e-3, weight_decay=0.0)
    rec = Recorder()
    trainer(tmp_path, max_steps=30, limit_val_batches=0, callbacks=[rec]).fit(
        module, datamodule=TinyData(n_train=4, ramps=True))
    first, last = sum(rec.losses[:3]) / 3, sum(rec.losses[-3:]) / 3
    assert last < 0.5 * first, (first, last)


# ---------------------------------------------------------------------------------------- finetune
@pytest.mark.parametrize("mixup", [True, False])
def test_finetune_runs_logs_accuracy_and_layer_decay(tmp_path, mixup):
    pl.seed_everything(0, workers=True)
    kw = dict(mixup=0.8, cutmix=1.0) if mixup else dict(mixup=0.0, cutmix=0.0)
    pos = "abswin" if mixup else "absolute"
    module = finetune(layer_decay=0.5, model_kwargs=dict(MODEL_KW, pos_embed=pos, head_dropout=0.1), **kw)
    assert module.mix.enabled == mixup
    rec = Recorder()
    t = trainer(tmp_path, max_steps=2, callbacks=[rec, WindowSimilarityLogger()])
    t.fit(module, datamodule=TinyData())
    assert all(math.isfinite(x) for x in rec.losses)
    metrics = t.callback_metrics
    for key in ("val/acc1", "val/acc5", "val/loss", "pos_embed/window_similarity"):
        assert key in metrics and torch.isfinite(metrics[key]), key
    assert float(metrics["val/acc1"]) <= float(metrics["val/acc5"])
    correct = float(metrics["val/acc1"]) * 4  # TinyData's 4 validation images
    assert abs(correct - round(correct)) < 1e-4, f"val/acc1={float(metrics['val/acc1'])} is not k/4"

    # layer-wise lr decay reaches the optimizer: lr ratios between groups are their lr_scale
    groups = t.optimizers[0].param_groups
    top = max(g["lr"] for g in groups)
    num_blocks = len(module.model.blocks)
    for g in groups:
        assert g["lr"] / top == pytest.approx(g["lr_scale"])
        assert g["lr_scale"] == pytest.approx(0.5 ** (num_blocks + 1 - g["layer_id"]))
    assert min(g["lr_scale"] for g in groups) == pytest.approx(0.5 ** (num_blocks + 1))
    assert {g["weight_decay"] for g in groups} == {0.0, 0.05}

    test = t.test(module, datamodule=TinyData(), verbose=False)[0]
    assert {"test/acc1", "test/acc5", "test/loss"} <= set(test)


def test_finetune_overfits_one_batch(tmp_path):
    pl.seed_everything(0, workers=True)
    module = finetune(lr=2e-3, blr=None, mixup=0.0, cutmix=0.0, label_smoothing=0.0, warmup_steps=0,
                      min_lr=2e-3, weight_decay=0.0, layer_decay=1.0)
    rec = Recorder()
    trainer(tmp_path, max_steps=30, limit_val_batches=0, callbacks=[rec]).fit(
        module, datamodule=TinyData(n_train=4))
    first, last = sum(rec.losses[:3]) / 3, sum(rec.losses[-3:]) / 3
    assert last < 0.2 * first, (first, last)


def test_mixup_cutmix_soft_targets_images_and_video():
    from training.classifier_module import MixupCutmix

    torch.manual_seed(0)
    labels = torch.tensor([0, 1, 2, 3])
    for shape in [(4, 3, 16, 16), (4, 3, 2, 16, 16)]:
        for alphas in [(0.8, 0.0), (0.0, 1.0), (0.8, 1.0)]:
            mix = MixupCutmix(*alphas, switch_prob=0.5, num_classes=NUM_CLASSES, label_smoothing=0.1)
            x = torch.randn(shape)
            y, target = mix(x, labels)
            assert y.shape == x.shape and target.shape == (4, NUM_CLASSES)
            assert torch.allclose(target.sum(-1), torch.ones(4))
            assert target.min() >= 0.1 / NUM_CLASSES - 1e-6  # smoothing reaches every class
    assert not MixupCutmix(0.0, 0.0, 0.5, NUM_CLASSES).enabled


def test_lr_xor_blr():
    with pytest.raises(ValueError, match="exactly one"):
        finetune(lr=1e-3)
    with pytest.raises(ValueError, match="exactly one"):
        finetune(blr=None)
    assert finetune(blr=1e-3, batch_size=512).lr == pytest.approx(2e-3)


def test_compile_keeps_checkpoint_keys():
    module = finetune(compile=True)  # compiles lazily: nothing runs here
    assert all(k.startswith("model.") and "_orig_mod" not in k for k in module.state_dict())


def test_modules_built_from_the_config_see_plain_python():
    """``training.config.build`` is the one place OmegaConf becomes plain Python: a module built from a
    config node stores plain dicts and lists in its hyperparameters (checkpoints load weights_only)."""
    import omegaconf
    from training.config import build, config_arguments

    args = dict(config_arguments("finetune", "module"), model_kwargs=dict(MODEL_KW), num_classes=NUM_CLASSES)
    module = build(omegaconf.OmegaConf.create(args))
    assert type(module.hparams.model_kwargs) is dict and type(module.hparams.betas) is list


# ---------------------------------------------------------------------------------------- resume
class Draws(pl.Callback):
    """Random numbers outside the training step: a numpy draw before every batch (exact after a
    resume only if the RNG states are restored); ``extra``: torch draws after every validation, as
    only the straight run makes them (harmless only with the per-step seed)."""

    def __init__(self, extra: bool = False):
        self.extra, self.values = extra, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.values.append(float(np.random.rand()))

    def on_validation_end(self, trainer, pl_module):
        if self.extra:
            torch.rand(8)


@pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`")
def test_resume_is_exact(tmp_path):
    """4 steps straight == 2 steps, checkpoint, resume to 4 — with dropout, drop path and
    mixup on, validation between, and the checkpoint written by AtomicCheckpointIO."""

    def run(root, ckpt_path=None, callbacks=()):
        pl.seed_everything(0, workers=True)
        module = finetune(model_kwargs=dict(MODEL_KW, head_dropout=0.3, drop_path_rate=0.1), warmup_epochs=1)
        t = trainer(root, max_steps=4, plugins=[AtomicCheckpointIO()], callbacks=[ExactResume(step_seed=True), *callbacks],
                    enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks))
        t.fit(module, datamodule=TinyData(), ckpt_path=ckpt_path)
        return module

    def same_weights(a, b):
        a, b = a.model.state_dict(), b.model.state_dict()
        assert a.keys() == b.keys()
        differ = [k for k in a if not torch.equal(a[k], b[k])]
        assert not differ, differ

    ckpt_dir = tmp_path / "ckpt"
    saver = ModelCheckpoint(dirpath=ckpt_dir, filename="{step}", every_n_train_steps=2, save_top_k=-1)
    draws = Draws(extra=True)
    straight = run(tmp_path / "a", callbacks=[saver, draws])
    mid = ckpt_dir / "step=2.ckpt"
    assert mid.is_file()
    ckpt = torch.load(mid, weights_only=True)
    assert ckpt["global_step"] == 2 and ckpt["callbacks"]["ExactResume"]["batches"] == 2

    restored = FinetuneModule.load_from_checkpoint(mid, weights_only=True)  # hparams rebuild the module
    assert torch.equal(restored.model.head.projection.weight, ckpt["state_dict"]["model.head.projection.weight"])

    again = Draws()
    same_weights(straight, run(tmp_path / "b", ckpt_path=str(mid), callbacks=[again]))
    assert len(draws.values) == 4 and again.values == draws.values[2:]  # the numpy state came back

    # a checkpoint of before the random state was a callback's: the same state at the top level
    state = ckpt["callbacks"].pop("ExactResume")
    ckpt["rng_states"] = state["rng_states"]
    ckpt["step_seed"] = {"base": state["seed_base"], "micro_step": state["batches"], "nonfinite_skipped": 0}
    torch.save(ckpt, tmp_path / "legacy.ckpt")
    same_weights(straight, run(tmp_path / "c", ckpt_path=str(tmp_path / "legacy.ckpt")))
    # and the run really moved past the checkpoint
    assert not torch.equal(ckpt["state_dict"]["model.head.projection.weight"], straight.model.head.projection.weight)


def test_throughput_counts_samples_of_every_rank_videos_once():
    """train/throughput: samples per second, a video once however many clips it gives, times the
    ranks; train/data_wait: the share of the window between steps."""
    from types import SimpleNamespace

    logged = {}
    module = SimpleNamespace(log=lambda key, value, **kw: logged.update({key: value}))
    t = SimpleNamespace(log_every_n_steps=2, world_size=2)
    clips = Batch(torch.zeros(6, 3, 2, 8, 8), torch.zeros(6, dtype=torch.long), clips_per_sample=3)  # 2 videos
    cb = ThroughputLogger()
    cb.on_train_epoch_start(t, module)
    cb.on_train_batch_start(t, module, clips, 0)
    cb._last -= 1.0  # the batch took 1 s
    cb.on_train_batch_end(t, module, None, clips, 0)
    assert logged["train/throughput"] == pytest.approx(4.0, rel=0.05)  # 2 videos x 2 ranks in 1 s
    assert logged["train/data_wait"] == 0.0  # the first step: nothing before it to wait after
    cb._last -= 1.0  # the next batch took 1 s to arrive
    cb.on_train_batch_start(t, module, clips, 1)
    cb._last -= 1.0  # and 1 s to train on
    cb.on_train_batch_end(t, module, None, clips, 1)
    assert logged["train/data_wait"] == pytest.approx(1.0 / 3.0, rel=0.05)  # 1 s of the window's 3 s


def test_the_lr_monitor_without_a_logger_stays_quiet(tmp_path):
    """logger=none: Lightning's LearningRateMonitor would refuse to start; ours trains without it."""
    t = trainer(tmp_path, max_steps=1, limit_val_batches=0, callbacks=[LearningRateLogger(logging_interval="step")])
    t.fit(finetune(), datamodule=TinyData(n_train=4))
    assert t.global_step == 1


# ---------------------------------------------------------------------------------------- checkpoint IO
class NotPlain:
    pass


def test_atomic_checkpoint_io(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "ckpts" / "last.ckpt"
    first = {"state_dict": {"w": torch.arange(4.0)}, "epoch": 1, "hyper_parameters": {"lr": 0.1, "k": [1, 2]}}
    io.save_checkpoint(first, path)
    loaded = io.load_checkpoint(path)
    assert torch.equal(loaded["state_dict"]["w"], first["state_dict"]["w"]) and loaded["epoch"] == 1
    assert torch.load(path, weights_only=True)["hyper_parameters"] == {"lr": 0.1, "k": [1, 2]}

    io.save_checkpoint({"obj": NotPlain()}, tmp_path / "unsafe.ckpt")
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):  # weights_only refuses classes
        io.load_checkpoint(tmp_path / "unsafe.ckpt")

    def crash(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(RuntimeError, match="mid-write"):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(4)}, "epoch": 2}, path)
    monkeypatch.undo()
    still = io.load_checkpoint(path)
    assert still["epoch"] == 1 and torch.equal(still["state_dict"]["w"], torch.arange(4.0))
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no temp file left


# ---------------------------------------------------------------------------------------- W&B
def test_configure_wandb_env(monkeypatch, tmp_path):
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_SILENT", "WANDB_CONSOLE", "NETRC", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: no credentials
    assert configure_wandb_env() == "offline"
    assert os.environ["WANDB_MODE"] == "offline"
    assert os.environ["WANDB_SILENT"] == "true" and os.environ["WANDB_CONSOLE"] == "off"

    env = {"WANDB_API_KEY": "x" * 40, "WANDB_CONSOLE": "wrap"}
    assert configure_wandb_env(env) == "online" and "WANDB_MODE" not in env
    assert env["WANDB_CONSOLE"] == "wrap"  # set ones are kept
    env = {"WANDB_MODE": "disabled"}
    assert configure_wandb_env(env) == "disabled"


def test_a_wandb_login_is_honoured(tmp_path):
    """`wandb login` writes the key into ~/.netrc: such a run goes online; WANDB_MODE still wins."""
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    netrc.chmod(0o600)
    env = {"HOME": str(tmp_path)}
    assert configure_wandb_env(env) == "online" and "WANDB_MODE" not in env
    env = {"HOME": str(tmp_path), "WANDB_MODE": "offline"}
    assert configure_wandb_env(env) == "offline"
    env = {"HOME": str(tmp_path), "WANDB_BASE_URL": "https://wandb.example.org"}  # a login for another host
    assert configure_wandb_env(env) == "offline"


def test_wandb_offline_run_and_run_id_reuse(tmp_path, monkeypatch):
    import wandb
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_SILENT", "WANDB_CONSOLE", "WANDB_PROJECT", "WANDB_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    run_dir = tmp_path / "run"
    pl.seed_everything(0, workers=True)
    logger = make_wandb_logger(run_dir, project="abswin-test")
    assert os.environ["WANDB_MODE"] == "offline"
    run_id = read_run_id(run_dir)
    assert run_id and logger.version == run_id
    try:
        t = trainer(tmp_path, max_steps=1, logger=logger, callbacks=[PosEmbedImageLogger()])
        t.fit(finetune(), datamodule=TinyData(n_train=4))
        assert logger.experiment.id == run_id
    finally:
        wandb.finish()
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert runs and all(r.name.endswith(run_id) for r in runs)
    assert list((tmp_path / "plots").glob("pos_embed_channels_*.png"))  # the trainer's default_root_dir
    # a restart in the same run directory continues the same W&B run
    assert make_wandb_logger(run_dir, project="abswin-test").version == run_id
    assert get_or_create_run_id(run_dir) == run_id


def test_a_batch_of_only_unreadable_images_is_skipped():
    """The loader turns a batch whose images were all corrupt into an empty batch: no step."""
    empty = Batch(torch.empty(0, 3, 0, 0), torch.empty(0, dtype=torch.int64))
    ft = finetune_module("hiera_atto_224", {"img_size": 64}, num_classes=3, lr=1e-3, batch_size=4)
    mae = pretrain_module("mae_hiera_atto_224", {"img_size": 64}, batch_size=4)
    assert ft.training_step(empty, 0) is None and ft.validation_step(empty, 0) is None
    assert mae.training_step(empty, 0) is None and mae.validation_step(empty, 0) is None


def test_an_unreadable_batch_under_ddp_still_joins_the_gradient_all_reduce():
    """Returning None on one rank would leave the others waiting in DDP's all-reduce: the rank
    with nothing to train on contributes a zero gradient to every parameter instead."""
    from types import SimpleNamespace

    empty = Batch(torch.empty(0, 3, 0, 0), torch.empty(0, dtype=torch.int64))
    ft = finetune_module("hiera_atto_224", {"img_size": 64}, num_classes=3, lr=1e-3, batch_size=4)
    ft._trainer = SimpleNamespace(world_size=2, global_rank=1)
    loss = ft.training_step(empty, 0)
    loss.backward()
    params = [p for p in ft.model.parameters() if p.requires_grad]
    assert loss.item() == 0.0 and all(p.grad is not None and not p.grad.any() for p in params)


def test_wandb_online_without_a_key_is_one_clear_error(tmp_path):
    """WANDB_MODE=online with no key: what to do, in one line, before anything starts (W&B itself
    would raise a traceback seconds into the run); no key and no mode: offline."""
    env = {"HOME": str(tmp_path), "WANDB_MODE": "online"}
    with pytest.raises(ValueError, match=r"^WANDB_MODE=online but there is no W&B API key: run `wandb login`"):
        configure_wandb_env(env)
    env = {"HOME": str(tmp_path)}
    assert configure_wandb_env(env) == "offline" and env["WANDB_MODE"] == "offline"
    env = {"HOME": str(tmp_path), "WANDB_MODE": "online", "WANDB_API_KEY": "x" * 40}
    assert configure_wandb_env(env) == "online"


def test_ema_update_is_the_exponential_average():
    """ema = decay * ema + (1 - decay) * weights on every parameter; buffers copied; off by
    default; a decay outside (0, 1) is one line."""
    import pytest as _pytest

    from recipe_modules import finetune_module

    assert finetune_module("hiera_atto_224", {"img_size": 64}, num_classes=3).ema_model is None
    module = finetune_module("hiera_atto_224", {"img_size": 64}, num_classes=3, ema_decay=0.75)
    before = {k: v.clone() for k, v in module.ema_model.state_dict().items()}
    assert all(torch.equal(before[k], v) for k, v in module.model.state_dict().items())
    with torch.no_grad():
        for p in module.model.parameters():
            p.add_(1.0)
    module._update_ema()
    for k, v in module.ema_model.named_parameters():
        torch.testing.assert_close(v, before[k] + 0.25, rtol=0, atol=1e-6)
    assert not any(p.requires_grad for p in module.ema_model.parameters())
    for bad in (1.0, 0, -0.1, True):
        with _pytest.raises(ValueError, match=rf"^module.ema_decay={bad} must be in \(0, 1\)"):
            finetune_module("hiera_atto_224", {"img_size": 64}, num_classes=3, ema_decay=bad)
