"""Parity with the reference code: how far our Hiera's outputs are from the official ``hiera`` package's
(and timm's abs-win Hiera's) for identical weights and inputs.

fp32 on the CPU, seeded, in eval mode under ``torch.no_grad``. Each reference model is built with its
own random initialisation; ours gets its weights: the official state dict with ``load_state_dict``
(``pos_embed="absolute"``, the official embedding), timm's through :func:`abswin.load_checkpoint`, the
loader a timm file goes through. Cases (``--cases``):

* ``cls``: the image classifier ``hiera_SIZE_224``, logits for 2 images at 224 px;
* ``video``: the video classifier ``hiera_SIZE_16x224``, logits for one 16x224 clip (base and up);
* ``mae``: the MAE ``mae_hiera_SIZE_224``, the same mask for both (drawn by the official model at the
  image recipe's mask ratio, ``conf/train.yaml``): the loss, the predictions and their targets;
* ``timm``: timm's ``hiera_small_abswin_256`` (the abs-win embedding), logits for one image at 256 px.

The official head applies softmax in eval mode: its activation is set to the identity, so that logits
are compared, not probabilities near 1/1000. The reference heads start near zero (a small init scale),
so each is re-drawn (normal, std 0.02), and timm's LayerScale factors too (uniform 0.2 to 0.5): else
they would make every difference small. Reported: the largest absolute difference of each output,
with its largest absolute value for scale, and both MAE losses.

    python bench/parity.py                                     # Hiera-B, all cases, ~1 min on 2 cores
    python bench/parity.py --size tiny --cases cls,mae,timm    # a few seconds
    python bench/parity.py --json docs/results/parity.json
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
import time
import warnings

import torch
import torch.nn as nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import abswin  # noqa: E402
from training.config import config_arguments  # noqa: E402
# bench/common.py: Python puts the script's folder (bench/) on sys.path
from common import table, write_results  # noqa: E402

CASES = ("cls", "video", "mae", "timm")
TIMM_MODEL = "hiera_small_abswin_256"


def official(name: str) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import hiera
    model = getattr(hiera, name)(pretrained=False)
    if hasattr(model, "head"):
        nn.init.normal_(model.head.projection.weight, std=0.02)
        model.head.act_func = nn.Identity()  # logits in eval mode, as ours
    return model.eval()


def ours_like_official(name: str, reference: nn.Module) -> nn.Module:
    model = abswin.create_model(name, pos_embed="absolute")
    model.load_state_dict(reference.state_dict(), strict=True)
    return model.eval()


def compare(what: str, model: str, reference: str, mine: torch.Tensor, theirs: torch.Tensor) -> dict:
    return {"output": what, "model": model, "reference": reference, "shape": list(mine.shape),
            "max_abs_diff": (mine - theirs).abs().max().item(), "max_abs_value": theirs.abs().max().item()}


@torch.no_grad()
def classifier_case(name: str, shape: tuple[int, ...], seed: int) -> dict:
    torch.manual_seed(seed)
    ref = official(name)
    mine = ours_like_official(name, ref)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    return compare("logits", name, "official", mine(x), ref(x))


@torch.no_grad()
def mae_case(name: str, batch: int, mask_ratio: float, seed: int) -> tuple[list[dict], dict]:
    torch.manual_seed(seed)
    ref = official(name)
    mine = ours_like_official(name, ref)
    x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)
    mask = ref.get_random_mask(x, mask_ratio)  # True = kept; the same tensor for both
    loss_ref, pred_ref, label_ref, _ = ref(x, mask=mask)
    loss, pred, label, _ = mine(x, mask=mask)
    rows = [compare("MAE loss", name, "official", loss, loss_ref),
            compare("MAE predictions", name, "official", pred, pred_ref),
            compare("MAE targets", name, "official", label, label_ref)]
    return rows, {"model": name, "mask_ratio": mask_ratio, "ours": loss.item(), "official": loss_ref.item()}


@torch.no_grad()
def timm_case(seed: int) -> dict:
    import timm

    torch.manual_seed(seed)
    ref = timm.create_model(TIMM_MODEL, pretrained=False).eval()
    for n, p in ref.named_parameters():
        if n.endswith("gamma"):  # LayerScale: make it matter
            nn.init.uniform_(p, 0.2, 0.5)
    nn.init.normal_(ref.head.fc.weight, std=0.02)
    mine = abswin.create_model(TIMM_MODEL).eval()
    abswin.load_checkpoint(mine, f"timm:{TIMM_MODEL}", strict=True, checkpoint=ref.state_dict())
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(seed))
    return compare("logits", TIMM_MODEL, "timm", mine(x), ref(x))


def version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--size", default="base", help="model size of the official cases: tiny, small, base, ...")
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated: {', '.join(CASES)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the results to this JSON file")
    args = p.parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    if not cases or set(cases) - set(CASES):
        raise SystemExit(f"--cases: choose from {', '.join(CASES)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)

    t0 = time.perf_counter()
    mask_ratio = config_arguments("train", "module")["mask_ratio"]  # the image recipe's
    rows, mae_loss = [], None
    for case in cases:
        t = time.perf_counter()
        if case == "cls":
            rows.append(classifier_case(f"hiera_{args.size}_224", (2, 3, 224, 224), args.seed))
        elif case == "video":
            name = f"hiera_{args.size}_16x224"
            if name not in abswin.list_models():
                print(f"skipping video: no {name}")
                continue
            rows.append(classifier_case(name, (1, 3, 16, 224, 224), args.seed))
        elif case == "mae":
            mae_rows, mae_loss = mae_case(f"mae_hiera_{args.size}_224", 2, mask_ratio, args.seed)
            rows += mae_rows
        else:
            rows.append(timm_case(args.seed))
        print(f"  {case}: {time.perf_counter() - t:.1f} s", flush=True)

    print(f"\nfp32, CPU, seed {args.seed}; hiera-transformer {version('hiera-transformer')}, timm {version('timm')}, "
          f"torch {torch.__version__}")
    table(["model", "output", "vs", "max |ours - ref|", "max |ref|"],
          [[r["model"], r["output"], r["reference"], f"{r['max_abs_diff']:.1e}", f"{r['max_abs_value']:.3g}"]
           for r in rows])
    if mae_loss:
        print(f"MAE loss, the same mask: ours {mae_loss['ours']:.5f}, official {mae_loss['official']:.5f}")
    seconds = time.perf_counter() - t0
    print(f"total {seconds:.0f} s")
    if args.json:
        write_results(args.json, {
            "settings": {"dtype": "fp32", "device": "cpu", "seed": args.seed, "size": args.size, "cases": cases,
                         "mask_ratio": mask_ratio},
            "packages": {"hiera-transformer": version("hiera-transformer"), "timm": version("timm")},
            "comparisons": rows, "mae_loss": mae_loss, "seconds": seconds}, __file__, argv)
        print(f"results written to {args.json}")


if __name__ == "__main__":
    main()
