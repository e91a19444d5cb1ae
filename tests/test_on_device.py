"""The input pipeline's last steps on the device (datamodules/on_device.py): normalisation bit for
bit as torchvision's, random erasing equal in distribution to torchvision's RandomErasing and seeded
per sample, and the data module's Lightning hook that applies them."""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch
from torchvision.transforms import v2

from abswin.batch import Batch
from abswin.normalization import IMAGENET_MEAN, IMAGENET_STD, normalize
from datamodules.on_device import ERASING_TAG, random_erase, to_model_input
from abswin.seeding import derive_seed
from recipe_data_modules import data_module


def test_normalize_is_torchvisions_bit_for_bit():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4, 3, 20, 24), dtype=torch.uint8, generator=g)
    expected = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    assert torch.equal(normalize(images, 1), torch.stack([expected(x) for x in images]))
    clips = torch.randint(0, 256, (2, 3, 4, 8, 8), dtype=torch.uint8, generator=g)  # [N, 3, T, H, W]
    frames = clips.permute(0, 2, 1, 3, 4)  # torchvision's layout: [N, T, 3, H, W]
    assert torch.equal(normalize(clips, 1), torch.stack([expected(x) for x in frames]).permute(0, 2, 1, 3, 4))


def boxes(erased: torch.Tensor) -> list[tuple[int, int, int, int] | None]:
    """(top, left, h, w) of the non-zero box of each [C, H, W] sample (None: not erased)."""
    out = []
    for x in erased:
        rows, cols = x.ne(0).any(0).any(1).nonzero(), x.ne(0).any(0).any(0).nonzero()
        out.append(None if len(rows) == 0 else (int(rows[0]), int(cols[0]), len(rows), len(cols)))
    return out


def summary(found: list) -> dict:
    erased = [b for b in found if b is not None]
    return {"rate": len(erased) / len(found),
            "area": sum(h * w for _, _, h, w in erased) / len(erased) / (32 * 48),
            "log_aspect": sum(math.log(h / w) for _, _, h, w in erased) / len(erased),
            "top": sum(t + h / 2 for t, _, h, _ in erased) / len(erased) / 32,
            "left": sum(left + w / 2 for _, left, _, w in erased) / len(erased) / 48}


def test_random_erasing_is_torchvisions_in_distribution():
    """4,000 samples on fixed seeds: the share erased, the box's area, aspect and place match
    torchvision's RandomErasing(p=0.25, value="random") within sampling error."""
    n, p = 4000, 0.25
    ours = random_erase(torch.zeros(n, 3, 32, 48), [derive_seed(1, i) for i in range(n)], p)
    torch.manual_seed(1)
    theirs = torch.stack([v2.RandomErasing(p=p, value="random")(torch.zeros(3, 32, 48)) for _ in range(n)])
    a, b = summary(boxes(ours)), summary(boxes(theirs))
    assert abs(a["rate"] - p) < 0.025 and abs(b["rate"] - p) < 0.025
    assert abs(a["area"] - b["area"]) < 0.02 and abs(a["log_aspect"] - b["log_aspect"]) < 0.15
    assert abs(a["top"] - b["top"]) < 0.03 and abs(a["left"] - b["left"]) < 0.03
    noise = ours[ours.ne(0)]  # the erased pixels: standard normal noise
    assert abs(noise.mean().item()) < 0.02 and abs(noise.std().item() - 1) < 0.02


def test_random_erasing_is_seeded_per_sample():
    """The same (seed, epoch, index) erases the same box with the same noise in any batch, at any
    position (so a resume or another device count gives the same sample); another epoch does not."""
    images = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)

    def erased(indices: list[int], epoch: int, order: list[int]) -> torch.Tensor:
        batch = Batch(images[order], torch.zeros(len(order), dtype=torch.long), indices=torch.tensor(indices))
        return to_model_input(batch, random_erasing=1.0, seed=7, epoch=epoch).images

    first = erased([10, 11, 12], 0, [0, 1, 2])
    again = erased([12, 10], 0, [2, 0])
    assert torch.equal(again[0], first[2]) and torch.equal(again[1], first[0])
    assert not torch.equal(erased([10, 11, 12], 1, [0, 1, 2]), first)
    assert not torch.equal(first, normalize(images, 1))  # erased (p = 1)
    evaluation = to_model_input(Batch(images, torch.zeros(3, dtype=torch.long), indices=torch.arange(3)), 1.0, 7)
    assert torch.equal(evaluation.images, normalize(images, 1))  # no epoch: evaluation, never erased


def test_a_clip_gets_one_box_and_one_noise_for_all_frames():
    clips = torch.zeros(4, 3, 5, 16, 16, dtype=torch.uint8)  # two videos, two clips each
    batch = Batch(clips, torch.zeros(4, dtype=torch.long), clips_per_sample=2, indices=torch.tensor([3, 3, 8, 8]))
    out = to_model_input(batch, random_erasing=1.0, seed=0, epoch=0).images
    black = normalize(torch.zeros(3, 1, 1, 1, dtype=torch.uint8), 0)
    for clip in out:
        erased = clip.ne(black)  # [3, T, H, W]
        assert erased.any() and all(torch.equal(clip[:, t], clip[:, 0]) for t in range(5))
    assert not torch.equal(out[0], out[1])  # the two clips of one video: their own boxes
    seeds = [derive_seed(0, ERASING_TAG, 0, index, clip) for index, clip in [(3, 0), (3, 1), (8, 0), (8, 1)]]
    assert torch.equal(random_erase(normalize(clips, 1), seeds, 1.0), out)


def test_the_data_module_hook_erases_only_training_batches_of_finetuning(tmp_path):
    """Lightning's on_after_batch_transfer: normalised always; erased in training (finetune mode,
    random_erasing > 0) but not in validation, and never in MAE pretraining."""
    from launching import write_image_folder

    root = write_image_folder(tmp_path / "data", train_per_class=4)
    for mode, erasing, training, erased in [("finetune", 1.0, True, True), ("finetune", 1.0, False, False),
                                            ("pretrain", 1.0, True, False), ("finetune", 0.0, True, False)]:
        dm = data_module("imagefolder", root, num_workers=0, mode=mode, random_erasing=erasing, img_size=32,
                         batch_size=4, randaug_mstd=None)
        dm.setup("fit")
        batch = next(iter(dm.train_dataloader()))
        dm.trainer = SimpleNamespace(training=training, current_epoch=0)
        out = dm.on_after_batch_transfer(batch, 0)
        assert out.images.dtype == torch.float32
        assert torch.equal(out.images, normalize(batch.images, 1)) != erased, (mode, erasing, training)
