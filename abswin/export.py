"""Export a checkpoint as a folder anyone can load: weights, the config that rebuilds the model,
and a model card.

    python -m abswin.export outputs/in1k/RUN/checkpoints/best.ckpt --out exported/hiera_b_in1k
    python -m abswin.export best.ckpt --out DIR --results outputs/eval --license cc-by-nc-4.0
    python -m abswin.export best.ckpt --out DIR --push-to-hub my-lab/hiera-b-abswin

``DIR`` holds ``model.safetensors`` (the network alone, with the config in its metadata),
``config.json`` (``{"model": NAME, "options": {...}, "classes": [...]}``:
``abswin.create_model(config["model"], **config["options"])`` rebuilds the network) and
``README.md``, the model card: the architecture, the recipe and data of the run that trained it
(from its ``run.json``), the top-1 at every evaluated size (the run's own ``results.json`` and
those of ``eval.py`` runs given with ``--results``), the window similarity of its position
embedding and the licence of the weights it started from.

The folder loads with :func:`abswin.load_exported`, with ``abswin.load_checkpoint(model, DIR)`` and with
``pretrained=DIR`` in ``finetune.py`` and ``eval.py``. An existing folder is never overwritten
(``--overwrite`` replaces it), and the new folder appears whole or not at all (with ``--overwrite``
the old one is removed just before the new one is renamed into place).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

import torch

from . import __version__
from .checkpoint import CheckpointError, load_checkpoint, read_architecture, read_checkpoint
from .checkpoint.reading import EXPORTED_WEIGHTS
from .convert import model_options
from .exported import CONFIG
from .models import create_model
from .models.pos_embed import window_similarity

__all__ = ["export", "model_card", "push_to_hub"]

CARD = "README.md"
UNKNOWN_LICENSE = "other"


EMA_PREFIX = "ema_model."  # a finetuning run's EMA of the weights (module.ema_decay) in its checkpoint


def ema_checkpoint(checkpoint: dict, path: Path) -> dict:
    """The checkpoint with its EMA weights in place of the live ones."""
    from .checkpoint.formats import LIGHTNING_MODEL_PREFIX

    sd = checkpoint.get("state_dict")
    ema = {k[len(EMA_PREFIX):]: v for k, v in sd.items() if k.startswith(EMA_PREFIX)} if isinstance(sd, dict) else {}
    if not ema:
        raise CheckpointError.about(path, "holds no EMA weights (a finetuning run with module.ema_decay keeps them)")
    return {**checkpoint, "state_dict": {LIGHTNING_MODEL_PREFIX + k: v for k, v in ema.items()}}


def _build(path: Path, checkpoint: dict, model_name: str | None):
    """(the model with the checkpoint's weights, its registry name, the load report, the architecture)."""
    arch = read_architecture(path, checkpoint)
    name = model_name or arch.model_name
    if name is None:
        raise ValueError(f"{path} does not say which Hiera it holds (an official or timm file): pass --model NAME, "
                         "e.g. --model hiera_base_224")
    options = arch.model_options()
    if arch.num_classes:
        options["num_classes"] = arch.num_classes
    model = create_model(name, **{k: v for k, v in options.items() if v is not None or k == "global_pos_size"})
    report = load_checkpoint(model, path, strict=True, checkpoint=checkpoint)
    return model, name, report, arch


def _run_folder(path: Path) -> Path | None:
    """The run folder of a training checkpoint of ours (``RUN/checkpoints/X.ckpt``)."""
    run = path.parent.parent
    return run if path.parent.name == "checkpoints" and (run / "run.json").is_file() else None


def _results(path: Path, run: Path | None, extra: list[Path], run_config: dict, ema: bool) -> list[dict]:
    """Accuracy rows of this checkpoint: the run's last validation (when ``path`` is the run's
    ``last.ckpt``: the weights it scored; ``val_ema/`` for the EMA), then every eval.py results.json
    given (files, or folders searched two levels down) that evaluated this very file."""
    rows = []
    if run is not None and path.name == "last.ckpt" and (run / "results.json").is_file():
        metrics = json.loads((run / "results.json").read_text()).get("metrics", {})
        data, stage = run_config.get("data", {}), "val_ema" if ema else "val"
        if f"{stage}/acc1" in metrics:
            rows.append({"where": f"the run's last validation ({stage})", "data": data.get("name"),
                         "img_size": data.get("img_size"), "num_frames": data.get("num_frames"),
                         "top1": 100 * metrics[f"{stage}/acc1"],
                         "top5": 100 * metrics[f"{stage}/acc5"] if f"{stage}/acc5" in metrics else None})
    for source in extra:
        files = [source] if source.is_file() else sorted(source.glob("results.json")) + sorted(source.glob("*/results.json")) \
            + sorted(source.glob("*/*/results.json"))
        if not files:
            raise ValueError(f"--results {source}: no results.json there (give eval.py's run or sweep folder)")
        for file in files:
            row = json.loads(file.read_text()).get("row")
            if row and row.get("checkpoint") == str(path.resolve()) and not ema:  # eval.py scored the live weights
                rows.append({"where": f"eval.py ({file.parent.name})", "data": row.get("data_root"),
                             "img_size": row.get("img_size"), "num_frames": row.get("num_frames"),
                             "top1": row.get("top1"), "top5": row.get("top5")})
    return rows


def _license(explicit: str | None, run_config: dict) -> tuple[str, str]:
    """(licence, why): ``--license``, else that of the published weights the run started from."""
    if explicit:
        return explicit, "given with --license"
    from .pretrained import lookup

    start = run_config.get("pretrained")
    if start:
        try:
            weights = lookup(str(start))
        except ValueError:
            weights = None
        if weights is not None:
            return weights.license, f"the licence of {weights.name}, the published weights the run started from"
        return UNKNOWN_LICENSE, f"the run started from {start}: give its licence with --license"
    return UNKNOWN_LICENSE, "trained from scratch here: choose a licence with --license"


def _cell(value, digits: str = ".4g") -> str:
    if value is None:
        return "-"
    return format(value, digits) if isinstance(value, float) else str(value)


def model_card(name: str, config: dict, model: torch.nn.Module, run_config: dict, rows: list[dict],
               license: tuple[str, str]) -> str:
    """The README.md of an exported folder (Hugging Face's model-card layout: YAML, then Markdown)."""
    video = len(model.input_size) == 3
    task = "MAE pretraining (encoder and decoder)" if hasattr(model, "decoder_blocks") else (
        f"{'video' if video else 'image'} classification, {model.num_classes} classes")
    lines = ["---", f"license: {license[0]}", "library_name: abswin",
             f"tags: [hiera, abswin, {'video' if video else 'image'}-classification]", "---", "",
             f"# {name} (abs-win)", "",
             f"Hiera with absolute-win position embeddings (Bolya et al., \"Window Attention is Bugged\"): {task}; "
             f"{config['weights']} of the run.",
             "", "```python", "import abswin", "", 'model = abswin.load_exported("THIS_FOLDER")', "```", "",
             "`python eval.py pretrained=THIS_FOLDER data=in1k data.img_size=384` evaluates it at any size "
             "(abs-win needs no weight change).", "", "## Architecture", "",
             "| option | value |", "|---|---|"]
    lines += [f"| {k} | {_cell(v)} |" for k, v in config["options"].items()]
    if run_config:
        data, module, trainer = run_config.get("data", {}), run_config.get("module", {}), run_config.get("trainer", {})
        lines += ["", "## Recipe and data", "",
                  f"Trained by `{run_config.get('task', 'this project')}` as run `{run_config.get('run_name')}` "
                  f"from `{run_config.get('pretrained') or 'scratch'}`.", "", "| setting | value |", "|---|---|"]
        recipe = {"data": data.get("name"), "data.root": data.get("root"), "data.img_size": data.get("img_size"),
                  "data.num_frames": data.get("num_frames"), "data.batch_size (global)": data.get("batch_size"),
                  "data.train_fraction": data.get("train_fraction"), "trainer.max_epochs": trainer.get("max_epochs"),
                  "trainer.precision": trainer.get("precision")}
        recipe.update({f"module.{k}": v for k, v in module.items() if isinstance(v, (int, float, str)) and not k.startswith("_")})
        lines += [f"| {k} | {_cell(v)} |" for k, v in recipe.items() if v is not None]
    else:
        lines += ["", "## Recipe and data", "", "Not recorded: the checkpoint is not in a run folder of this project."]
    lines += ["", "## Accuracy", ""]
    if rows:
        lines += ["| evaluated by | data | img_size | frames | top-1 | top-5 |", "|---|---|---:|---:|---:|---:|"]
        lines += [f"| {r['where']} | {_cell(r['data'])} | {_cell(r['img_size'])} | {_cell(r['num_frames'])} | "
                  f"{_cell(r['top1'], '.2f')} | {_cell(r['top5'], '.2f')} |" for r in rows]
    else:
        lines += ["Not evaluated (give eval.py's results with --results)."]
    lines += ["", "## Position embedding", ""]
    grid = model.tokens_spatial_shape[-2:]
    spatial = model.get_pos_embed(grid).detach()
    try:
        similarity = f"{window_similarity(spatial, grid=grid):.3f}"
    except ValueError:
        similarity = "- (fewer than two 8x8 windows at this size)"
    lines += [f"Window similarity of the spatial embedding at {grid[0]}x{grid[1]} tokens (mean cosine similarity "
              f"of its 8x8-token windows, the paper's Fig. 4 metric; 1 = perfectly tiled): {similarity}.",
              "", "## Licence", "", f"{license[0]}: {license[1]}.",
              "", f"Exported by abswin {__version__} from `{config.get('source')}` ({config.get('source_format')}).", ""]
    return "\n".join(lines)


def export(checkpoint: str | Path, out: str | Path, model_name: str | None = None, license: str | None = None,
           results: list[str | Path] = (), overwrite: bool = False, ema: bool = False) -> Path:
    """Write the exported folder ``out`` (module docstring); returns it. ``ema``: the run's EMA of
    the weights instead of the weights."""
    path, out = Path(checkpoint), Path(out)
    occupied = (out.is_dir() and any(out.iterdir())) or (out.exists() and not out.is_dir())
    if occupied and not overwrite:
        raise FileExistsError(f"--out {out} exists: pass --overwrite to replace it, or choose another folder")
    ckpt = read_checkpoint(path)
    if ema:
        ckpt = ema_checkpoint(ckpt, path)
    model, name, report, arch = _build(path, ckpt, model_name)
    run = _run_folder(path)
    run_config = json.loads((run / "run.json").read_text()).get("config", {}) if run else {}
    decay = (ckpt.get("hyper_parameters") or {}).get("ema_decay")
    config = {"model": name, "options": model_options(model), "classes": arch.classes,
              "weights": f"EMA of the weights (decay {decay})" if ema else "the weights",
              "source": str(path.resolve()), "source_format": report.format, "abswin_version": __version__}
    rows = _results(path, run, [Path(r) for r in results], run_config, ema)
    card = model_card(name, config, model, run_config, rows, _license(license, run_config))

    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(partial / EXPORTED_WEIGHTS), metadata={"abswin": json.dumps(config)})
    (partial / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    (partial / CARD).write_text(card)
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    partial.rename(out)
    return out


def push_to_hub(folder: str | Path, repo_id: str, private: bool = True, api=None) -> str:
    """Upload an exported folder to the Hugging Face Hub as model repository ``repo_id`` (created if
    needed, private by default); returns its URL. ``api``: a ``huggingface_hub.HfApi`` (default: a
    new one, with the token of ``hf auth login`` / ``HF_TOKEN``)."""
    if api is None:
        try:
            from huggingface_hub import HfApi
        except ImportError:
            raise RuntimeError("pushing needs huggingface_hub (pip install huggingface_hub)") from None
        api = HfApi()
    url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                      commit_message=f"abswin {__version__} export")
    return str(url)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m abswin.export", description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", type=Path, help="a checkpoint (.ckpt of a run, .pth, .safetensors)")
    ap.add_argument("--out", type=Path, required=True, help="the folder to write")
    ap.add_argument("--model", default=None, help="model name, for official or timm files (ours record it)")
    ap.add_argument("--results", nargs="*", default=[], help="eval.py results.json files or their run/sweep folders")
    ap.add_argument("--license", default=None, help="licence of the weights (default: of the weights the run started from)")
    ap.add_argument("--push-to-hub", default=None, metavar="REPO_ID", help="also upload to this Hugging Face model repo")
    ap.add_argument("--public", action="store_true", help="with --push-to-hub: a public repository (default private)")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    ap.add_argument("--ema", action="store_true", help="export the run's EMA of the weights (module.ema_decay)")
    args = ap.parse_args(argv)
    logging.getLogger("abswin").addHandler(logging.NullHandler())
    try:
        out = export(args.checkpoint, args.out, args.model, args.license, args.results, args.overwrite, args.ema)
        print(f"exported {args.checkpoint} to {out}: {EXPORTED_WEIGHTS}, {CONFIG}, {CARD}")
        if args.push_to_hub:
            print(f"pushed to {push_to_hub(out, args.push_to_hub, private=not args.public)}")
    except (CheckpointError, ValueError, FileExistsError, OSError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
