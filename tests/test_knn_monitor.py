"""The k-NN monitor of MAE pretraining (training/callbacks/knn_monitor.py): DINO's weighted k-NN
against a plain reference, a real pretraining run that logs it (before training and every N
epochs) or not, and every validation sample classified once under DDP."""

from __future__ import annotations

import csv
import json

import pytest
import torch
import torch.nn.functional as F

from training.callbacks.knn_monitor import KNNMonitor, knn_top1


def reference_top1(train_f, train_y, val_f, val_y, k, temperature, num_classes) -> float:
    """One validation sample at a time: the k most similar training samples vote exp(sim / T)."""
    correct = 0
    for f, y in zip(val_f, val_y):
        sims = [(float(f @ g), int(label)) for g, label in zip(train_f, train_y)]
        votes = [0.0] * num_classes
        for sim, label in sorted(sims, reverse=True)[:k]:
            votes[label] += torch.exp(torch.tensor(sim / temperature)).item()
        correct += int(max(range(num_classes), key=votes.__getitem__) == int(y))
    return correct / len(val_y)


def test_weighted_knn_matches_a_plain_reference():
    g = torch.Generator().manual_seed(0)
    centres = F.normalize(torch.randn(4, 16, generator=g), dim=1)
    train_y, val_y = torch.randint(0, 4, (200,), generator=g), torch.randint(0, 4, (60,), generator=g)
    train_f = F.normalize(centres[train_y] + 0.9 * torch.randn(200, 16, generator=g), dim=1)
    val_f = F.normalize(centres[val_y] + 0.9 * torch.randn(60, 16, generator=g), dim=1)
    for k, t in ((20, 0.07), (5, 0.5), (500, 0.07)):
        expected = reference_top1(train_f, train_y, val_f, val_y, k, t, 4)
        assert knn_top1(train_f, train_y, val_f, val_y, k, t, 4, chunk=7) == pytest.approx(expected)
    assert 0.3 < expected < 1.0  # neither trivial nor chance
    with pytest.raises(ValueError, match=r"callbacks.knn_monitor.k=0 must be a whole number >= 1"):
        KNNMonitor(k=0)


def _metrics_rows(run_dir):
    (path,) = run_dir.glob("csv/*/metrics.csv")
    with open(path) as f:
        return [row for row in csv.DictReader(f) if row.get("knn/top1")]


def test_a_pretraining_run_logs_the_knn_curve_or_not(tmp_path):
    from test_pipeline import _cfg
    from train import train

    knn = ["logger=csv", "trainer.max_epochs=2", "callbacks.knn_monitor.every_n_epochs=1",
           "callbacks.knn_monitor.train_samples=64", "callbacks.knn_monitor.val_samples=40"]
    train(_cfg("train", tmp_path / "on", knn))
    rows = _metrics_rows(tmp_path / "on")
    assert [row["epoch"] for row in rows] == ["", "0", "1"]  # before training, then after each epoch
    assert all(float(row["knn/samples"]) == 40 and 0 <= float(row["knn/top1"]) <= 1 for row in rows)
    metrics = json.loads((tmp_path / "on" / "results.json").read_text())["metrics"]
    assert metrics["knn/seconds"] > 0 and 0 < metrics["knn/cost"] < 1
    train(_cfg("train", tmp_path / "off", [*knn, "callbacks.knn_monitor.enabled=false"]))
    assert _metrics_rows(tmp_path / "off") == []


@pytest.mark.slow
@pytest.mark.xdist_group("launches")
def test_under_ddp_every_validation_sample_is_classified_once(tmp_path):
    """13 validation samples on two ranks: 7 + 6, gathered without padding (a padded shard would
    classify 14), and the same number on both ranks (rank 0 logs it)."""
    from launching import COMMON, run, unique_name

    overrides = [*COMMON, "trainer.max_epochs=1", "logger=csv", "callbacks.knn_monitor.every_n_epochs=1",
                 "callbacks.knn_monitor.train_samples=50", "callbacks.knn_monitor.val_samples=13",
                 "data.batch_size=16"]
    job = run("lightning", "train.py", overrides, output_root=tmp_path, run_name=unique_name("knn"))
    metrics = json.loads((job.run_dir / "results.json").read_text())["metrics"]
    assert metrics["knn/samples"] == 13, metrics
    correct = metrics["knn/top1"] * 13
    assert abs(correct - round(correct)) < 1e-4
