"""`make demo`: MAE-pretrain a small Hiera on the bundled digits once, then finetune it on all of the
training labels and on a small fraction of them, each time against the same finetuning from random
initialisation, and linear-probe its frozen encoder against a probe of random weights. Prints a
table and saves the validation curves (`curves.png`). About 9 minutes on 2 CPU cores.
`make demo-video` (`python demo.py --video`): the same on the bundled video clips (`data=video_demo`:
video Hiera, MAE with mask ratio 0.9, 2x3-view evaluation).

The recipe lives in the experiment configs (`conf/experiment/demo_*.yaml`; the probe's is
`linprobe.yaml`'s default); every step is an ordinary `train.py` / `finetune.py` / `linprobe.py` run
(see the commands it prints), so the demo exercises exactly what users run. Outputs go to `outputs/demo/` (replaced on each call).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent

# per demo: the MAE experiment, then (train_fraction, finetuning experiment) rows; a fraction's two
# runs (from MAE, from scratch) share the experiment, so they get the same budget; probe: also
# linear-probe the MAE encoder and random weights (linprobe.py's default recipe)
DEMOS = {
    "image": {"mae": "demo_mae", "rows": [(1.0, "demo_ft"), (0.1, "demo_ft_few")], "what": "digits",
              "output": "demo", "probe": True},
    "video": {"mae": "demo_video_mae", "rows": [(1.0, "demo_video_ft"), (0.5, "demo_video_ft_few")],
              "what": "videos, 2x3 views each", "output": "demo_video", "probe": False},
}
RUN_FOLDERS = {"train.py": "pretrain", "finetune.py": "finetune", "linprobe.py": "linprobe"}  # paths.run_dir
NOISE_BELOW = 100  # validation samples: with fewer, one sample moves top-1 by over a point; say so


def run(script: str, overrides: list[str], env: dict) -> dict:
    cmd = [sys.executable, str(ROOT / script), *overrides]
    print("\n$ " + " ".join(["python", script, *overrides]), flush=True)
    start = time.monotonic()
    subprocess.run(cmd, check=True, cwd=ROOT, env=env)
    run_dir = Path(env["ABSWIN_OUTPUT_ROOT"]) / RUN_FOLDERS[script]
    run_dir = run_dir / next(o.split("=", 1)[1] for o in overrides if o.startswith("run_name="))
    results = json.loads((run_dir / "results.json").read_text())
    results["seconds"] = time.monotonic() - start
    return results


def val_curve(run_dir: str) -> tuple[list[int], list[float]]:
    """(epoch, val/acc1 in %) per validation, from the run's CSV log."""
    epochs, acc = [], []
    for path in sorted(Path(run_dir).glob("csv/version_*/metrics.csv")):
        with open(path) as f:
            for row in csv.DictReader(f):
                if row.get("val/acc1"):
                    epochs.append(int(row["epoch"]) + 1)
                    acc.append(100 * float(row["val/acc1"]))
    return epochs, acc


def knn_curve(run_dir: str) -> list[tuple[int, float]]:
    """(epochs of pretraining done, k-NN top-1 in %) per measurement of the MAE run's k-NN monitor
    (the first, before training, at 0), from its CSV log."""
    points = []
    for path in sorted(Path(run_dir).glob("csv/version_*/metrics.csv")):
        with open(path) as f:
            for row in csv.DictReader(f):
                if row.get("knn/top1"):
                    points.append((int(row["epoch"]) + 1 if row.get("epoch") else 0, 100 * float(row["knn/top1"])))
    return sorted(set(points))


def plot_curves(rows: list[dict], path: Path, title: str, knn: list[tuple[int, float]] = ()) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2 if knn else 1, figsize=(11 if knn else 6.4, 4.2), squeeze=False)
    ax = axes[0, 0]
    for i, row in enumerate(rows):
        color = f"C{i}"
        for key, style, name in (("mae", "-", "from MAE"), ("scratch", "--", "from scratch")):
            epochs, acc = val_curve(row[key]["run_dir"])
            ax.plot(epochs, acc, style, color=color, marker="o", markersize=3,
                    label=f"{row['label']}: {name}")
    ax.set_xlabel("finetuning epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("validation top-1 (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    if knn:
        k = axes[0, 1]
        k.plot([e for e, _ in knn], [t for _, t in knn], "-o", color="C3", markersize=4)
        k.set_xlabel("MAE pretraining epoch")
        k.set_ylabel("k-NN top-1 of the encoder (%)")
        k.set_ylim(0, 100)
        k.grid(alpha=0.3)
        k.set_title("k-NN monitor during pretraining (k=20, T=0.07)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def top1(metrics: dict) -> str:
    """Top-1 with the counts behind it, e.g. ``96.6% (966/1000)``."""
    n = int(metrics["val/samples"])
    return f"{100 * metrics['val/acc1']:.1f}% ({round(metrics['val/acc1'] * n)}/{n})"


def fraction_label(fraction: float) -> str:
    return "all labels" if fraction == 1.0 else f"{100 * fraction:g}% of labels"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", action="store_true", help="the video demo (data=video_demo)")
    ap.add_argument("--output", default=None, help="default: outputs/demo (images), outputs/demo_video")
    ap.add_argument("--json", default=None, metavar="PATH",
                    help="also write the results with this command and the machine to PATH (README's table "
                         "is rendered from docs/results/demo.json by bench/report.py)")
    # for tests: Hydra overrides added to every run (e.g. trainer.max_epochs=1)
    ap.add_argument("--override", action="append", default=[], help=argparse.SUPPRESS)
    args = ap.parse_args()
    demo = DEMOS["video" if args.video else "image"]

    out = Path(args.output or ROOT / "outputs" / demo["output"])
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ, ABSWIN_OUTPUT_ROOT=str(out))
    common = ["logger=csv", "trainer.enable_progress_bar=false", *args.override]
    start = time.monotonic()

    mae = run("train.py", [f"experiment={demo['mae']}", "run_name=mae", *common], env)
    ckpt = Path(mae["checkpoints"]) / "last.ckpt"
    rows = []
    for fraction, experiment in demo["rows"]:
        ft = [f"experiment={experiment}", f"data.train_fraction={fraction}", *common]
        tag = f"{100 * fraction:g}pct"
        row = {"fraction": fraction, "label": fraction_label(fraction), "experiment": experiment}
        row["mae"] = run("finetune.py", [*ft, f"run_name=ft_{tag}_from_mae", f"pretrained={ckpt}"], env)
        row["scratch"] = run("finetune.py", [*ft, f"run_name=ft_{tag}_from_scratch"], env)
        rows.append(row)
    if demo["probe"]:  # the frozen encoder: what MAE learned without finetuning it
        rows.append({"fraction": 1.0, "label": "all labels, linear probe", "experiment": None,
                     "mae": run("linprobe.py", ["run_name=probe_from_mae", f"pretrained={ckpt}", *common], env),
                     "scratch": run("linprobe.py", ["run_name=probe_of_random_weights", "require_pretrained=false",
                                                    *common], env)})
    total = time.monotonic() - start

    knn = knn_curve(mae["run_dir"])
    lines = [f"MAE pretraining ({mae['progress']['epochs']} epochs, experiment={demo['mae']}): "
             f"final loss {mae['metrics']['train/loss']:.3f}  [{mae['seconds'] / 60:.1f} min]",
             *([f"k-NN top-1 of the encoder during pretraining: "
                + " -> ".join(f"{t:.1f}% (epoch {e})" for e, t in knn)
                + f"; {mae['metrics'].get('knn/seconds', float('nan')):.1f} s per measurement"] if knn else []),
             f"top-1 on the demo validation {demo['what']}, finetuned or linear-probed (same budget per row):",
             "",
             "| training labels | epochs | from MAE | from scratch | minutes |",
             "|---|---|---|---|---|"]
    for r in rows:
        minutes = (r["mae"]["seconds"] + r["scratch"]["seconds"]) / 60
        lines.append(f"| {r['label']} | {r['mae']['progress']['epochs']} | {top1(r['mae']['metrics'])} | "
                     f"{top1(r['scratch']['metrics'])} | {minutes:.1f} |")
    samples = int(rows[0]["mae"]["metrics"]["val/samples"])
    if samples < NOISE_BELOW:
        lines += ["", f"one validation sample is {100 / samples:.1f} points of top-1: differences of one or two "
                  "are noise, not a finding"]
    lines += ["", f"total {total / 60:.1f} min (pretraining included)"]
    table = "\n".join(lines)
    (out / "results.md").write_text(table + "\n")
    summary = {
        "total_seconds": total,
        "mae": {"run_dir": mae["run_dir"], "seconds": mae["seconds"], "metrics": mae["metrics"],
                "experiment": demo["mae"], "epochs": mae["progress"]["epochs"], "knn": knn},
        "rows": [{"train_fraction": r["fraction"], "label": r["label"], "experiment": r["experiment"],
                  **{k: {"val/acc1": r[k]["metrics"]["val/acc1"], "val/samples": r[k]["metrics"]["val/samples"],
                         "seconds": r[k]["seconds"], "epochs": r[k]["progress"]["epochs"], "run_dir": r[k]["run_dir"]}
                     for k in ("mae", "scratch")}} for r in rows]}
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    if args.json:
        from bench.common import write_results  # the command and the machine beside the figures

        write_results(args.json, summary, __file__, gpu=False)
    plot_curves(rows, out / "curves.png", f"hiera_atto on the demo {demo['what'].split(',')[0]}: "
                "MAE init (solid) vs random init (dashed)", knn)

    print("\n" + "=" * 72)
    print(table)
    print(f"validation curves: {out / 'curves.png'}; this table: {out / 'results.md'}")
    print(f"checkpoints, CSV logs and plots (position embeddings, MAE reconstructions): {out}/")
    for r in (mae, *(r[k] for r in rows for k in ("mae", "scratch"))):
        print(f"  {r['run_dir']}")
    print("=" * 72)


if __name__ == "__main__":
    main()
