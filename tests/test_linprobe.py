"""Linear probing (linprobe.py): MAE's probe recipe composed by `model=` and `data=`, LARS, a frozen
encoder in eval mode behind MAE's probe head, and the real entry points end to end (train.py's MAE
checkpoint -> linprobe.py -> eval.py of the probe)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import abswin
from abswin.batch import Batch
from abswin.optim import LARS
from training import LinearProbeModule
from training.config import compose_config, config_arguments

from launching import write_image_folder

ROOT = Path(__file__).resolve().parents[1]

# MAE (He et al. 2022), Table 9, linear probing, written here by hand: LARS, base lr 0.1 (lr = blr x
# batch / 256), weight decay 0, momentum 0.9, batch 16384, 10 warmup epochs of 90, cosine;
# RandomResizedCrop and flips only; a BatchNorm without affine before the linear head (A.1).
MAE_TABLE_9 = dict(lr=0.1 * 16384 / 256, batch=16384, weight_decay=0.0, momentum=0.9, warmup=10, epochs=90)


def compose(*overrides: str):
    return compose_config("linprobe", ["paths.run_dir=/tmp/unused", *overrides])


@pytest.mark.parametrize("model", ["hiera_b", "hiera_l", "hiera_h"])
def test_in1k_probe_is_mae_table_9(model):
    cfg = compose(f"model={model}", "data=in1k", "pretrained=/x/mae.ckpt")
    m, d = cfg.module, cfg.data
    got = dict(lr=m.blr * d.batch_size / 256, batch=d.batch_size, weight_decay=m.weight_decay, momentum=m.momentum,
               warmup=m.warmup_epochs, epochs=cfg.trainer.max_epochs)
    assert got == pytest.approx(MAE_TABLE_9) and m.lr is None
    assert m._target_ == "training.LinearProbeModule" and m.model_name == f"hiera_{cfg.model.size}_224"
    # crops and flips only: no RandAugment, no erasing (and the module has no mixup)
    assert d.mode == "finetune" and d.randaug_mstd is None and d.random_erasing == 0.0 and d.hflip == 0.5
    assert list(d.scale.finetune) == [0.08, 1.0]
    assert cfg.recipe.source == "MAE Table 9 (He et al. 2022)" and cfg.require_pretrained


def test_the_default_is_the_cpu_demo():
    cfg = compose()
    assert cfg.data.name == "demo" and cfg.model.name == "hiera_atto" and cfg.module.lr == MAE_TABLE_9["lr"]


def test_lars_follows_its_rule():
    """A matrix's step g + wd w is multiplied by trust x |w| / |g + wd w|; a bias takes the plain
    gradient; both with heavy-ball momentum. Two steps, against the rule computed by hand."""
    torch.manual_seed(0)
    w, b = torch.randn(4, 3, requires_grad=True), torch.randn(4, requires_grad=True)
    lr, wd, momentum, trust = 0.5, 0.1, 0.9, 0.001
    opt = LARS([w, b], lr=lr, weight_decay=wd, momentum=momentum, trust_coefficient=trust)
    w_ref, b_ref = w.detach().clone(), b.detach().clone()
    mu_w, mu_b = torch.zeros_like(w_ref), torch.zeros_like(b_ref)
    for _ in range(2):
        gw, gb = torch.randn(4, 3), torch.randn(4)
        w.grad, b.grad = gw.clone(), gb.clone()
        opt.step()
        step = gw + wd * w_ref
        mu_w = momentum * mu_w + step * (trust * w_ref.norm() / step.norm())
        mu_b = momentum * mu_b + gb
        w_ref, b_ref = w_ref - lr * mu_w, b_ref - lr * mu_b
        torch.testing.assert_close(w.detach(), w_ref)
        torch.testing.assert_close(b.detach(), b_ref)


def test_lars_with_a_zero_weight_takes_the_plain_step():
    w = torch.zeros(2, 2, requires_grad=True)
    w.grad = torch.ones(2, 2)
    LARS([w], lr=0.1, weight_decay=0.0, momentum=0.9).step()
    assert torch.equal(w.detach(), torch.full((2, 2), -0.1))


def test_lars_settings_errors_are_one_line():
    with pytest.raises(ValueError, match=r"^LARS lr=-1 must be a number >= 0$"):
        LARS([torch.zeros(1, requires_grad=True)], lr=-1, weight_decay=0.0, momentum=0.9)


def _probe(**changes) -> LinearProbeModule:
    args = config_arguments("linprobe", "module", ["paths.run_dir=/tmp/unused"])
    args.pop("_target_")
    args.update(num_classes=3, **changes)
    return LinearProbeModule(**args)


def test_only_the_head_trains():
    """LARS sees the head's linear layer alone, which starts as MAE's (trunc normal 0.01, zero bias)."""
    torch.manual_seed(0)
    module = _probe(model_kwargs={"img_size": 64})
    trainable = [n for n, p in module.model.named_parameters() if p.requires_grad]
    assert trainable == ["head.projection.weight", "head.projection.bias"]
    assert [p for g in module.build_optimizer().param_groups for p in g["params"]] == \
        [module.model.head.projection.weight, module.model.head.projection.bias]
    assert module.model.head.projection.bias.abs().sum() == 0 and 0.005 < module.model.head.projection.weight.std() < 0.02


def test_in_a_real_fit_the_encoder_stays_in_eval_mode(tmp_path):
    """Through Lightning's fit, its sanity check and validation: every training step sees the encoder in
    eval mode (drop path 0.5 never drops: the same features twice) and the head's BatchNorm in training
    mode; only the head changes."""
    import lightning.pytorch as pl

    torch.manual_seed(0)
    module = _probe(model_kwargs={"img_size": 64, "drop_path_rate": 0.5}, warmup_epochs=0)
    encoder_before = {k: v.clone() for k, v in module.model.state_dict().items() if not k.startswith("head.")}
    seen = []
    step = module.training_step

    def checked_step(batch, batch_idx):
        m = module.model
        with torch.no_grad():
            twice = [m.norm(m.forward_features(batch.images).flatten(1, 2).mean(1)) for _ in range(2)]
        seen.append((m.blocks[0].training, m.head.norm.training, torch.equal(*twice)))
        return step(batch, batch_idx)

    module.training_step = checked_step
    batches = [Batch(images=torch.randn(4, 3, 64, 64), labels=torch.tensor([0, 1, 2, 0])) for _ in range(2)]
    loader = torch.utils.data.DataLoader(batches, batch_size=None)
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=1,
                         default_root_dir=tmp_path)
    trainer.fit(module, train_dataloaders=loader, val_dataloaders=loader)
    assert seen == [(False, True, True)] * 4
    after = module.model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in encoder_before.items())
    assert int(after["head.norm.num_batches_tracked"]) == 4


def test_the_head_starts_afresh_from_a_classifier_checkpoint(tmp_path):
    """pretrained= a finetuned classifier (same classes): its encoder is probed, its head is not kept."""
    from omegaconf import OmegaConf

    from train import load_pretrained

    classifier = abswin.create_model("hiera_atto_224", img_size=64, num_classes=3)
    torch.nn.init.constant_(classifier.head.projection.weight, 7.0)
    torch.save({"model": classifier.state_dict()}, tmp_path / "finetuned.pth")
    module = _probe(model_kwargs={"img_size": 64})
    module.model.head.norm.running_mean.fill_(3.0)
    load_pretrained(module, OmegaConf.create({"pretrained": str(tmp_path / "finetuned.pth")}))
    head = module.model.head
    assert torch.equal(module.model.blocks[0].attn.qkv.weight, classifier.blocks[0].attn.qkv.weight)
    assert head.projection.weight.abs().max() < 0.05 and head.projection.bias.abs().sum() == 0
    assert head.norm.running_mean.abs().sum() == 0


def test_a_probes_plain_state_dict_is_ours_not_timms(tmp_path):
    """A probe's head.norm holds BatchNorm statistics; timm's head.norm is a LayerNorm: a plain state dict
    of a probe is read as ours, its probe head recognised, and loads strictly."""
    from abswin.checkpoint import read_architecture

    torch.manual_seed(0)
    model = abswin.create_model("hiera_atto_224", img_size=64, num_classes=3, probe_head=True)
    model.head.norm.running_mean.normal_()
    torch.save(model.state_dict(), tmp_path / "probe.pth")
    arch = read_architecture(tmp_path / "probe.pth")
    assert arch.probe_head and arch.num_classes == 3
    again = abswin.create_model("hiera_atto_224", img_size=64, num_classes=3, probe_head=True)
    report = abswin.load_checkpoint(again, tmp_path / "probe.pth", strict=True)
    assert report.format == "abswin" and torch.equal(again.head.norm.running_mean, model.head.norm.running_mean)


def test_a_batch_of_one_is_skipped():
    """The head's BatchNorm cannot train on one sample (the others of the batch were unreadable)."""
    module = _probe(model_kwargs={"img_size": 64})
    module.train()
    assert module.training_step(Batch(images=torch.randn(1, 3, 64, 64), labels=torch.tensor([0])), 0) is None


def test_a_probe_needs_pretrained_weights(tmp_path):
    r = subprocess.run([sys.executable, "linprobe.py", f"paths.output_root={tmp_path}"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: this recipe needs pretrained=PATH: a linear probe "
                                                   "measures a pretrained encoder"), lines
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # nothing written


def _run(args: list[str], out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args, f"paths.output_root={out}", "logger=none", "data.num_workers=0",
                           "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_probe_of_an_mae_run_end_to_end(tmp_path):
    """train.py (one MAE step) -> linprobe.py (two epochs) -> eval.py of the probe's last.ckpt: the probe
    leaves every encoder weight as the MAE run saved it, trains the head, and eval.py rebuilds the
    probe head from the checkpoint alone and gets the probe's own last validation top-1."""
    root = write_image_folder(tmp_path / "images", train_per_class=8, size=(64, 72))
    data = ["data=imagefolder", f"data.root={root}", "data.img_size=64", "data.batch_size=8"]
    r = _run(["train.py", *data, "trainer.max_steps=1", "trainer.limit_val_batches=1", "run_name=mae"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    mae = tmp_path / "pretrain" / "mae" / "checkpoints" / "last.ckpt"
    r = _run(["linprobe.py", *data, f"pretrained={mae}", "trainer.max_epochs=2", "run_name=probe"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    run_dir = tmp_path / "linprobe" / "probe"
    results = json.loads((run_dir / "results.json").read_text())
    assert results["progress"]["epochs"] == 2

    probe = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    weights = {k.removeprefix("model."): v for k, v in probe["state_dict"].items()}
    encoder = abswin.create_model("hiera_atto_224", img_size=64, num_classes=3)
    report = abswin.load_checkpoint(encoder, mae)  # as the probe loaded it
    loaded = [k for k in encoder.state_dict() if k not in report.missing and not k.startswith("head.")]
    assert "blocks.0.attn.qkv.weight" in loaded and "pos_embed_window" in loaded
    for k in loaded:
        assert torch.equal(weights[k], encoder.state_dict()[k]), f"{k} changed in a linear probe"
    assert weights["head.norm.num_batches_tracked"] == 2 * 3  # 24 images, batch 8, two epochs
    assert int(probe["global_step"]) == 6

    r = _run(["eval.py", *data, f"pretrained={run_dir / 'checkpoints' / 'last.ckpt'}", "run_name=eval"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    evaluated = json.loads((tmp_path / "eval" / "eval" / "results.json").read_text())
    assert evaluated["metrics"]["val/acc1"] == pytest.approx(results["metrics"]["val/acc1"])


@pytest.mark.slow
def test_a_video_probe_runs_with_the_multi_view_evaluation(data_roots, tmp_path):
    """linprobe.py on clips: the video Hiera's pooled features, the head trained on clips (2 per video:
    repeated sampling), evaluated with 2 temporal x 1 spatial views per video, each video once."""
    from launching import data_overrides

    data = [*data_overrides("video", data_roots["video"]), "data.num_temporal_views=2"]
    r = _run(["linprobe.py", *data, "require_pretrained=false", "trainer.max_epochs=1", "run_name=video_probe"],
             tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads((tmp_path / "linprobe" / "video_probe" / "results.json").read_text())
    assert results["metrics"]["val/samples"] == 4 and results["metrics"]["val/missing"] == 0
    probe = torch.load(tmp_path / "linprobe" / "video_probe" / "checkpoints" / "last.ckpt", map_location="cpu",
                       weights_only=True)
    assert probe["hyper_parameters"]["model_name"].endswith("_16x224") and "model.head.norm.running_var" in probe["state_dict"]
