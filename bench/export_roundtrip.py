"""Export round trip: does the exported folder give the checkpoint's logits?

``python -m abswin.export`` writes safetensors weights, a config and a model card. This exports a
checkpoint (by default ``make demo``'s finetuned classifier; without one, a Hiera with random
weights saved in the official format), loads the folder with ``abswin.load_exported`` and compares
its logits with those of the model loaded from the checkpoint itself, on the demo's validation
digits (or random inputs), at the model's size and at a larger one (abs-win needs no weight
change). Prints and records the max abs logit difference and whether the top-1 predictions agree.

    python bench/export_roundtrip.py
    python bench/export_roundtrip.py --checkpoint outputs/finetune/RUN/checkpoints/best.ckpt --json out.json
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import abswin  # noqa: E402
from abswin.checkpoint import CheckpointError, read_architecture  # noqa: E402
from abswin.convert import model_options  # noqa: E402
from abswin.export import export  # noqa: E402

from common import ROOT, table, write_results  # noqa: E402

DEMO_CHECKPOINT = ROOT / "outputs" / "demo" / "finetune" / "ft_100pct_from_mae" / "checkpoints" / "best.ckpt"


def inputs(size: int, n: int) -> tuple[torch.Tensor, str]:
    """``n`` demo validation digits at ``size`` px (normalised), or random inputs without the set."""
    from abswin.analysis.reconstructions import load_image, prepare

    from datamodules.demo import DEMO_ROOT_DEFAULT, DEMO_ROOT_ENV  # where make demo put the digits

    root = Path(os.environ.get(DEMO_ROOT_ENV) or DEMO_ROOT_DEFAULT).expanduser() / "val"
    files = sorted(root.glob("*/*"))[:: max(1, len(list(root.glob("*/*"))) // n)][:n] if root.is_dir() else []
    if files:
        return torch.cat([prepare(load_image(f), (size, size)) for f in files]), f"{len(files)} demo validation digits"
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0)), f"{n} random inputs"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None, help=f"default: {DEMO_CHECKPOINT.relative_to(ROOT)}, else a random Hiera")
    p.add_argument("--model", default=None,
                   help="the model of an official or timm --checkpoint; without a checkpoint the random Hiera's "
                        "(default hiera_atto_224)")
    p.add_argument("--size", type=int, default=64, help="the random Hiera's input size")
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--json", default=None, metavar="OUT")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.checkpoint) if args.checkpoint else DEMO_CHECKPOINT
        if args.checkpoint is None and not path.is_file():
            torch.manual_seed(0)
            name = args.model or "hiera_atto_224"
            model = abswin.create_model(name, pos_embed="absolute", img_size=args.size, num_classes=10)
            path = Path(tmp) / "official.pth"
            torch.save({"model_state": model.state_dict()}, path)
            source = f"{name} with random weights (official format)"
        else:
            source = str(path.resolve().relative_to(ROOT) if path.resolve().is_relative_to(ROOT) else path)
            name = args.model
        folder = export(path, Path(tmp) / "exported", model_name=name)
        exported = abswin.load_exported(folder)
        arch = read_architecture(path)
        original = abswin.create_model(name or arch.model_name, **model_options(exported))
        abswin.load_checkpoint(original, path, strict=True)
        original.eval()
        own = exported.input_size[-1]
        rows = []
        for size in (own, own + 32):
            for m in (exported, original):
                m.set_input_size((size, size))
            x, what = inputs(size, args.images)
            with torch.no_grad():
                a, b = exported(x), original(x)
            rows.append({"size": size, "inputs": what, "max_abs_logit_diff": float((a - b).abs().max()),
                         "max_abs_logit": float(b.abs().max()),
                         "top1_agree": float((a.argmax(1) == b.argmax(1)).float().mean())})
    table(["size", "inputs", "max |logit diff|", "max |logit|", "top-1 agree"],
          [[r["size"], r["inputs"], r["max_abs_logit_diff"], r["max_abs_logit"], r["top1_agree"]] for r in rows])
    if args.json:
        write_results(args.json, {"checkpoint": source, "rows": rows}, __file__, argv, gpu=False)


if __name__ == "__main__":
    try:
        main()
    except (CheckpointError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
