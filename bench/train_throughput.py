"""Lightning overhead: images/s of the same training step through ``Trainer.fit`` and through a bare loop.

For MAE pretraining and for finetuning, the module is the shipped recipe's (``conf/train.yaml`` /
``conf/finetune.yaml`` composed with ``model.size``, ``data.img_size``, ``data.batch_size``), and every
loop runs that module's own ``training_step`` (model, mask ratio, mixup, loss) with the optimizer and lr
schedule of its own ``configure_optimizers()`` (AdamW groups with the recipe's betas, weight decay and
layer decay; the per-step schedule), under the recipe's precision (``trainer.precision``), on the same
in-memory batches. Three loops:

* ``bare``: a hand-written loop: autocast, ``training_step``, backward, ``optimizer.step``,
  ``zero_grad``, ``scheduler.step``;
* ``Trainer``: ``Trainer.fit`` with no callbacks but the timer: what Lightning's loop adds;
* ``+ callbacks``: ``Trainer.fit`` with the shipped callbacks that act on every step and write no
  file (``conf/callbacks/``: ``nonfinite``, ``exact_resume``, ``throughput``): what our hooks add.

Data loading is excluded on purpose: it is a property of the machine's disks, not of the loop.
``module.warmup_epochs=0``: a benchmark has no epochs to warm up over (the schedule is cosine from the
start; it changes no step's cost). The loops are interleaved (``--rounds``), so machine noise hits all.

    python bench/train_throughput.py                       # hiera_atto at 64px, CPU
    python bench/train_throughput.py --model base --img-size 224 --batch-size 8
    python bench/train_throughput.py --json docs/results/train_throughput.json
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import statistics
import time
import warnings
from types import SimpleNamespace

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # the clone's root

import lightning.pytorch as pl  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from abswin.batch import Batch  # noqa: E402
from training.config import build, compose_config  # noqa: E402
# bench/common.py: Python puts the script's folder (bench/) on sys.path
from common import table, write_results  # noqa: E402

PER_STEP_CALLBACKS = ("nonfinite", "exact_resume", "throughput")  # conf/callbacks/ entries run by "+ callbacks"
LOOPS = ("bare", "Trainer", "+ callbacks")


class Batches(Dataset):
    """The same few pre-made batches, endlessly (no decoding, no augmentation)."""

    def __init__(self, batches, steps):
        self.batches, self.steps = batches, steps

    def __len__(self):
        return self.steps

    def __getitem__(self, i):
        return Batch(*self.batches[i % len(self.batches)])  # (images, labels) as the modules read them


class StepTimer(pl.Callback):
    """Wall time from one batch end to the next: the whole loop, fetching and hooks included."""

    def __init__(self):
        self.times, self._t = [], None

    def on_train_batch_end(self, trainer, *args):
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        if self._t is not None:
            self.times.append(now - self._t)
        self._t = now


def recipe(task: str, args):
    """The composed config of the shipped recipe (train.yaml / finetune.yaml) for this size and batch."""
    overrides = [f"model.size={args.model}", f"data.img_size={args.img_size}", f"data.batch_size={args.batch_size}",
                 "module.warmup_epochs=0"]
    return compose_config("train" if task == "pretrain" else "finetune", overrides)


def make_module(cfg):
    """The module as the entry points build it (finetuning: 10 classes, the batches' labels)."""
    return build(cfg.module, **({"num_classes": 10} if "num_classes" in cfg.module else {}))


def precision(cfg, args) -> str:
    return args.precision or cfg.trainer.precision


def lightning_steps(cfg, batches, args, callbacks: bool) -> list[float]:
    torch.manual_seed(0)
    module = make_module(cfg)
    timer = StepTimer()
    extra = [build(cfg.callbacks[name]) for name in PER_STEP_CALLBACKS if cfg.callbacks.get(name)] if callbacks else []
    trainer = pl.Trainer(
        accelerator=args.device, devices=1, precision=precision(cfg, args), max_steps=args.warmup + args.steps,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[*extra, timer], log_every_n_steps=cfg.trainer.log_every_n_steps, num_sanity_val_steps=0,
        use_distributed_sampler=False,
    )
    loader = DataLoader(Batches(batches, args.warmup + args.steps), batch_size=None)
    trainer.fit(module, train_dataloaders=loader)
    return timer.times[args.warmup - 1:]


def bare_steps(cfg, batches, args) -> list[float]:
    """The module's own training_step, optimizer and schedule, in a hand-written loop."""
    torch.manual_seed(0)
    module = make_module(cfg).to(args.device)
    module.train()
    # configure_optimizers reads the schedule's length from the trainer: all it asks of it
    module.trainer = SimpleNamespace(estimated_stepping_batches=args.warmup + args.steps)
    config = module.configure_optimizers()
    module.trainer = None
    opt, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    mixed = precision(cfg, args)
    if mixed not in ("bf16-mixed", "16-mixed", "32-true", "32"):
        raise SystemExit(f"precision {mixed!r}: the bare loop knows bf16-mixed, 16-mixed and 32-true")
    autocast = torch.autocast(args.device, dtype=torch.bfloat16 if mixed.startswith("bf16") else torch.float16,
                              enabled=mixed.endswith("-mixed"))
    times = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*self.log.*")  # no Trainer: self.log returns at once
        for i in range(args.warmup + args.steps):
            batch = Batch(*(t.to(args.device) for t in batches[i % len(batches)]))
            t0 = time.perf_counter()
            with autocast:
                loss = module.training_step(batch, i)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            scheduler.step()
            if args.device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    return times[args.warmup:]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--model", default="atto", help="model.size: atto, tiny, small, base, ...")
    ap.add_argument("--img-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per loop and round")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (at least 1)")
    ap.add_argument("--rounds", type=int, default=2, help="run the three loops in turn this many times")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", default=None, choices=["bf16-mixed", "32-true"],
                    help="default: the recipe's trainer.precision")
    ap.add_argument("--tasks", default="pretrain,finetune", help="pretrain, finetune or both")
    ap.add_argument("--json", default=None, metavar="OUT", help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    args.warmup = max(1, args.warmup)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not tasks or set(tasks) - {"pretrain", "finetune"}:
        raise SystemExit("--tasks: pretrain, finetune or both")

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)  # no banner per Trainer.fit
    warnings.filterwarnings("ignore", module="lightning")
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(args.batch_size, 3, args.img_size, args.img_size, generator=g),
                torch.randint(0, 10, (args.batch_size,), generator=g)) for _ in range(4)]
    t_start = time.perf_counter()
    rows = []
    for task in tasks:
        cfg = recipe(task, args)
        times = {loop: [] for loop in LOOPS}
        for _ in range(args.rounds):  # interleaved, so machine noise hits all three
            times["bare"] += bare_steps(cfg, batches, args)
            times["Trainer"] += lightning_steps(cfg, batches, args, callbacks=False)
            times["+ callbacks"] += lightning_steps(cfg, batches, args, callbacks=True)
        med = {loop: statistics.median(v) for loop, v in times.items()}
        rows.append({"task": task, "model": cfg.module.model_name, "precision": precision(cfg, args),
                     "mask_ratio": cfg.module.get("mask_ratio"), "betas": list(cfg.module.betas),
                     "layer_decay": cfg.module.get("layer_decay"),
                     "bare_img_s": args.batch_size / med["bare"],
                     "trainer_img_s": args.batch_size / med["Trainer"],
                     "callbacks_img_s": args.batch_size / med["+ callbacks"],
                     "trainer_overhead": med["Trainer"] / med["bare"] - 1,
                     "callbacks_overhead": med["+ callbacks"] / med["bare"] - 1})
    seconds = time.perf_counter() - t_start
    print(f"hiera_{args.model} at {args.img_size}px, batch {args.batch_size}, {rows[0]['precision']}, {args.device}, "
          f"{torch.get_num_threads()} threads; median of {args.rounds} x {args.steps} steps per loop")
    table(["task", "bare img/s", "Trainer img/s", "+ callbacks img/s", "Trainer overhead", "+ callbacks overhead"],
          [[r["task"], f"{r['bare_img_s']:.1f}", f"{r['trainer_img_s']:.1f}", f"{r['callbacks_img_s']:.1f}",
            f"{100 * r['trainer_overhead']:.1f}%", f"{100 * r['callbacks_overhead']:.1f}%"] for r in rows])
    print(f"total {seconds:.0f} s")
    if args.json:
        write_results(args.json, {
            "settings": {"model": args.model, "img_size": args.img_size, "batch_size": args.batch_size,
                         "steps": args.steps, "warmup": args.warmup, "rounds": args.rounds, "device": args.device,
                         "callbacks": list(PER_STEP_CALLBACKS)},
            "tasks": rows, "seconds": seconds}, __file__, argv)
        print(f"results written to {args.json}")


if __name__ == "__main__":
    main()
