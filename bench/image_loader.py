"""CPU cost of the image input pipeline per sample: ours vs our float32 path of before vs timm's.

The loader workers are what a GPU waits on: each sample costs a JPEG decode and the training
transform on a CPU core. On the same folder of ImageNet-sized JPEGs (written here, 500x375, quality
90), in one process and one thread (as in a loader worker), timed in interleaved rounds (median):

* ``ours``: decode (libjpeg-turbo) + the shipped recipe's worker transform (crop, flip), uint8 out;
  RandAugment, normalisation and random erasing run on the device (``datamodules/on_device.py``);
* ``float32 in the worker``: what the workers did before: the same plus, per sample, RandAugment
  (finetuning), ``ToDtype``, ``Normalize`` and ``RandomErasing`` (finetuning), float32 out;
* ``timm``: ``timm.data.create_transform(..., use_prefetcher=True)`` on a PIL image, as timm's
  ``create_loader`` runs it (uint8 out; its prefetcher normalises and erases on the device).

Finetuning: RandomResizedCrop (0.08-1), flip, RandAugment m9 mstd0.5 (timm: ``rand-m9-mstd0.5-inc1``),
random erasing 0.25. MAE: RandomResizedCrop (0.2-1) and flip. And the bytes per sample that go
through shared memory and PCIe. Collating is left out (the same for all: uint8 stacked). What
ours moved to the device is timed apart (``device step``: RandAugment, normalisation and erasing of
batches of 64 on this machine's CPU, one thread): on a GPU it costs GPU time instead of worker time.

    python bench/image_loader.py
    python bench/image_loader.py --images 64 --rounds 1 --json docs/results/image_loader.json
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms import v2

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from abswin.normalization import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from abswin.batch import Batch  # noqa: E402
from datamodules.randaugment import draw_ops, rand_augment  # noqa: E402
from datamodules.transforms import decode  # noqa: E402
from training.config import build_data, compose_config, register_resolvers  # noqa: E402

from common import table, write_results  # noqa: E402

TASKS = {"finetune": ("finetune", []), "pretrain": ("train", [])}
TIMM_RANDAUG = "rand-m9-mstd0.5-inc1"


def write_jpegs(folder: Path, n: int) -> list[Path]:
    """``n`` ImageNet-sized JPEGs (500x375, quality 90) of smooth random content, in two class
    folders of ``train/`` (four of them also in ``val/``); returns the training files."""
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        coarse = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((500, 375), Image.BICUBIC)
        noise = rng.normal(0, 12, (375, 500, 3))
        image = Image.fromarray(np.clip(np.asarray(image) + noise, 0, 255).astype(np.uint8))
        path = folder / "train" / f"class{i % 2}" / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, quality=90)
        paths.append(path)
    for path in paths[:4]:  # the data module wants a val split too
        (folder / "val" / path.parent.name).mkdir(parents=True, exist_ok=True)
        (folder / "val" / path.parent.name / path.name).write_bytes(path.read_bytes())
    return paths


def recipe_module(task: str, root: Path, size: int):
    """The shipped recipe's data module on ``root`` (data=imagefolder: the in1k augmentation)."""
    config, extra = TASKS[task]
    cfg = compose_config(config, ["data=imagefolder", f"data.root={root}", f"data.img_size={size}",
                                  "data.batch_size=32", "data.num_workers=1", *extra])
    return build_data(cfg), cfg


def timm_transform(task: str, size: int):
    from timm.data import create_transform

    if task == "finetune":
        return create_transform(size, is_training=True, auto_augment=TIMM_RANDAUG, re_prob=0.25,
                                interpolation="bicubic", use_prefetcher=True)
    return create_transform(size, is_training=True, scale=(0.2, 1.0), color_jitter=None, auto_augment=None,
                            interpolation="bicubic", use_prefetcher=True)


def worker_randaugment(settings):
    """RandAugment one sample at a time, as the workers ran it before (the same ops)."""
    return lambda image: rand_augment(image[None], [draw_ops(torch.default_generator, settings)], settings)[0]


def device_seconds(dm, paths: list[Path], rounds: int, batch_size: int = 64) -> float:
    """Median CPU seconds per sample of ``dm.model_input`` on training batches of uint8 crops."""
    crops = [dm.train_transform()(decode(Path(p).read_bytes())) for p in paths[:batch_size]]
    batch = Batch(torch.stack(crops), torch.zeros(len(crops), dtype=torch.long), indices=torch.arange(len(crops)))
    times = []
    for epoch in range(rounds + 1):
        started = time.process_time()
        dm.model_input(batch, epoch)
        if epoch:
            times.append((time.process_time() - started) / len(crops))
    return statistics.median(times)


def pipelines(task: str, dm, size: int) -> dict:
    """name -> function(path) -> the worker's sample."""
    from PIL import Image

    ours = dm.train_transform()
    before = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if task == "finetune":
        before = [worker_randaugment(dm.randaug), *before, v2.RandomErasing(p=dm.random_erasing, value="random")]
    before = v2.Compose(before)
    theirs = timm_transform(task, size)

    def timm_sample(path):
        with Image.open(path) as im:
            image = im.convert("RGB")
        for _ in range(10):
            try:
                return theirs(image)
            except ValueError:  # magnitude 10: timm's PosterizeIncreasing asks Pillow for 0 bits, which it
                continue        # refuses; drawn again (rare: it makes timm's time slightly worse, never ours)
        raise RuntimeError("timm's RandAugment failed ten times")

    return {"ours": lambda p: ours(decode(Path(p).read_bytes())),
            "float32 in the worker": lambda p: before(ours(decode(Path(p).read_bytes()))),
            "timm": timm_sample}


def cpu_seconds(fns: dict, paths: list[Path], rounds: int) -> dict[str, float]:
    """Median CPU seconds per sample of each pipeline, rounds interleaved (order alternating)."""
    times = {name: [] for name in fns}
    for r in range(rounds + 1):  # the first round warms up
        for name in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
            torch.manual_seed(r)
            random.seed(r)  # timm's augmentations draw from Python's generator
            started = time.process_time()
            for path in paths:
                fns[name](path)
            if r:
                times[name].append((time.process_time() - started) / len(paths))
    return {name: statistics.median(t) for name, t in times.items()}


def sample_bytes(sample) -> int:
    tensor = torch.as_tensor(np.asarray(sample)) if not isinstance(sample, torch.Tensor) else sample
    return tensor.numel() * tensor.element_size()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=192, help="JPEGs written and transformed per round")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--rounds", type=int, default=3, help="timed rounds (after one warm-up round)")
    p.add_argument("--json", default=None, metavar="OUT")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    register_resolvers()
    torch.set_num_threads(1)  # as in a loader worker
    results = {"settings": {"images": args.images, "size": args.size, "rounds": args.rounds, "threads": 1},
               "tasks": {}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = write_jpegs(root, args.images)
        for task in TASKS:
            dm, _ = recipe_module(task, root, args.size)
            fns = pipelines(task, dm, args.size)
            seconds = cpu_seconds(fns, paths, args.rounds)
            row = {name: {"cpu_s_per_1000": 1e3 * s,
                          "bytes_per_sample": sample_bytes(fns[name](paths[0]))} for name, s in seconds.items()}
            row["ours"]["device_step_cpu_s_per_1000"] = 1e3 * device_seconds(dm, paths, 3 * args.rounds)
            results["tasks"][task] = row
            print(f"\n{task}: {args.size} px, CPU seconds per 1,000 samples (one thread), bytes per sample")
            table(["pipeline", "CPU s / 1000", "vs float32 path", "vs timm", "bytes"],
                  [[name, r["cpu_s_per_1000"], r["cpu_s_per_1000"] / row["float32 in the worker"]["cpu_s_per_1000"],
                    r["cpu_s_per_1000"] / row["timm"]["cpu_s_per_1000"], r["bytes_per_sample"]]
                   for name, r in row.items()])
            print(f"ours, on the device (here this CPU): {row['ours']['device_step_cpu_s_per_1000']:.3f} s / 1000")
    if args.json:
        write_results(args.json, results, __file__, argv)


if __name__ == "__main__":
    main()
