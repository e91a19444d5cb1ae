"""What ``eval.py`` needs besides the trainer: the checkpoint to evaluate, the classifier it holds,
and the results table. ``eval.py`` evaluates a classifier checkpoint (ours, official Hiera, timm, or
a named published one) on a data module's validation split at any image size and frame count.

The model is built as the checkpoint was trained: its position-embedding mode (``absolute`` or
``abswin``) and shapes come from the file, so loading resizes them the way that mode dictates
(naive interpolation for ``absolute``; tiled window + interpolated global for ``abswin``; linear
in time for video). The sizes come from the config (``data.img_size``, ``data.num_frames``).

Evaluation is :class:`~training.FinetuneModule`'s own validation: the same loaders,
precision and multi-view protocol as ``finetune.py``, every sample counted once under DDP, so the
numbers equal what finetuning logged for the same checkpoint and size.

``python eval.py -m pretrained=X data.img_size=224,256,320`` writes one row per job into
``results.json`` and keeps ``table.md`` / ``table.csv`` of every job so far beside them.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from .atomic_save import atomic_write_text

if TYPE_CHECKING:
    from abswin.checkpoint import Architecture

COLUMNS = ("checkpoint", "data_root", "img_size", "num_frames", "top1", "top5", "samples", "missing", "seconds")


def local_checkpoint(pretrained: str) -> tuple[Path, str | None]:
    """The file to evaluate and, for a published name, the registry model it builds."""
    from abswin.pretrained import HUB_PREFIX, fetch_pretrained, local_path, lookup

    if pretrained.startswith(HUB_PREFIX):
        return local_path(pretrained), None
    weights = lookup(pretrained)
    if weights is not None:
        return fetch_pretrained(weights.name), weights.model
    path = Path(pretrained)
    if not (path.is_file() or path.is_dir()):  # a folder: python -m abswin.export's (read_checkpoint checks it)
        raise FileNotFoundError(f"pretrained={pretrained}: no such file (or a name of abswin.list_pretrained())")
    return path, None


def classifier_arguments(cfg: DictConfig, arch: Architecture, num_classes_in_data: int,
                         published_model: str | None) -> dict:
    """The FinetuneModule arguments of the config, with the network the checkpoint holds."""
    if arch.num_classes == 0:
        kind = "an MAE" if arch.mae else "an encoder-only"
        raise ValueError(f"pretrained={cfg.pretrained} has no classifier head ({kind} checkpoint): evaluate a "
                         f"finetuned one, or finetune it first (finetune.py pretrained={cfg.pretrained})")
    if arch.video != (cfg.data.input == "video"):
        want = "a video data set (data=video, data=k400)" if arch.video else "an image data set"
        raise ValueError(f"pretrained={cfg.pretrained} is a {'video' if arch.video else 'image'} model: "
                         f"evaluate it on {want}, not data={cfg.data.name}")
    if arch.num_classes != num_classes_in_data:
        raise ValueError(f"pretrained={cfg.pretrained} predicts {arch.num_classes} classes but data={cfg.data.name} "
                         f"has {num_classes_in_data}")
    args = OmegaConf.to_container(cfg.module, resolve=True)
    model_name = arch.model_name or published_model or args["model_name"]  # the config's follows data.input
    kwargs = dict(args["model_kwargs"], **arch.model_options())
    kwargs.update(img_size=cfg.data.img_size, num_frames=OmegaConf.select(cfg, "data.num_frames"))
    args.update(model_name=model_name, model_kwargs=kwargs, num_classes=arch.num_classes,
                ema_decay=None)  # the checkpoint's weights are evaluated, nothing else
    return args


def checkpoint_id(pretrained: str) -> str:
    """A published name as it is, a file by its absolute path (what results.json records)."""
    path = Path(pretrained).expanduser()
    return str(path.resolve()) if path.exists() else pretrained


def result_row(cfg: DictConfig, metrics: dict[str, float], seconds: float) -> dict:
    """One row of the evaluation table."""
    return {"checkpoint": checkpoint_id(str(cfg.pretrained)), "data_root": OmegaConf.select(cfg, "data.root"),
            "img_size": cfg.data.img_size,
            "num_frames": OmegaConf.select(cfg, "data.num_frames"), "top1": 100 * metrics["val/acc1"],
            "top5": 100 * metrics["val/acc5"], "samples": int(metrics["val/samples"]),
            "missing": int(metrics["val/missing"]), "seconds": seconds}


def check_results_folder(run_dir: Path, checkpoint: str, data_root: str | None) -> None:
    """Before evaluating: a folder that holds the results of another checkpoint or data root is
    never overwritten (one line naming both); the same evaluation again replaces its own."""
    from .run_directory import foreign_files

    old = (_read_json(run_dir / "results.json") or {}).get("row") or {}
    if not old:
        others = [f for f in foreign_files(run_dir) if f not in ("table.md", "table.csv")]
        if others:  # an evaluation that failed earlier left only our own files: it runs again
            raise FileExistsError(f"{run_dir} is not empty ({', '.join(others[:5])}) and holds no evaluation: pass "
                                  f"run_name=NEW_NAME")
        return
    mine = {"checkpoint": checkpoint, "data_root": data_root}
    theirs = {k: old.get(k) for k in mine}
    if mine != theirs:
        raise FileExistsError(f"{run_dir} holds the evaluation of {theirs['checkpoint']} on {theirs['data_root']}; "
                              f"this one is of {mine['checkpoint']} on {mine['data_root']}: pass run_name=NEW_NAME")


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_results(run_dir: Path, metrics: dict[str, float], row: dict, classes: list[str]) -> str:
    """``results.json`` of this job (with the class names in label order), and the table of every
    job so far (printed)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "results.json", json.dumps({"metrics": metrics, "row": row, "classes": list(classes)},
                                                           indent=2))
    return write_table(table_dir(run_dir))


def table_dir(run_dir: Path) -> Path:
    """The sweep folder of a ``-m`` job (its rows are gathered there), else the run folder."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized() and HydraConfig.get().mode.name == "MULTIRUN":
        return Path(HydraConfig.get().sweep.dir)
    return run_dir


def write_table(folder: Path) -> str:
    """Gather the rows of every results.json in ``folder`` (and one level below) into table.md and
    table.csv there; returns the Markdown table."""
    rows = [json.loads(p.read_text())["row"] for p in sorted(folder.glob("results.json")) + sorted(folder.glob("*/results.json"))]
    rows.sort(key=lambda r: (r["checkpoint"], r["num_frames"] or 0, r["img_size"]))
    with open(folder / "table.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({k: r.get(k) for k in COLUMNS} for r in rows)
    cells = [[r["checkpoint"], str(r.get("data_root")), str(r["img_size"]), "-" if r["num_frames"] is None else str(r["num_frames"]),
              f"{r['top1']:.2f}", f"{r['top5']:.2f}", str(r["samples"]), str(r["missing"]), f"{r['seconds']:.1f}"]
             for r in rows]
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)] + ["| " + " | ".join(c) + " |" for c in cells]
    text = "\n".join(lines)
    (folder / "table.md").write_text(text + "\n")
    return text
