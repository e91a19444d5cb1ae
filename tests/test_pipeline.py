"""End to end on real image files: MAE weights reaching finetuning and sweeps through the entry
points as processes; resume, the logged config and W&B offline through ``train(cfg)`` in-process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import abswin
from train import train
from training.config import compose_config, register_resolvers
from launching import run, write_image_folder

ROOT = Path(__file__).resolve().parents[1]
register_resolvers()

FAST = [
    "model.pos_embed=abswin",
    "data.batch_size=8",
    "data.num_workers=0",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=2",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.log_every_n_steps=1",
]


@pytest.fixture(scope="module")
def image_root(tmp_path_factory) -> Path:
    """A tiny ImageNet-style folder of real JPEGs (3 classes, colour-coded)."""
    return write_image_folder(tmp_path_factory.mktemp("images"), train_per_class=12, size=(72, 80))


def _cfg(config: str, run_dir: Path, overrides: list[str]):
    return compose_config(config, [f"paths.run_dir={run_dir}", *FAST, *overrides])


def _weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


NO_UPDATE = ["module.lr=0", "module.min_lr=0"]  # steps that change no weight (AdamW at lr 0)


def _encoder_differences(source: dict, finetuned: dict, prefix: str = "") -> tuple[int, list[str]]:
    """(how many encoder tensors the two share, the names of those that differ): the finetuned
    classifier's ``model.<name>`` against the source's ``<prefix><name>``; the head is new (its
    classes are the finetuning data's)."""
    shared = [k.removeprefix("model.") for k in finetuned if k.startswith("model.") and not k.startswith("model.head.")
              and prefix + k.removeprefix("model.") in source]
    return len(shared), [k for k in shared if not torch.equal(source[prefix + k], finetuned["model." + k])]


@pytest.mark.slow
def test_the_finetuning_run_starts_from_the_MAE_runs_weights(image_root, tmp_path):
    """train.py, then finetune.py pretrained=<its last.ckpt> as processes; the finetuning run trains
    at lr 0, so its checkpoint holds exactly the weights it started from."""
    data = ["data=imagefolder", f"data.root={image_root}", "data.img_size=64", *FAST]
    pre = run("single", "train.py", [*data, "logger=csv"], output_root=tmp_path, run_name="mae").run_dir
    assert list((pre / "csv").rglob("metrics.csv")) and list(pre.rglob("plots/mae_reconstruction_*.png"))
    mae = _weights(pre / "checkpoints" / "last.ckpt")
    ft = run("single", "finetune.py", [*data, f"pretrained={pre / 'checkpoints' / 'last.ckpt'}", "logger=csv",
                                       *NO_UPDATE], output_root=tmp_path, run_name="ft").run_dir
    assert {"val/acc1", "val/acc5", "val/loss"} <= set(json.loads((ft / "results.json").read_text())["metrics"])
    shared, differ = _encoder_differences(mae, _weights(ft / "checkpoints" / "last.ckpt"), prefix="model.")
    assert shared == 82 and not differ, f"{len(differ)} of {shared} encoder tensors are not the MAE run's: {differ[:5]}"


@pytest.mark.slow
def test_a_224px_checkpoint_finetuned_at_96px_starts_from_its_weights(tmp_path):
    """`pretrained=` an official-format file at 224px, finetuned at 96px: abs-win's two embeddings
    do not depend on the image size, so every encoder tensor arrives unchanged."""
    src = abswin.create_model("hiera_atto_224", num_classes=1000)
    torch.save({"model_state": src.state_dict()}, tmp_path / "official.pth")
    ft = run("single", "finetune.py", [*FAST, f"pretrained={tmp_path / 'official.pth'}", "data.img_size=96",
                                       "logger=csv", *NO_UPDATE], output_root=tmp_path, run_name="ft96").run_dir
    shared, differ = _encoder_differences(src.state_dict(), _weights(ft / "checkpoints" / "last.ckpt"))
    assert shared == 84 and not differ, f"{len(differ)} of {shared} encoder tensors changed: {differ[:5]}"


@pytest.mark.slow
def test_resume_continues_the_same_run(tmp_path):
    straight = tmp_path / "straight"
    train(_cfg("finetune", straight, ["trainer.max_epochs=2", "logger=none"]))
    split = tmp_path / "split"
    train(_cfg("finetune", split, ["trainer.max_epochs=1", "logger=none"]))
    with pytest.raises(FileExistsError, match="resume=true"):
        train(_cfg("finetune", split, ["trainer.max_epochs=2", "logger=none"]))
    train(_cfg("finetune", split, ["trainer.max_epochs=2", "logger=none", "resume=true"]))
    a, b = _weights(straight / "checkpoints" / "last.ckpt"), _weights(split / "checkpoints" / "last.ckpt")
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=0, rtol=0, msg=k)


@pytest.mark.slow
def test_resume_with_augmentation_on_the_device_is_bit_identical(image_root, tmp_path):
    """RandAugment (the data config's, on by default) and random erasing run on the device after
    transfer, seeded per sample: a run resumed after its first epoch ends with the uninterrupted
    run's weights, bit for bit."""
    data = ["data=imagefolder", f"data.root={image_root}", "data.img_size=64", "data.random_erasing=1.0",
            "logger=none"]
    a, b = _straight_and_resumed(tmp_path, data)
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


def _straight_and_resumed(tmp_path: Path, overrides: list[str]) -> tuple[dict, dict]:
    """The weights after two finetuning epochs in one run, and in a run resumed after the first."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(_cfg("finetune", straight, [*overrides, "trainer.max_epochs=2"]))
    train(_cfg("finetune", split, [*overrides, "trainer.max_epochs=1"]))
    train(_cfg("finetune", split, [*overrides, "trainer.max_epochs=2", "resume=true"]))
    return _weights(straight / "checkpoints" / "last.ckpt"), _weights(split / "checkpoints" / "last.ckpt")


@pytest.mark.slow
def test_ema_is_evaluated_checkpointed_exported_and_resumed_bit_identically(tmp_path):
    """module.ema_decay: the average is logged beside the live model (val_ema/...), lives in the
    checkpoint, starts from the pretrained weights, resumes bit for bit, and exports with --ema."""
    from abswin.export import export

    source = abswin.create_model("hiera_atto_224", num_classes=10, img_size=64)  # the demo set's classes
    with torch.no_grad():
        source.head.projection.weight.add_(1.0)  # far from any random start: shows where the average began
    torch.save({"model_state": source.state_dict()}, tmp_path / "start.pth")
    a, b = _straight_and_resumed(tmp_path, ["module.ema_decay=0.9", f"pretrained={tmp_path / 'start.pth'}",
                                            "logger=csv"])
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    straight = tmp_path / "straight"
    live = {k.removeprefix("model."): v for k, v in a.items() if k.startswith("model.")}
    average = {k.removeprefix("ema_model."): v for k, v in a.items() if k.startswith("ema_model.")}
    assert live.keys() == average.keys()
    moved = [k for k in live if not torch.equal(live[k], source.state_dict()[k])]
    assert moved and all(not torch.equal(live[k], average[k]) for k in moved)  # an average, not a copy
    head = "head.projection.weight"  # 6 steps at 0.9: a start from the random init would weigh 0.53
    assert (average[head] - source.state_dict()[head]).abs().max() < 0.05
    metrics = json.loads((straight / "results.json").read_text())["metrics"]
    assert 0 <= metrics["val_ema/acc1"] <= 1 and "val_ema/loss" in metrics
    out = export(straight / "checkpoints" / "last.ckpt", tmp_path / "ema_export", ema=True)
    exported = abswin.load_exported(out).state_dict()
    assert all(torch.equal(exported[k], average[k]) for k in average)
    assert "EMA of the weights (decay 0.9)" in (out / "README.md").read_text()


def test_every_logger_gets_the_whole_composed_config(tmp_path):
    """Not just the module's hyperparameters: data, trainer, run name, seed (W&B's config panel)."""
    import yaml

    run_dir = tmp_path / "cfg"
    train(_cfg("finetune", run_dir, ["logger=csv", "trainer.max_steps=1"]))
    (hparams,) = run_dir.glob("csv/*/hparams.yaml")
    logged = yaml.safe_load(hparams.read_text())["config"]
    assert logged["run_name"] and logged["data"]["num_workers"] == 0 and logged["trainer"]["max_steps"] == 1
    assert logged["module"]["_target_"] == "training.FinetuneModule"


def test_wandb_offline_writes_its_run_and_resumes_it(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    run_dir = tmp_path / "wb"
    train(_cfg("finetune", run_dir, ["logger=wandb", "trainer.max_epochs=1"]))
    assert os.environ["WANDB_MODE"] == "offline"
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    run_id = (run_dir / "wandb_run_id.txt").read_text().strip()
    assert runs[0].name.endswith(run_id)
    train(_cfg("finetune", run_dir, ["logger=wandb", "trainer.max_epochs=2", "resume=true"]))
    assert {p.name.rsplit("-", 1)[-1] for p in (run_dir / "wandb").glob("offline-run-*")} == {run_id}


@pytest.fixture
def silent_server():
    """The address of a W&B server that takes connections and never answers (a firewall, a hung
    proxy): W&B itself would try for about 100 s and end in a traceback."""
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)  # the kernel completes the handshakes; nothing ever reads or replies
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


def test_wandb_server_that_does_not_answer_logs_offline_or_refuses(tmp_path, monkeypatch, silent_server, caplog):
    """With a key and a server that does not answer: within seconds, offline with a warning that
    says how to upload later (the default), or, with offline_fallback=false, one line before the
    run directory is touched."""
    import time

    from hydra.errors import InstantiationException

    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_BASE_URL", silent_server)
    refused = tmp_path / "refused"
    with pytest.raises(InstantiationException) as refusal:  # the entry point prints its cause as the one line
        train(_cfg("finetune", refused, ["logger=wandb", "logger.offline_fallback=false", "logger.probe_timeout_s=1"]))
    assert isinstance(refusal.value.__cause__, ValueError) and str(refusal.value.__cause__).startswith(
        f"the W&B server {silent_server} cannot be reached (no answer within 1 s): log offline with WANDB_MODE=offline")
    assert sorted(p.name for p in refused.iterdir()) == [".lock"]  # the run lock only: nothing written
    started, run_dir = time.monotonic(), tmp_path / "fallback"
    train(_cfg("finetune", run_dir, ["logger=wandb", "logger.probe_timeout_s=1"]))
    assert time.monotonic() - started < 60
    assert os.environ["WANDB_MODE"] == "offline" and len(list((run_dir / "wandb").glob("offline-run-*"))) == 1
    assert f"the W&B server {silent_server} cannot be reached (no answer within 1 s): logging offline" in caplog.text


def test_wandb_server_probe_tells_refused_from_answered(tmp_path):
    """A closed port is unreachable; any HTTP answer, even 404, is a server that is there."""
    import http.server
    import socket
    import threading

    from training.wandb_logger import server_problem

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    assert "refused" in server_problem(f"http://127.0.0.1:{closed}", 2).lower()
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)  # 501 to everything
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert server_problem(f"http://127.0.0.1:{server.server_port}", 2) is None
    finally:
        server.shutdown()


def _cli(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, ABSWIN_OUTPUT_ROOT=str(tmp_path), WANDB_MODE="offline")
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_sweep_of_two_values_runs(tmp_path):
    r = _cli(["finetune.py", "-m", "data.img_size=64,96", "logger=csv", *FAST], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    results = sorted(tmp_path.glob("finetune/sweep-*/*/results.json"))
    assert len(results) == 2
    assert "data.img_size=64" in results[0].parent.name and "data.img_size=96" in results[1].parent.name


@pytest.mark.slow
def test_a_failing_sweep_job_lets_the_next_one_run(tmp_path):
    """``-m data.img_size=100,64``: the first job is bad input, the second still runs; the sweep
    exits 2 with a last line naming the failed job."""
    r = _cli(["finetune.py", "-m", "data.img_size=100,64", "logger=csv", *FAST], tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "error: img_size=100 is not allowed" in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 1 of 2 sweep jobs failed") and "job 0 (" in last and "data.img_size=100," in last, last
    (results,) = tmp_path.glob("finetune/sweep-*/*/results.json")
    assert "data.img_size=64" in results.parent.name


@pytest.mark.parametrize(
    "args,message",
    [
        (["data=imagefolder", "data.root=/no/such/dir"], "data root not found: /no/such/dir (set data.root="),
        (["data.img_size=100"], "img_size=100 is not allowed"),
        (["pretrained=/no/such.pth"], "/no/such.pth"),
        (["model=hiera_l", "data=k400", "data.num_frames=32", "data.img_size=320", "trainer=cpu", "logger=csv"],
         "needs pretrained=PATH"),
        (["data.batch_size=8192"], "data.batch_size=8192 is larger than the 4000 training samples"),
    ],
)
@pytest.mark.slow
def test_bad_input_is_one_clear_line(args, message, tmp_path):
    r = _cli(["finetune.py", *FAST, *args], tmp_path)  # args last: they win
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last
    assert "Traceback" not in r.stderr


def test_the_progress_bar_is_tqdms_even_with_rich_installed(tmp_path):
    """Lightning picks rich's progress bar when rich is importable (transformers brings it); ours
    is always tqdm's, whose output the launch tests read and whose bars a failure closes."""
    import importlib.util

    from lightning.pytorch.callbacks import TQDMProgressBar

    from training.config import build_trainer

    assert importlib.util.find_spec("rich") is not None  # the case that matters: rich installed
    trainer = build_trainer(_cfg("finetune", tmp_path, ["logger=none", "trainer.enable_progress_bar=true"]), [])
    assert type(trainer.progress_bar_callback) is TQDMProgressBar
    quiet = build_trainer(_cfg("finetune", tmp_path, ["logger=none", "trainer.enable_progress_bar=false"]), [])
    assert quiet.progress_bar_callback is None
