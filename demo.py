"""`make demo`: MAE-pretrain a small Hiera on the bundled digits, then finetune it, and compare
with the same finetuning from random initialisation. Runs on a 2-core CPU in a few minutes.
`make demo-video` (`python demo.py --video`): the same on the bundled video clips (`data=video_demo`:
video Hiera, MAE with mask ratio 0.9, 2x3-view evaluation).

Every step is an ordinary `train.py` / `finetune.py` run (see the commands it prints), so the
demo exercises exactly what users run. Outputs go to `outputs/demo/` (replaced on each call).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def run(script: str, overrides: list[str], env: dict) -> dict:
    cmd = [sys.executable, str(ROOT / script), *overrides]
    print("\n$ " + " ".join(["python", script, *overrides]), flush=True)
    start = time.time()
    subprocess.run(cmd, check=True, cwd=ROOT, env=env)
    run_dir = Path(env["ABSWIN_OUTPUT_ROOT"]) / ("pretrain" if script == "train.py" else "finetune")
    run_dir = run_dir / next(o.split("=", 1)[1] for o in overrides if o.startswith("run_name="))
    results = json.loads((run_dir / "results.json").read_text())
    results["seconds"] = time.time() - start
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", action="store_true", help="the video demo (data=video_demo)")
    ap.add_argument("--pretrain-epochs", type=int, default=None, help="default: 25 (images), 40 (video)")
    ap.add_argument("--finetune-epochs", type=int, default=None, help="default: 2 (images), 5 (video)")
    ap.add_argument("--output", default=None, help="default: outputs/demo (images), outputs/demo_video")
    args = ap.parse_args()
    if args.pretrain_epochs is None:
        args.pretrain_epochs = 40 if args.video else 25
    if args.finetune_epochs is None:
        args.finetune_epochs = 5 if args.video else 2

    out = Path(args.output or ROOT / "outputs" / ("demo_video" if args.video else "demo"))
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ, ABSWIN_OUTPUT_ROOT=str(out))
    common = ["logger=csv", "trainer.enable_progress_bar=false", *(["data=video_demo"] if args.video else [])]

    mae = run("train.py", [*common, "run_name=mae", f"trainer.max_epochs={args.pretrain_epochs}"], env)
    ckpt = Path(mae["checkpoints"]) / "last.ckpt"
    ft = ["data.num_workers=2", f"trainer.max_epochs={args.finetune_epochs}", *common]
    from_mae = run("finetune.py", [*ft, "run_name=ft_from_mae", f"pretrained={ckpt}"], env)
    scratch = run("finetune.py", [*ft, "run_name=ft_from_scratch"], env)

    a, b = from_mae["metrics"]["val/acc1"], scratch["metrics"]["val/acc1"]
    print("\n" + "=" * 72)
    print(f"MAE pretraining ({args.pretrain_epochs} epochs): final loss {mae['metrics']['train/loss']:.3f}"
          f"  [{mae['seconds'] / 60:.1f} min]")
    what = "videos, 2x3 views each" if args.video else "digits"
    print(f"finetuned top-1 on the demo validation {what} ({args.finetune_epochs} epochs each):")
    print(f"  from MAE pretraining : {100 * a:5.1f}%  [{from_mae['seconds'] / 60:.1f} min]")
    print(f"  from random init     : {100 * b:5.1f}%  [{scratch['seconds'] / 60:.1f} min]")
    print(f"checkpoints, CSV logs and plots (position embeddings, MAE reconstructions): {out}/")
    for r in (mae, from_mae, scratch):
        print(f"  {r['run_dir']}")
    print("=" * 72)


if __name__ == "__main__":
    main()
