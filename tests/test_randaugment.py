"""RandAugment on the device (datamodules/randaugment.py): the same ops and magnitudes as
torchvision's RandAugment, timm's magnitude noise and op probability, seeded per sample and shared by
the frames of a clip, and applied by the data module's hook to finetuning training batches only."""

from __future__ import annotations

import math
import re
from collections import Counter
from types import SimpleNamespace

import pytest
import torch
from torchvision.transforms import v2

from abswin.batch import Batch
from abswin.normalization import normalize
from abswin.seeding import derive_seed
from datamodules.randaugment import OP_NAMES, OPS, RandAugmentSettings, draw_ops, rand_augment
from datamodules.transforms import randaug_settings
from recipe_data_modules import data_module

FILL = (124, 116, 104)


def sample_image():
    """A 3x24x32 uint8 image with structure in both directions and colour, not full range (so
    that every op changes it in its own way)."""
    y, x = torch.meshgrid(torch.arange(24), torch.arange(32), indexing="ij")
    image = torch.stack([40 + 5 * x, 30 + 7 * y, 60 + 3 * (x + y) % 97])
    image[:, 8:14, 10:20] = torch.tensor([200, 40, 90])[:, None, None]
    return image.clamp(0, 255).to(torch.uint8)


def outcome_shares(images: torch.Tensor) -> dict[bytes, float]:
    counts = Counter(bytes(x.flatten().tolist()) for x in images)
    return {key: n / len(images) for key, n in counts.items()}


def test_one_op_gives_torchvisions_outputs_with_torchvisions_odds():
    """One op at magnitude 9 of 11 bins, no noise: over 2,800 samples each, the device version
    produces exactly the images torchvision's RandAugment produces (every op, both signs), each
    about as often."""
    n, image = 2800, sample_image()
    torch.manual_seed(0)
    theirs = v2.RandAugment(num_ops=1, magnitude=9, num_magnitude_bins=11, interpolation=v2.InterpolationMode.BILINEAR,
                            fill=list(FILL))
    expected = outcome_shares(torch.stack([theirs(image) for _ in range(n)]))
    settings = RandAugmentSettings(num_ops=1, magnitude=9, magnitude_std=0.0, op_prob=1.0, num_bins=11, fill=FILL)
    draws = [draw_ops(torch.Generator().manual_seed(derive_seed(3, i)), settings) for i in range(n)]
    found = outcome_shares(rand_augment(image.expand(n, -1, -1, -1), draws, settings))
    assert len(expected) >= 20  # Identity, 9 signed ops x 2 signs, 4 unsigned (some may coincide)
    assert set(found) == set(expected)
    assert max(abs(found[k] - expected[k]) for k in expected) < 0.025


def test_magnitude_noise_and_op_probability():
    """timm's mstd: magnitude ~ N(9, 0.5) rounded (bin 9 with probability erf(1/sqrt2) = 0.683, 8 and
    10 0.159 each); each of 2 ops kept with probability 0.5 (0, 1, 2 ops: 1/4, 1/2, 1/4); ops uniform."""
    n = 6000
    settings = RandAugmentSettings(num_ops=2, magnitude=9, magnitude_std=0.5, op_prob=0.5, num_bins=11)
    draws = [draw_ops(torch.Generator().manual_seed(derive_seed(5, i)), settings) for i in range(n)]
    counts = Counter(len(d) for d in draws)
    for k, p in {0: 0.25, 1: 0.5, 2: 0.25}.items():
        assert abs(counts[k] / n - p) < 0.02, (k, counts)
    bins = Counter(d[0][1] for d in draws if d)
    total = sum(bins.values())
    inner = math.erf(1 / math.sqrt(2))
    assert abs(bins[9] / total - inner) < 0.02 and abs(bins[10] / total - (1 - inner) / 2) < 0.02
    ops = Counter(op for d in draws for op, _, _ in d)
    assert len(ops) == len(OP_NAMES) and max(ops.values()) / min(ops.values()) < 1.4
    signs = Counter(neg for d in draws for op, _, neg in d if OPS[OP_NAMES[op]][1])
    assert abs(signs[True] / sum(signs.values()) - 0.5) < 0.03
    capped = draw_ops(torch.Generator().manual_seed(0), RandAugmentSettings(magnitude=10, magnitude_std=5.0, op_prob=1))
    assert all(0 <= b <= 10 for _, b, _ in capped)


def augmented(images, indices, epoch, clips_per_sample=1, seed=7):
    from datamodules.on_device import to_model_input

    batch = Batch(images, torch.zeros(len(images), dtype=torch.long), clips_per_sample=clips_per_sample,
                  indices=torch.tensor(indices))
    settings = RandAugmentSettings(num_ops=2, magnitude=9, op_prob=1.0)
    return to_model_input(batch, seed=seed, epoch=epoch, randaug=settings).images


def test_seeded_per_sample_whatever_the_batch():
    """The same (seed, epoch, index) gets the same ops in any batch, at any position; another epoch
    other ops; evaluation batches (no epoch) are not augmented."""
    images = sample_image().expand(4, -1, -1, -1).clone()
    first = augmented(images, [10, 11, 12, 13], 0)
    again = augmented(images[[3, 0]], [13, 10], 0)
    assert torch.equal(again[0], first[3]) and torch.equal(again[1], first[0])
    assert not torch.equal(augmented(images, [10, 11, 12, 13], 1), first)
    assert len({bytes(x.flatten().to(torch.uint8).tolist()) for x in (first * 50).round()}) > 1  # per sample
    from datamodules.on_device import to_model_input

    plain = Batch(images, torch.zeros(4, dtype=torch.long), indices=torch.arange(4))
    assert torch.equal(to_model_input(plain, seed=7, randaug=RandAugmentSettings(op_prob=1.0)).images,
                       normalize(images, 1))


def test_a_clip_gets_the_same_ops_on_every_frame():
    """[N, 3, T, H, W] clips of identical frames keep identical frames over many draws; the two clips
    of one video (repeated sampling) draw their own ops."""
    frame = sample_image()
    clips = frame[:, None].expand(3, 5, -1, -1).expand(16, -1, -1, -1, -1).clone()
    indices = [i // 2 for i in range(16)]
    out = augmented(clips, indices, 0, clips_per_sample=2)
    for clip in out:
        assert all(torch.equal(clip[:, t], clip[:, 0]) for t in range(5))
    assert sum(not torch.equal(out[i], out[i + 1]) for i in range(0, 16, 2)) >= 5


def test_the_hook_augments_only_finetuning_training_batches(tmp_path):
    from launching import write_image_folder

    root = write_image_folder(tmp_path / "data", train_per_class=4)
    for mode, mstd, training, changed in [("finetune", 0.5, True, True), ("finetune", 0.5, False, False),
                                          ("pretrain", 0.5, True, False), ("finetune", None, True, False)]:
        dm = data_module("imagefolder", root, num_workers=0, mode=mode, random_erasing=0.0, img_size=32,
                         batch_size=4, randaug_mstd=mstd, randaug_op_prob=1.0)
        dm.setup("fit")
        batch = next(iter(dm.train_dataloader()))
        dm.trainer = SimpleNamespace(training=training, current_epoch=0)
        out = dm.on_after_batch_transfer(batch, 0)
        assert torch.equal(out.images, normalize(batch.images, 1)) != changed, (mode, mstd, training)


@pytest.mark.parametrize("name,value,allowed", [("num_ops", -1, ">= 0"), ("num_ops", 0.5, "whole number"), ("magnitude", 11, "[0, randaug_num_bins"),
                                                ("op_prob", 1.5, "[0, 1]"), ("mstd", -0.5, ">= 0"),
                                                ("num_bins", 1, ">= 2")])
def test_settings_out_of_range_are_refused_in_one_line(name, value, allowed):
    values = dict(num_ops=2, magnitude=9, mstd=0.5, op_prob=0.5, num_bins=11) | {name: value}
    with pytest.raises(ValueError, match=rf"^data\.randaug_{name}={value} must be .*{re.escape(allowed)}") as error:
        randaug_settings(**values)
    assert "\n" not in str(error.value)
    assert randaug_settings(2, 9, None, 0.5, 11) is None and randaug_settings(0, 9, 0.5, 0.5, 11) is None
