"""eval.py as users launch it: the numbers finetune.py logged, a table over sizes, DDP counting every
sample once, official-format absolute checkpoints resized naively, and one-line refusals."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

import abswin
from launching import PYTHON, ROOT, TRAINER_ARGS, clean_env, write_image_folder

pytestmark = pytest.mark.slow  # each test launches eval.py

DATA = ["data=imagefolder", "data.img_size=64", "data.batch_size=8", "data.num_workers=0",
        "trainer.enable_progress_bar=false"]


def _launch(script: str, args: list[str], output_root: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, str(ROOT / script), *args], cwd=ROOT, env=clean_env(output_root),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory) -> dict:
    """A classifier finetuned for one epoch by finetune.py, and what it logged."""
    out = tmp_path_factory.mktemp("runs")
    root = write_image_folder(tmp_path_factory.mktemp("images"), train_per_class=8)
    r = _launch("finetune.py", [*DATA, f"data.root={root}", "trainer.max_epochs=1", "run_name=ft"], out)
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads((out / "finetune" / "ft" / "results.json").read_text())
    return {"root": root, "out": out, "ckpt": out / "finetune" / "ft" / "checkpoints" / "last.ckpt",
            "metrics": results["metrics"]}


def _row(out: Path, run: subprocess.CompletedProcess) -> dict:
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [json.loads(p.read_text())["row"] for p in out.glob("eval/**/results.json")]
    assert len(rows) == 1
    return rows[0]


def test_eval_gives_the_numbers_finetune_logged(finetuned, tmp_path):
    r = _launch("eval.py", [*DATA, f"data.root={finetuned['root']}", f"pretrained={finetuned['ckpt']}"], tmp_path)
    row, logged = _row(tmp_path, r), finetuned["metrics"]
    assert row["samples"] == logged["val/samples"] == 12 and row["missing"] == 0
    assert row["top1"] == pytest.approx(100 * logged["val/acc1"], abs=1e-6)
    assert row["top5"] == pytest.approx(100 * logged["val/acc5"], abs=1e-6)
    assert "| checkpoint | data_root | img_size |" in r.stdout


@pytest.mark.xdist_group("launches")  # two ranks
def test_eval_under_ddp_counts_every_sample_once(finetuned, tmp_path):
    r = _launch("eval.py", [*DATA, f"data.root={finetuned['root']}", f"pretrained={finetuned['ckpt']}",
                            *TRAINER_ARGS["lightning"]], tmp_path)
    row = _row(tmp_path, r)
    assert row["samples"] == 12
    assert row["top1"] == pytest.approx(100 * finetuned["metrics"]["val/acc1"], abs=1e-4)


def test_a_sweep_over_sizes_gives_one_table(finetuned, tmp_path):
    r = _launch("eval.py", ["-m", *DATA, f"data.root={finetuned['root']}", f"pretrained={finetuned['ckpt']}",
                            "data.img_size=64,96"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    (table,) = tmp_path.glob("eval/sweep-*/table.md")
    lines = table.read_text().splitlines()
    assert len(lines) == 4 and lines[2].split("|")[3].strip() == "64" and lines[3].split("|")[3].strip() == "96"
    assert (table.parent / "table.csv").read_text().count("\n") == 3


def test_an_official_absolute_checkpoint_is_built_absolute_and_resized_naively(finetuned, tmp_path):
    """A file in the official format (absolute embedding, 3 classes) at another size: the model is
    built absolute (not converted to abs-win), and the embedding is interpolated to the new grid."""
    model = abswin.create_model("hiera_atto_224", pos_embed="absolute", num_classes=3, img_size=96)
    path = tmp_path / "official.pth"
    torch.save({"model_state": model.state_dict()}, path)
    r = _launch("eval.py", [*DATA, f"data.root={finetuned['root']}", f"pretrained={path}"], tmp_path)
    row = _row(tmp_path, r)
    assert row["samples"] == 12 and row["img_size"] == 64
    log = r.stdout + r.stderr
    assert "(image classifier, absolute position embedding)" in log and "converted to abs-win" not in log
    # the 24x24-token grid of 96 px interpolated to the 16x16 of 64 px (the load report's line)
    assert re.search(r"resized pos_embed: \(1, 576, \d+\) -> \(1, 256, \d+\)", log), log[-3000:]


@pytest.mark.parametrize("case", ["mae", "classes"])
def test_checkpoints_that_cannot_be_evaluated_are_one_line_errors(case, finetuned, tmp_path):
    if case == "mae":
        model = abswin.create_model("mae_hiera_atto_224", img_size=64)
        expected = "has no classifier head (an MAE checkpoint)"
    else:
        model = abswin.create_model("hiera_atto_224", num_classes=7, img_size=64)
        expected = "predicts 7 classes but data=imagefolder has 3"
    path = tmp_path / f"{case}.pth"
    torch.save({"model_state": model.state_dict()}, path)
    r = _launch("eval.py", [*DATA, f"data.root={finetuned['root']}", f"pretrained={path}"], tmp_path)
    assert r.returncode == 2
    lines = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and expected in lines[0], r.stderr[-2000:]


def test_an_evaluation_never_overwrites_another(finetuned, tmp_path):
    """Each run's checkpoints get a folder of their own (``RUN-best``, not ``best``); a second
    evaluation of another checkpoint, or of another data root, into the same folder is refused in
    one line and the first results stay; the same evaluation again replaces its own."""
    other = tmp_path / "other" / "checkpoints" / "last.ckpt"
    other.parent.mkdir(parents=True)
    other.write_bytes(finetuned["ckpt"].read_bytes())
    base = [*DATA, f"data.root={finetuned['root']}"]
    first = _launch("eval.py", [*base, f"pretrained={finetuned['ckpt']}"], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    (results,) = tmp_path.glob("eval/*/results.json")
    assert results.parent.name.startswith("ft-last-"), results
    before = results.read_bytes()

    clash = _launch("eval.py", [*base, f"pretrained={other}", f"run_name={results.parent.name}"], tmp_path)
    assert clash.returncode == 2 and "Traceback" not in clash.stderr
    last = clash.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and f"holds the evaluation of {finetuned['ckpt']}" in last, last
    assert results.read_bytes() == before
    again = _launch("eval.py", [*base, f"pretrained={finetuned['ckpt']}"], tmp_path)
    assert again.returncode == 0 and len(list(tmp_path.glob("eval/*/results.json"))) == 1
    separate = _launch("eval.py", [*base, f"pretrained={other}"], tmp_path)
    assert separate.returncode == 0 and len(list(tmp_path.glob("eval/*/results.json"))) == 2


def test_a_renamed_class_folder_is_refused_not_scored(finetuned, tmp_path):
    """The checkpoint records its classes: a validation folder with one class folder renamed would
    permute the labels (1% instead of 24% on ImageNet), so it is one line naming the class."""
    root = tmp_path / "renamed"
    shutil.copytree(finetuned["root"], root)
    for split in ("train", "val"):
        (root / split / "class1").rename(root / split / "zebra")
    r = _launch("eval.py", [*DATA, f"data.root={root}", f"pretrained={finetuned['ckpt']}"], tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "label 1 is 'class1' in the checkpoint and 'class2' here" in last, last
    assert not list(tmp_path.glob("eval/*/results.json"))
    results = json.loads((finetuned["out"] / "finetune" / "ft" / "results.json").read_text())
    assert results["classes"] == ["class0", "class1", "class2"]  # and the finetuning run's results say so


def test_an_exported_folder_gives_the_same_logits_and_numbers(finetuned, tmp_path):
    """python -m abswin.export on the run's checkpoint, with an eval.py run at another size: the
    folder rebuilds the same network (identical logits), keeps the class names (a renamed class
    folder is still refused), evaluates to the logged numbers with pretrained=DIR, and its model
    card lists both accuracies."""
    from abswin.checkpoint import load_checkpoint

    sized = _launch("eval.py", [*DATA, f"data.root={finetuned['root']}", f"pretrained={finetuned['ckpt']}",
                                "data.img_size=96", "run_name=at96"], tmp_path / "e96")
    assert sized.returncode == 0, sized.stderr[-3000:]
    out = tmp_path / "exported"
    r = subprocess.run([PYTHON, "-m", "abswin.export", str(finetuned["ckpt"]), "--out", str(out), "--results",
                        str(tmp_path / "e96" / "eval")], cwd=ROOT, env=clean_env(tmp_path), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((out / "config.json").read_text())
    assert config["classes"] == ["class0", "class1", "class2"] and config["options"]["img_size"] == 64

    exported = abswin.load_exported(out)
    trained = abswin.create_model(config["model"], **config["options"])
    load_checkpoint(trained, finetuned["ckpt"], strict=True)
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        difference = (exported(x) - trained.eval()(x)).abs().max().item()
    assert difference == 0.0

    ev = _launch("eval.py", [*DATA, f"data.root={finetuned['root']}", f"pretrained={out}"], tmp_path / "e64")
    row = _row(tmp_path / "e64", ev)
    assert row["top1"] == pytest.approx(100 * finetuned["metrics"]["val/acc1"], abs=1e-6)
    card = (out / "README.md").read_text()
    top1_96 = json.loads(next((tmp_path / "e96").glob("eval/**/results.json")).read_text())["row"]["top1"]
    assert f"| the run's last validation (val) | imagefolder | 64 | - | {100 * finetuned['metrics']['val/acc1']:.2f} |" in card
    assert f"| 96 | - | {top1_96:.2f} |" in card and "license: other" in card and "Window similarity" in card

    again = subprocess.run([PYTHON, "-m", "abswin.export", str(finetuned["ckpt"]), "--out", str(out)], cwd=ROOT,
                           env=clean_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and again.stderr.strip() == f"error: --out {out} exists: pass --overwrite to " \
                                                           "replace it, or choose another folder"
