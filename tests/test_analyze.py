"""``python analyze.py`` as users run it: on the MAE checkpoint of a real (1-step) ``train.py``
run (abs-win, our Lightning format) and on an official-format file with an absolute embedding;
the numbers of report.md are :func:`abswin.window_similarity`'s; bad input ends in one line."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import abswin
from abswin.analysis import embeddings
from analyze import main  # the top-level analysis command
from abswin.models import pos_embed as pe
from launching import PYTHON, ROOT, clean_env, write_image_folder

PICTURES = ["pos_embed_channels_64px.png", "pos_embed_channels_96px.png", "window_similarity.png",
            "token_similarity_window.png", "token_similarity_global.png"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one thread in this process too (the launched ones get OMP_NUM_THREADS=1)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _run(args: list[str], env_root: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, *args], cwd=ROOT, env=clean_env(env_root), capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def mae_run(tmp_path_factory) -> dict:
    """One MAE training step of train.py (hiera_atto, abs-win, 64 px) on a tiny JPEG folder."""
    out = tmp_path_factory.mktemp("runs")
    root = write_image_folder(tmp_path_factory.mktemp("images"), train_per_class=4, size=(64, 72))
    r = _run(["train.py", "data=imagefolder", f"data.root={root}", "data.img_size=64", "data.batch_size=8",
              "data.num_workers=0", "trainer.max_steps=1", "trainer.limit_val_batches=1", "logger=none",
              "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "run_name=mae"], out)
    assert r.returncode == 0, r.stderr[-3000:]
    run_dir = out / "pretrain" / "mae"
    return {"run_dir": run_dir, "ckpt": run_dir / "checkpoints" / "last.ckpt",
            "image": sorted((root / "val").rglob("*.JPEG"))[0]}


def _similarities(report: str) -> dict[str, float]:
    """The window-similarity table of report.md: {row: value}."""
    section = report.split("## Window similarity", 1)[1].split("\n## ", 1)[0]
    return {row: float(v) for row, v in re.findall(r"^\| (.+?) \| (-?\d+\.\d+) \|$", section, re.M)}


def _check_pictures(out: Path, names: list[str]) -> str:
    report = (out / "report.md").read_text()
    for name in names:
        with Image.open(out / name) as image:
            assert image.mode == "RGB" and min(image.size) > 32, name
        assert f"]({name})" in report, f"report.md does not show {name}"
    linked = re.findall(r"!\[[^]]*\]\(([^)]+)\)", report)
    assert all((out / name).is_file() for name in linked)
    return report


def _expected(model, grid) -> float:
    return pe.window_similarity(model.get_pos_embed(list(grid)), window=(8, 8), grid=grid)


def test_mae_checkpoint_of_a_real_run(mae_run, tmp_path):
    out = tmp_path / "analysis"
    r = _run([str(ROOT / "analyze.py"), str(mae_run["ckpt"]), "--out", str(out), "--image", str(mae_run["image"])],
             tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    stem = mae_run["image"].stem
    report = _check_pictures(out, [*PICTURES, f"reconstruction_{stem}.png"])
    assert "lightning" in report and "`mae_hiera_atto_224`" in report

    # the numbers are abswin.window_similarity of the model built and loaded independently
    hp = torch.load(mae_run["ckpt"], map_location="cpu", weights_only=True)["hyper_parameters"]
    model = abswin.create_model(hp["model_name"], **hp["model_kwargs"])
    abswin.load_checkpoint(model, mae_run["ckpt"])
    with torch.no_grad():
        own, resized = _expected(model, (16, 16)), _expected(model, (24, 24))
    table = _similarities(report)
    assert list(table) == ["at its own grid (64px)", "resized to 96px, window tiled + global interpolated"]
    assert list(table.values()) == pytest.approx([own, resized], abs=1e-4)
    assert f"at its own grid (64px): {own:.4f}" in r.stdout

    # original | masked | prediction | composite for the one image, 64 px tiles enlarged 3x, labelled
    with Image.open(out / f"reconstruction_{stem}.png") as image:
        assert 4 * 194 < image.size[0] < 4 * 194 + 60 and 194 < image.size[1] < 194 + 60
    assert re.search(rf"^\| {stem} \| \d+\.\d+ \|$", report, re.M)
    # the training callbacks drew the same kinds of picture during the run
    plots = {p.name for p in (mae_run["run_dir"] / "plots").glob("*.png")}
    assert {"pos_embed_channels_epoch0000.png", "mae_reconstruction_epoch0000.png"} <= plots


def test_official_absolute_file_shows_the_bug(tmp_path):
    """An official-format classifier with a tiled absolute embedding (as MAE learns it, Fig. 2):
    analysed as absolute (not converted), its window similarity drops under naive resizing."""
    torch.manual_seed(0)
    model = abswin.create_model("hiera_atto_224", pos_embed="absolute", img_size=64, num_classes=10)
    window, glob = torch.randn(1, 32, 8, 8), torch.randn(1, 32, 7, 7)
    model.pos_embed.data = (pe.abswin_embed(window, 0.2 * glob, (16, 16))).flatten(2).transpose(1, 2)
    path = tmp_path / "official.pth"
    torch.save({"model_state": model.state_dict()}, path)

    out = tmp_path / "analysis"
    r = _run([str(ROOT / "analyze.py"), str(path), "--model", "hiera_atto_224", "--img-size", "64", "--out", str(out),
              "--channels", "0,3"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    report = _check_pictures(out, PICTURES)
    assert "absolute position embedding" in report and not list(out.glob("reconstruction_*"))
    pos = model.pos_embed.detach()
    own = pe.window_similarity(pos, (8, 8), grid=(16, 16))
    naive = pe.window_similarity(pe.resize_absolute(pos, (16, 16), (24, 24)), (8, 8), grid=(24, 24))
    table = _similarities(report)
    assert list(table)[:2] == ["at its own grid (64px)", "resized to 96px, naive bicubic"]
    assert list(table.values())[:2] == pytest.approx([own, naive], abs=1e-4)
    assert own > 0.9 and naive < own - 0.2  # the bug
    assert table["converted to abs-win, then resized to 96px"] > 0.9  # the fix


def test_a_bad_path_is_one_line(tmp_path):
    r = _run([str(ROOT / "analyze.py"), str(tmp_path / "nope.ckpt"), "--out", str(tmp_path / "a")], tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"error: checkpoint {tmp_path / 'nope.ckpt'}: no such file"]
    assert not (tmp_path / "a").exists()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("files")
    classifier = abswin.create_model("hiera_atto_224", img_size=64, num_classes=3)
    torch.save({"model_state": classifier.state_dict()}, d / "classifier.pth")
    torch.save(abswin.create_model("mae_hiera_atto_224", img_size=64).state_dict(), d / "mae.pth")
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(d / "x.png")
    (d / "notes.txt").write_text("not an image")
    return d


@pytest.mark.parametrize("args, words", [
    (["{d}/classifier.pth"], ["--model NAME"]),
    (["{d}/classifier.pth", "--model", "hiera_nope"], ["unknown model", "hiera_nope"]),
    (["{d}/classifier.pth", "--model", "hiera_atto_224", "--image", "{d}/x.png"], ["MAE", "classifier"]),
    (["{d}/classifier.pth", "--model", "hiera_atto_224", "--channels", "7,40"], ["channel 40", "32 channels"]),
    (["{d}/classifier.pth", "--model", "hiera_atto_224", "--size", "66"], ["66x66", "patches"]),
    (["{d}/classifier.pth", "--model", "hiera_atto_224", "--image", "{d}/missing.png"], ["missing.png"]),
    (["{d}/notes.txt", "--model", "hiera_atto_224"], ["notes.txt"]),
    (["{d}/classifier.pth", "--size", "big"], ["--size", "'big'"]),
    (["{d}/mae.pth", "--model", "mae_hiera_atto_224", "--image", "{d}/x.png"], ["--mask-ratio", "does not record"]),
], ids=["no-model", "unknown-model", "classifier-image", "channel", "size", "missing-image", "not-a-checkpoint",
        "size-syntax", "mask-ratio-unknown"])
def test_bad_input_is_one_line(files, tmp_path, capsys, args, words):
    argv = [a.format(d=files) for a in args] + ["--out", str(tmp_path / "a")]
    try:
        code = main(argv)
    except SystemExit as e:  # argparse
        code = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert all(w in err[0] for w in words), err[0]
    assert not (tmp_path / "a").exists()  # refused before writing anything


def test_video_mae_reconstructs_every_target_frame(tmp_path, capsys):
    from datamodules.video_demo import write_mp4

    mae = abswin.create_model("mae_hiera_atto_16x224", img_size=64, num_frames=8)
    torch.save(mae.state_dict(), tmp_path / "video_mae.pth")
    write_mp4(tmp_path / "clip.mp4", np.random.default_rng(0).integers(0, 255, (12, 48, 64, 3), dtype=np.uint8))
    out = tmp_path / "analysis"
    code = main([str(tmp_path / "video_mae.pth"), "--model", "mae_hiera_atto_16x224", "--img-size", "64",
                 "--num-frames", "8", "--sampling-rate", "1", "--video", str(tmp_path / "clip.mp4"), "--out", str(out),
                 "--mask-ratio", "0.9"])  # a plain state dict does not record it (ours do)
    assert code == 0, capsys.readouterr().err
    report = _check_pictures(out, [*PICTURES, "reconstruction_clip.png"])
    assert "temporal one has 4 frame tokens" in report
    with Image.open(out / "reconstruction_clip.png") as image:  # a row per target frame (8 frames / stride 2)
        assert 4 * 194 < image.size[0] < 4 * 194 + 60 and 4 * 194 < image.size[1] < 4 * 194 + 60


def test_window_similarity_matrix_and_token_similarity():
    torch.manual_seed(0)
    emb = torch.randn(16, 24, 16)
    matrix = embeddings.window_similarity_matrix(emb, (8, 8))
    n = matrix.shape[0]
    assert n == 6 and torch.allclose(matrix.diagonal(), torch.ones(n))
    mean = (matrix.sum() - n) / (n * (n - 1))
    assert float(mean) == pytest.approx(pe.window_similarity(emb[None], (8, 8)), abs=1e-6)
    sims = embeddings.token_similarity(emb[:, :8, :8])
    assert sims.shape == (8, 8, 8, 8) and float(sims[2, 3, 2, 3]) == pytest.approx(1.0)
    assert torch.allclose(sims[2, 3, 5, 1], sims[5, 1, 2, 3])
