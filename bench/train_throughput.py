"""Lightning overhead: images/s of a training step through our Lightning modules vs. the bare step.

For MAE pretraining and for finetuning, both loops run the same module's ``training_step``
(same model, loss, AdamW groups, lr schedule, autocast) on the same in-memory batches, so the
difference is what Lightning (and our hooks: throughput, step seeding, logging) adds. Data
loading is excluded on purpose: it is a property of the machine's disks, not of the loop.

    python bench/train_throughput.py                       # hiera_atto at 64px, CPU
    python bench/train_throughput.py --model base --img-size 224 --batch-size 8
"""

from __future__ import annotations

import argparse
import os
import sys
import statistics
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # the clone's root

import lightning.pytorch as pl  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from abswin.batch import Batch  # noqa: E402
from abswin.optim import param_groups_lrd  # noqa: E402
from training.config import config_arguments  # noqa: E402
from training import FinetuneModule, MAEPretrainModule  # noqa: E402
from training.classifier_module import soft_target_cross_entropy  # noqa: E402


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


def make_module(task: str, args):
    """The shipped recipe's module (train.yaml / finetune.yaml) for this size and batch."""
    config = "train" if task == "pretrain" else "finetune"
    kw = config_arguments(config, "module", [f"model.size={args.model}", f"data.img_size={args.img_size}",
                                             f"data.batch_size={args.batch_size}", "module.warmup_epochs=0"])
    del kw["_target_"]
    if task == "pretrain":
        return MAEPretrainModule(**kw)
    return FinetuneModule(**dict(kw, num_classes=10))


def lightning_steps(task, batches, args) -> list[float]:
    torch.manual_seed(0)
    module = make_module(task, args)
    timer = StepTimer()
    trainer = pl.Trainer(
        accelerator=args.device, devices=1, precision=args.precision, max_steps=args.warmup + args.steps,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[timer], log_every_n_steps=1, num_sanity_val_steps=0, use_distributed_sampler=False,
    )
    loader = DataLoader(Batches(batches, args.warmup + args.steps), batch_size=None)
    trainer.fit(module, train_dataloaders=loader)
    return timer.times[args.warmup - 1:]


def bare_steps(task, batches, args) -> list[float]:
    """The same step written by hand: the module's training_step (forward, mixup, loss), backward, AdamW."""
    torch.manual_seed(0)
    module = make_module(task, args).to(args.device)
    module.train()
    opt = torch.optim.AdamW(param_groups_lrd(module.model, 0.05, 0.65), lr=1e-3, betas=(0.9, 0.95))
    autocast = torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.precision == "bf16-mixed")
    times = []
    for i in range(args.warmup + args.steps):
        x, y = (t.to(args.device) for t in batches[i % len(batches)])
        t0 = time.perf_counter()
        with autocast:  # what training_step computes, minus its logging
            if task == "pretrain":
                loss = module.model(x, mask_ratio=0.6)[0]
            else:
                x, target = module.mix(x, y)
                loss = soft_target_cross_entropy(module.model(x), target)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if args.device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times[args.warmup:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="atto", help="size: atto, tiny, small, base, ...")
    ap.add_argument("--img-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2, help="alternate bare/Lightning this many times")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", default="bf16-mixed", choices=["bf16-mixed", "32-true"])
    args = ap.parse_args()

    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(args.batch_size, 3, args.img_size, args.img_size, generator=g),
                torch.randint(0, 10, (args.batch_size,), generator=g)) for _ in range(4)]
    print(f"hiera_{args.model} at {args.img_size}px, batch {args.batch_size}, {args.precision}, {args.device}, "
          f"{torch.get_num_threads()} threads; median of {args.rounds} x {args.steps} steps")
    print(f"{'task':<10}{'bare img/s':>12}{'Lightning img/s':>17}{'overhead':>10}")
    for task in ("pretrain", "finetune"):
        bare, light = [], []
        for _ in range(args.rounds):  # interleaved, so machine noise hits both
            bare += bare_steps(task, batches, args)
            light += lightning_steps(task, batches, args)
        b, l = statistics.median(bare), statistics.median(light)
        print(f"{task:<10}{args.batch_size / b:>12.1f}{args.batch_size / l:>17.1f}{100 * (l / b - 1):>9.1f}%")


if __name__ == "__main__":
    main()
