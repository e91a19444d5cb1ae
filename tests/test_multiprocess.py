"""The real entry points with the shipped configs, as users launch them on 2 CPU ranks (gloo):
Lightning's own launcher (`python train.py trainer=ddp ...`), torchrun, and a simulated 2-node
SLURM job. Each runs 2 epochs, then resumes to a 3rd; a hang fails the test (timeouts) instead
of hanging pytest."""

from __future__ import annotations

import pytest

from launching import (
    COMMON,
    assert_finished_run,
    data_overrides,
    epochs_shown,
    load_checkpoint,
    run,
    steps_per_epoch,
    unique_name,
)

pytestmark = pytest.mark.xdist_group("launches")  # multi-process runs: one at a time (Makefile: --dist loadgroup)

TIMEOUT = 180  # seconds per launch; 2 epochs take about 20 s


# every launcher runs both entry points and both data kinds; the loggers alternate (the first case is
# `make test`'s real two-process launch; the others are slow)
CASES = [
    pytest.param("lightning", "images", "train.py", "csv", id="lightning-images-train-csv"),
    pytest.param("lightning", "video", "finetune.py", "wandb", id="lightning-video-finetune-wandb", marks=pytest.mark.slow),
    pytest.param("torchrun", "images", "train.py", "wandb", id="torchrun-images-train-wandb", marks=pytest.mark.slow),
    pytest.param("torchrun", "video", "finetune.py", "csv", id="torchrun-video-finetune-csv", marks=pytest.mark.slow),
    pytest.param("slurm", "images", "train.py", "csv", id="slurm-images-train-csv", marks=pytest.mark.slow),
    pytest.param("slurm", "video", "finetune.py", "wandb", id="slurm-video-finetune-wandb", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("launcher,kind,script,logger", CASES)
def test_two_ranks_run_two_epochs_then_resume(launcher, kind, script, logger, data_roots, tmp_path):
    overrides = [*data_overrides(kind, data_roots[kind]), *COMMON, f"logger={logger}"]
    name, steps = unique_name(kind), steps_per_epoch(kind)
    first = run(launcher, script, overrides, output_root=tmp_path, run_name=name, timeout=TIMEOUT)
    ckpt = assert_finished_run(first.run_dir, script, logger, epochs=2, steps=steps)

    again = run(launcher, script, [*overrides, "trainer.max_epochs=3", "resume=true"], output_root=tmp_path,
                run_name=name, timeout=TIMEOUT)
    resumed = assert_finished_run(again.run_dir, script, logger, epochs=3, steps=steps)
    assert resumed["global_step"] > ckpt["global_step"] and resumed["epoch"] > ckpt["epoch"]
    assert epochs_shown(again.output()) == {2}, "the resumed run trained other epochs than the 3rd"


@pytest.mark.slow
def test_sweep_under_lightning_ddp_runs_each_job_once(data_roots, tmp_path):
    """`finetune.py -m` with Lightning's DDP launcher: rank 1 joins each job, it does not start the sweep again."""
    overrides = ["-m", *data_overrides("images", data_roots["images"]), "data.img_size=64,96", *COMMON,
                 "trainer.max_epochs=1", "logger=csv"]
    run("lightning", "finetune.py", overrides, output_root=tmp_path, run_name=unique_name("sweep"),
        timeout=2 * TIMEOUT)  # two jobs, one after the other (a loaded CI box took 48 s to its first step)
    results = sorted(tmp_path.glob("finetune/sweep-*/*/results.json"))
    assert [("data.img_size=64" in r.parent.name, "data.img_size=96" in r.parent.name) for r in results] == [
        (True, False), (False, True)], results
    for r in results:
        assert load_checkpoint(r.parent / "checkpoints" / "last.ckpt")["global_step"] == steps_per_epoch("images")
