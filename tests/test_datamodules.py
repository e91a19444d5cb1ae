"""The data modules on real (small) files: shapes, eval transform, class index, corrupt images,
one-line errors, global -> per-device batch, eval sharding, the bundled MNIST demo set."""

from __future__ import annotations

import inspect
import io
import json
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageDataModule,
    ResumableSampler,
    ShardSampler,
    build_demo_dataset,
    eval_transform,
)
from abswin.normalization import normalize
from recipe_data_modules import data_module

pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning")

CLASSES = ("cat", "dog")


def _save(path: Path, rng, size=(40, 56), fmt="JPEG", mode="RGB") -> None:
    shape = (size[0], size[1], 3) if mode == "RGB" else size
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(path, fmt)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """root/{train,val}/{cat,dog}: JPEG, jpg, PNG and grayscale images of varying sizes, plus a
    corrupt (random bytes) and a truncated JPEG in train."""
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for split, n in (("train", 6), ("val", 3)):
        for c in CLASSES:
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                ext, fmt = [("JPEG", "JPEG"), ("jpg", "JPEG"), ("png", "PNG")][i % 3]
                _save(d / f"{c}_{i}.{ext}", rng, size=(30 + 7 * i, 60 - 3 * i), fmt=fmt,
                      mode="L" if i == 1 else "RGB")
    (root / "train/cat/corrupt.JPEG").write_bytes(rng.bytes(2000))
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    (root / "train/dog/truncated.JPEG").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (root / "train/dog/notes.txt").write_text("not an image")
    return root


def _dm(root, **kw) -> ImageDataModule:
    kw = {"img_size": 32, "batch_size": 2, "num_workers": 0, **kw}
    return data_module("imagefolder", root, **kw)


def test_train_and_val_batches_and_corrupt_images_are_skipped(folder, caplog):
    caplog.set_level(logging.WARNING, logger="datamodules")
    dm = _dm(folder)
    assert dm.num_classes == 2 and dm.classes == list(CLASSES)
    dm.setup("fit")
    assert len(dm.train_set) == 14 and len(dm.val_set) == 6  # notes.txt is not an image

    seen = 0
    for batch in dm.train_dataloader():  # the whole epoch completes
        images, labels = batch.images, batch.labels
        assert images.dtype == torch.uint8 and images.shape[1:] == (3, 32, 32)  # a quarter of float32's bytes
        assert labels.dtype == torch.int64 and labels.shape == (images.shape[0],)
        assert torch.equal(dm.model_input(batch).images, normalize(images, 1))  # on the device: normalised
        seen += images.shape[0]
    assert seen == 12 and dm.num_skipped == 2
    lines = [r.getMessage() for r in caplog.records if r.name == "datamodules"]
    for bad in ("corrupt.JPEG", "truncated.JPEG"):
        hits = [m for m in lines if bad in m]
        assert len(hits) == 1 and "\n" not in hits[0] and str(folder) in hits[0]

    batch = next(iter(dm.val_dataloader()))  # evaluation batches report unreadable images
    images, labels, missing = batch.images, batch.labels, batch.missing
    assert images.shape == (2, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.tolist() == [0, 0] and missing.tolist() == []
    all_labels = torch.cat([b.labels for b in dm.val_dataloader()])
    assert all_labels.tolist() == [0, 0, 0, 1, 1, 1]
    # normalised with the ImageNet statistics: a gray-ish random image is roughly centred
    normalised = dm.model_input(batch).images  # on the device: ImageNet-normalised
    assert normalised.dtype == torch.float32 and -2.2 < normalised.min() and normalised.max() < 2.7


def test_pretrain_mode_val_optional(folder):
    import shutil

    shutil.rmtree(folder / "val")
    dm = _dm(folder, mode="pretrain")
    dm.setup("fit")
    assert dm.val_dataloader() == []
    assert dm.scale == (0.2, 1.0)
    names = [type(t).__name__ for t in dm.train_set.transform.transforms]
    assert names == ["RandomResizedCrop", "RandomHorizontalFlip"]  # uint8 out: normalised on the device
    ft = [type(t).__name__ for t in _dm(folder).train_transform().transforms]
    assert ft == ["RandomResizedCrop", "RandomHorizontalFlip"]  # RandAugment and erasing: on the device


def test_eval_transform_resize_center_crop(folder):
    # 100x200 image, white 50x50 centre on black: crop_pct 0.5 at 20 px resizes the shorter side to
    # 40 and crops the central 20x20, i.e. exactly the white square
    x = torch.zeros(3, 100, 200, dtype=torch.uint8)
    x[:, 25:75, 75:125] = 255
    white = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    black = -torch.tensor(IMAGENET_MEAN) / torch.tensor(IMAGENET_STD)
    t = eval_transform(20, crop_pct=0.5)
    assert t(x).dtype == torch.uint8
    y = normalize(t(x), 0)
    assert y.shape == (3, 20, 20) and y.dtype == torch.float32
    assert torch.equal(y, normalize(t(x), 0))  # deterministic
    assert torch.allclose(y[:, 2:-2, 2:-2], white[:, None, None].expand(3, 16, 16), atol=1e-5)
    # crop_pct 1.0: resize to 20 (the centre 100x100 of the original), the square is the middle half
    y = normalize(eval_transform(20, crop_pct=1.0)(x), 0)
    assert torch.allclose(y[:, 0, 0], black, atol=1e-5) and torch.allclose(y[:, 10, 10], white, atol=1e-5)
    # ImageNet's numbers: 224 px at crop_pct 0.875 resizes the shorter side to 256 and crops the
    # centre 224: of a 256x512 image with a 16 px black border, exactly the white inside
    x = torch.zeros(3, 256, 512, dtype=torch.uint8)
    x[:, 16:240, 144:368] = 255
    y = normalize(eval_transform(224, crop_pct=0.875)(x), 0)
    assert y.shape == (3, 224, 224) and torch.allclose(y, white[:, None, None].expand(3, 224, 224), atol=1e-5)


@pytest.mark.parametrize("kind", ["json", "txt"])
def test_class_index_file(folder, tmp_path, kind):
    if kind == "json":
        path = tmp_path / "classes.json"
        path.write_text(json.dumps({"dog": 0, "cat": 1}))
    else:
        path = tmp_path / "classes.txt"
        path.write_text("dog\ncat\n")
    dm = _dm(folder, class_index=str(path))
    assert dm.num_classes == 2 and dm.classes == ["dog", "cat"]
    dm.setup("validate")
    labels = {p.decode().split("/")[0]: int(y) for p, y in zip(dm.val_set.paths, dm.val_set.labels)}
    assert labels == {"dog": 0, "cat": 1}


def _one_line_error(fn, path):
    with pytest.raises(FileNotFoundError) as exc:
        fn()
    msg = str(exc.value)
    assert "\n" not in msg and str(path) in msg and "data.root" in msg


def test_missing_or_empty_root_is_a_one_line_error(tmp_path):
    _one_line_error(lambda: _dm(tmp_path / "nope"), tmp_path / "nope")
    _one_line_error(lambda: _dm(tmp_path), tmp_path / "train")  # no train/ folder
    (tmp_path / "train").mkdir()
    _one_line_error(lambda: _dm(tmp_path), tmp_path / "train")  # no class folders
    (tmp_path / "train" / "cat").mkdir()  # a class folder without images is no class
    _one_line_error(lambda: _dm(tmp_path), tmp_path / "train")


def test_an_epoch_holds_the_same_samples_on_any_split():
    """The global batch 8 as 1 device x 4 x accumulation 2, 2 x 4 x 1 or 4 x 2 x 1: each epoch
    trains the same samples in the same steps (a multiple of the global batch, never a short step)."""
    def steps(replicas, per_device, accumulation):
        ranks = [list(ResumableSampler(101, replicas, r, per_device, seed=3, accumulation=accumulation))
                 for r in range(replicas)]
        batches = [[k.index for k in rank[i:i + per_device]] for rank in ranks for i in range(0, len(rank), per_device)]
        per_step = per_device * replicas * accumulation
        flat = sorted(i for b in batches for i in b)
        return len(flat) // per_step, set(flat)

    assert steps(1, 4, 2) == steps(2, 4, 1) == steps(4, 2, 1)
    assert steps(1, 4, 2)[0] == 101 // 8


def test_a_mid_epoch_position_of_another_split_is_refused(folder):
    """A mid-epoch checkpoint counts its own split's batches: continuing it on other devices or with
    another per-device batch would skip or repeat samples. An epoch-end position continues anywhere."""
    dm = _dm(folder, batch_size=8)
    dm.trainer = SimpleNamespace(world_size=2, accumulate_grad_batches=2, global_rank=0)
    dm.setup("fit")
    dm.load_state_dict({"train_position": {"epoch": 0, "batches_done": 2, "split": [1, 2, 4]}})
    with pytest.raises(ValueError, match=r"mid-epoch with 1 device\(s\) x 2 per device x accumulation 4; "
                                         r"this run splits the batch as 2 x 2 x 2") as e:
        dm.train_dataloader()
    assert "\n" not in str(e.value)
    dm.load_state_dict({"train_position": {"epoch": 0, "batches_done": 1, "split": [2, 2, 2]}})
    assert dm.train_dataloader().sampler._skip_batches == 1  # the same split: exact
    done = len(dm.train_set) // 8 * 4  # one device's batches per epoch of the old split: the epoch ended
    dm.load_state_dict({"train_position": {"epoch": 0, "batches_done": done, "split": [1, 2, 4]}})
    assert dm.train_dataloader().sampler.epoch == 1


def test_global_batch_to_per_device(folder):
    dm = _dm(folder, batch_size=8)
    dm.trainer = SimpleNamespace(world_size=2, accumulate_grad_batches=2, global_rank=1)
    dm.setup("fit")
    assert dm.per_device_batch_size == 2
    loader = dm.train_dataloader()
    assert loader.batch_size == 2
    assert isinstance(loader.sampler, ResumableSampler)
    assert (loader.sampler.num_replicas, loader.sampler.rank) == (2, 1)
    # full optimizer steps only (2 devices x 2 x accumulation 2 = 8): an epoch never ends in a short step
    assert len(loader) == loader.sampler.batches_per_epoch == len(dm.train_set) // 8 * 2
    val = dm.val_dataloader()
    assert isinstance(val.sampler, ShardSampler) and list(val.sampler) == [1, 3, 5]

    dm = _dm(folder, batch_size=6)
    dm.trainer = SimpleNamespace(world_size=2, accumulate_grad_batches=2, global_rank=0)
    with pytest.raises(ValueError, match=r"batch_size=6.*\b4\b") as exc:
        dm.setup("fit")
    assert "\n" not in str(exc.value)

    dm = _dm(folder, batch_size=8)  # no trainer: the global batch on one device
    dm.setup("fit")
    assert dm.per_device_batch_size == 8


@pytest.mark.parametrize("n", [0, 1, 10, 11])
def test_shard_sampler_covers_each_index_once(n):
    shards = [list(ShardSampler(n, num_replicas=2, rank=r)) for r in range(2)]
    assert sorted(shards[0] + shards[1]) == list(range(n))
    assert not set(shards[0]) & set(shards[1])
    assert [len(ShardSampler(list(range(n)), 2, r)) for r in range(2)] == [len(s) for s in shards]


@pytest.mark.slow
def test_loader_is_reproducible_with_seed(folder):
    def first_batch(seed):
        dm = _dm(folder, seed=seed, num_workers=1, persistent_workers=False)
        dm.setup("fit")
        return next(iter(dm.train_dataloader()))

    a, b = first_batch(3), first_batch(3)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, first_batch(4).images)


@pytest.mark.slow
def test_demo_set_builds_once(tmp_path):
    root = build_demo_dataset(tmp_path / "demo")
    for split, n in (("train", 4000), ("val", 1000)):
        classes = sorted(p.name for p in (root / split).iterdir())
        assert classes == [str(d) for d in range(10)]
        files = list((root / split).glob("*/*.png"))
        assert len(files) == n
        assert all(len(list((root / split / c).iterdir())) == n // 10 for c in classes)  # stratified
    with Image.open(files[0]) as im:
        assert im.size == (28, 28) and im.mode == "L"
    marker = root / ".complete.json"
    stamps = (marker.stat().st_mtime_ns, files[0].stat().st_mtime_ns)
    assert build_demo_dataset(root) == root
    assert (marker.stat().st_mtime_ns, files[0].stat().st_mtime_ns) == stamps  # not rewritten

    dm = data_module("demo", root, num_workers=0)
    assert type(dm).__name__ == "DemoDataModule" and dm.num_classes == 10
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    images, labels = batch.images, batch.labels
    assert images.shape == (64, 3, 64, 64) and images.dtype == torch.uint8 and labels.dtype == torch.int64
    assert torch.equal(images[:, 0], images[:, 1]) and torch.equal(images[:, 0], images[:, 2])  # grey digits


@pytest.mark.slow
def test_demo_half_written_folder_is_rebuilt(tmp_path):
    root = tmp_path / "demo"
    (root / "train" / "3").mkdir(parents=True)
    (root / "train" / "3" / "junk.png").write_bytes(b"half")
    build_demo_dataset(root)
    assert not (root / "train" / "3" / "junk.png").exists()
    assert len(list(root.glob("*/*/*.png"))) == 5000
    assert not [p for p in tmp_path.iterdir() if p.name != "demo"]  # no temp folders left behind


# ---------------------------------------------------------------------------- configs and constructors
DATA_CONFIGS = ("imagefolder", "in1k", "demo", "video", "k400", "video_demo")
INPUT = {"imagefolder": "image", "in1k": "image", "demo": "image", "video": "video", "k400": "video",
         "video_demo": "video"}


def _constructor_parameters(cls) -> dict[str, inspect.Parameter]:
    """The constructor parameters of ``cls``, following ``**settings`` up to the base class."""
    params: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass.__module__.split(".")[0] != "datamodules":
            continue
        sig = inspect.signature(klass.__init__)
        params.update({n: p for n, p in sig.parameters.items() if n != "self" and n not in params
                       and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)})
        if not any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
            break
    return params


@pytest.mark.parametrize("name", DATA_CONFIGS)
def test_data_configs_are_flat_and_the_only_home_of_their_numbers(name):
    """Every key of a data config but ``name`` and ``input`` is a constructor argument, and the
    constructor has no default for any of them (the YAML is the only home of the value); every
    argument without a default is in the config."""
    from hydra.utils import get_class

    from recipe_data_modules import data_arguments

    args = data_arguments(name)
    params = _constructor_parameters(get_class(args.pop("_target_")))
    assert set(args) <= set(params), set(args) - set(params)
    with_default = [k for k in args if params[k].default is not inspect.Parameter.empty]
    assert not with_default, f"{name}: constructor defaults repeat the config: {with_default}"
    required = [k for k, p in params.items() if p.default is inspect.Parameter.empty]
    assert set(required) <= set(args), set(required) - set(args)


def test_data_configs_describe_their_input():
    """Each data config says its ``name`` and ``input`` (for run names, the model variant and the MAE
    mask ratio), and no longer carries the model's settings."""
    from training.config import compose_config

    for name in DATA_CONFIGS:
        data = compose_config("finetune", [f"data={name}"]).data
        assert (data.name, data.input) == (name, INPUT[name])
        assert not {"datamodule", "model_suffix", "mae_mask_ratio"} & set(data)


def test_scale_follows_the_task(folder):
    assert _dm(folder).scale == (0.08, 1.0) and _dm(folder, mode="pretrain").scale == (0.2, 1.0)
    assert _dm(folder, scale=[0.3, 0.9]).scale == (0.3, 0.9)  # one range for both tasks


def test_num_classes_bounds_the_class_index(folder):
    assert _dm(folder, num_classes=5).num_classes == 5  # a model with more outputs than classes here
    with pytest.raises(ValueError, match=r"class 'dog' has index 1, out of range \[0, 1\)") as exc:
        _dm(folder, num_classes=1)
    assert "\n" not in str(exc.value)


# ---------------------------------------------------------------------------- batches and seeds
def test_batch_moves_to_a_device_and_pins(folder):
    from lightning.fabric.utilities.apply_func import move_data_to_device

    from abswin.batch import Batch

    batch = next(iter(_dm(folder).val_dataloader()))
    assert isinstance(batch, Batch) and batch.num_samples == 2 and batch.views is None
    moved = move_data_to_device(batch, torch.device("cpu"))
    assert isinstance(moved, Batch) and torch.equal(moved.images, batch.images)
    assert torch.equal(moved.missing, batch.missing) and moved.clips_per_sample == 1
    video = Batch(None, torch.zeros(2, dtype=torch.int64), views=torch.zeros(2, 3, 3, 2, 4, 4))
    assert video.num_samples == 2
    assert Batch(torch.zeros(6, 3, 2, 4, 4), torch.zeros(6, dtype=torch.int64), clips_per_sample=3).num_samples == 2
    with pytest.raises(ValueError, match="either images"):
        Batch(torch.zeros(1, 3, 4, 4), torch.zeros(1), views=torch.zeros(1, 1, 3, 1, 4, 4))


def test_batch_pins_every_tensor(monkeypatch):
    """What a DataLoader with ``pin_memory=True`` does to a batch: ``Batch.pin_memory()``, a copy
    with every tensor pinned (without CUDA, pinning is recorded instead of done)."""
    from torch.utils.data._utils.pin_memory import pin_memory

    from abswin.batch import Batch

    pinned = []
    if not torch.cuda.is_available():
        monkeypatch.setattr(torch.Tensor, "pin_memory", lambda t, *a, **k: pinned.append(t) or t.clone())
    batch = Batch(None, torch.tensor([3, 4]), views=torch.rand(2, 2, 3, 2, 4, 4), video_index=torch.tensor([5, 6]),
                  missing=torch.tensor([7]))
    out = pin_memory(batch)
    assert isinstance(out, Batch) and out is not batch and out.images is None
    for name in ("labels", "views", "video_index", "missing"):
        assert torch.equal(getattr(out, name), getattr(batch, name))
        assert getattr(out, name).is_pinned() if torch.cuda.is_available() else any(
            t is getattr(batch, name) for t in pinned)


def test_derive_seed():
    from abswin.seeding import derive_seed

    a = derive_seed(0, 1, 2)
    assert a == derive_seed(0, 1, 2) and 0 <= a < 2**63
    assert len({a, derive_seed(0, 2, 1), derive_seed(1, 0, 2), derive_seed(0, 1, 3), derive_seed(0, 1)}) == 5
    assert 0 <= derive_seed(-1) < 2**63
    np.random.default_rng(a)  # valid for numpy and torch
    torch.manual_seed(a)


@pytest.mark.slow
def test_a_mid_epoch_resume_gives_the_rest_of_the_epoch_unchanged(folder):
    """The data side of an exact resume: a data module that loads a checkpoint's training position
    (epoch 1, 2 batches done) yields that epoch's remaining batches, the same samples with the same
    augmentations as an uninterrupted run (with a worker process: nothing depends on its state)."""
    def epoch_batches(dm, epoch):
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)
        return list(loader)

    straight = _dm(folder, num_workers=1, persistent_workers=False)
    straight.setup("fit")
    epoch_batches(straight, 0)
    expected = epoch_batches(straight, 1)
    assert len(expected) == 7  # 14 files in batches of 2 (an unreadable file leaves a batch of 1)

    resumed = _dm(folder, num_workers=1, persistent_workers=False)
    resumed.load_state_dict({"train_position": {"epoch": 1, "batches_done": 2}})
    resumed.setup("fit")
    got = list(resumed.train_dataloader())
    assert len(got) == len(expected) - 2
    for a, b in zip(got, expected[2:]):
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
        assert torch.equal(a.missing, b.missing)


# ---------------------------------------------------------------------------- data.train_fraction
@pytest.fixture
def unbalanced(tmp_path: Path) -> Path:
    """root/{train,val}/{a,b,c}: 40, 20 and 3 training images (tiny PNGs), 2 validation images each."""
    rng = np.random.default_rng(1)
    root = tmp_path / "unbalanced"
    for split, counts in (("train", {"a": 40, "b": 20, "c": 3}), ("val", {"a": 2, "b": 2, "c": 2})):
        for c, n in counts.items():
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                _save(root / split / c / f"{i:02d}.png", rng, size=(8, 8), fmt="PNG")
    return root


def _train_files(root, **kw) -> tuple[list[bytes], list[int], int]:
    dm = _dm(root, **kw)
    dm.setup("fit")
    return list(dm.train_set.paths), dm.train_set.labels.tolist(), len(dm.val_set)


def test_train_fraction_is_a_stratified_subset_of_the_training_split(unbalanced):
    all_paths, all_labels, all_val = _train_files(unbalanced, train_fraction=1.0)
    assert len(all_paths) == 63
    paths, labels, val = _train_files(unbalanced, train_fraction=0.1)
    assert [labels.count(k) for k in range(3)] == [4, 2, 1]  # round(0.1 * n) per class, at least one
    assert set(paths) <= set(all_paths) and len(set(paths)) == len(paths)
    assert paths == sorted(paths, key=all_paths.index)  # kept in the split's order
    assert val == all_val == 6  # validation untouched
    paths_half, labels_half, _ = _train_files(unbalanced, train_fraction=0.5)
    assert [labels_half.count(k) for k in range(3)] == [20, 10, 2]


def test_train_fraction_subset_follows_the_seed_only(unbalanced):
    """The same files for a seed in every process (every rank and resume picks the same subset before
    sharding; sharding then splits it), other files for another seed."""
    a = _train_files(unbalanced, train_fraction=0.25, seed=3)[0]
    assert a == _train_files(unbalanced, train_fraction=0.25, seed=3)[0]
    assert a != _train_files(unbalanced, train_fraction=0.25, seed=4)[0]
    dm = _dm(unbalanced, train_fraction=0.25, seed=3, batch_size=4)
    dm.trainer = SimpleNamespace(world_size=2, accumulate_grad_batches=1, global_rank=1)
    dm.setup("fit")
    assert list(dm.train_set.paths) == a  # the subset does not depend on the rank
    assert len(dm.train_dataloader()) == len(a) // 4


@pytest.mark.parametrize("bad", [0, 0.0, -0.5, 1.01, 2, float("nan")])
def test_train_fraction_outside_0_1_is_a_one_line_error(unbalanced, bad):
    with pytest.raises(ValueError, match=r"^data\.train_fraction=\S+ must be a number in \(0, 1\]") as exc:
        _dm(unbalanced, train_fraction=bad)
    assert str(bad) in str(exc.value) and "\n" not in str(exc.value)
