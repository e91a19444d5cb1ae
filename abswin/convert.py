"""Convert a Hiera checkpoint (official, timm or ours) into an abswin checkpoint.

    python -m abswin.convert hiera_base_224.pth hiera_base_224_abswin.pth --model hiera_base_224

builds the model (``--pos-embed abswin`` by default: an official absolute embedding is split
into a window and a global part, and the report says how much of it that reproduces), loads
SRC with :func:`abswin.load_checkpoint` and saves::

    {"model_state": model.state_dict(), "abswin": {"model": NAME, "options": {...}, ...}}

``create_model(ckpt["abswin"]["model"], **ckpt["abswin"]["options"])`` rebuilds the model.
A DST ending in ``.safetensors`` is written as safetensors with the same ``abswin`` entry
(as JSON) in its metadata. A finetuned classifier keeps its trained head: the new model gets the
file's class count unless ``--num-classes`` says otherwise, and a head that would be replaced by
a random one is refused unless ``--drop-head`` asks for that.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from . import __version__
from .checkpoint import CheckpointError, load_checkpoint, read_architecture
from .models import create_model


def model_options(model: torch.nn.Module) -> dict:
    """The ``create_model`` overrides that rebuild ``model``'s architecture (JSON-friendly)."""
    size = list(model.input_size)
    opts: dict = {"pos_embed": model.pos_embed_mode}
    hw = size[-2:]
    opts["img_size"] = hw[0] if hw[0] == hw[1] else hw
    if len(size) == 3:
        opts["num_frames"] = size[0]
    if model.pos_embed_mode == "abswin":
        glob = model.pos_embed_global
        opts["global_pos_size"] = list(glob.shape[-2:]) if glob is not None else 0
        opts["window_pos_embed"] = model.pos_embed_window is not None
        opts["global_pos_antialias"] = bool(model.global_pos_antialias)
    else:
        opts["pretrain_grid"] = list(model.pretrain_grid)
    if hasattr(model, "head"):
        opts["num_classes"] = int(model.num_classes)
    return opts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m abswin.convert",
        description="Convert an official, timm or abswin Hiera checkpoint into an abswin checkpoint.",
    )
    ap.add_argument("src", type=Path, help="checkpoint to read (.pth, .ckpt, .safetensors)")
    ap.add_argument("dst", type=Path, help="file to write (.pth, or .safetensors)")
    ap.add_argument("--model", required=True, help="model name, e.g. hiera_base_224 (see abswin.list_models())")
    ap.add_argument("--pos-embed", choices=("abswin", "absolute"), default=None,
                    help="position embedding of the new model (default: the model's, abswin)")
    ap.add_argument("--img-size", type=int, default=None, help="input size of the new model")
    ap.add_argument("--num-frames", type=int, default=None, help="frames of a video model")
    ap.add_argument("--global-pos-size", type=int, default=None,
                    help="size of the abs-win global embedding (0: window only); default the model's (7)")
    ap.add_argument("--num-classes", type=int, default=None,
                    help="classes of the new head (default: the file's head, else the model's)")
    ap.add_argument("--drop-head", action="store_true",
                    help="replace a trained head of another class count by a new, random one")
    ap.add_argument("--strict", action="store_true", help="fail if any key is missing or unexpected")
    args = ap.parse_args(argv)
    # the report is printed below; keep the library's log records off stderr unless the
    # application configured logging
    logging.getLogger("abswin").addHandler(logging.NullHandler())

    overrides = dict(pos_embed=args.pos_embed, img_size=args.img_size, num_frames=args.num_frames,
                     num_classes=args.num_classes)
    if args.global_pos_size is not None:
        overrides["global_pos_size"] = args.global_pos_size
    try:
        trained = read_architecture(args.src).num_classes  # 0: the file has no head
        if args.num_classes is None and trained and not args.drop_head:
            overrides["num_classes"] = trained
        model = create_model(args.model, **{k: v for k, v in overrides.items() if v is not None or k == "global_pos_size"})
        if trained and getattr(model, "num_classes", trained) != trained and not args.drop_head:
            raise ValueError(f"{args.src} holds a trained head of {trained} classes and --num-classes "
                             f"{model.num_classes} would replace it by a random one: pass --drop-head to do that")
        report = load_checkpoint(model, args.src, strict=args.strict)
    except (CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    meta = {
        "model": args.model,
        "options": model_options(model),
        "source": str(args.src),
        "source_format": report.format,
        "abswin_version": __version__,
    }
    if report.explained is not None:
        meta["abswin_explained"] = report.explained
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    args.dst.parent.mkdir(parents=True, exist_ok=True)
    if args.dst.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(args.dst), metadata={"abswin": json.dumps(meta)})
    else:
        torch.save({"model_state": state, "abswin": meta}, args.dst)

    print(report)
    if report.explained is not None:
        print(f"abs-win split reproduces {report.explained:.2%} of the absolute position embedding's variance")
    print(f"saved {args.dst} ({args.model}, {', '.join(f'{k}={v}' for k, v in meta['options'].items())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
