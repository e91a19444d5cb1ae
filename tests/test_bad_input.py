"""Bad input to the real entry points (``python train.py`` / ``python finetune.py`` as subprocesses),
one table row per case. Every case checks three things:

1. the exit status: 2 for bad input; 0 (with a ``finished:`` line) for a finished run started
   again; 0 for a run that skips a corrupt file and goes on;
2. stderr ends in one ``error: ...`` line that names the bad value (and the key where there is
   one), with no traceback anywhere in stderr;
3. an existing run directory is left exactly as it was: two real finished runs (one of
   ``train.py``, one of ``finetune.py``, 1 epoch each on a tiny JPEG folder) are made once; the
   cases whose arguments say ``run_name={PRE}`` or ``run_name={FT}`` start on them, and afterwards
   every file under them (``.lock`` included) must have the same contents (sha256) as before.

Most cases fail at start-up within seconds. To keep the file cheap they all run up front, in a
thread pool (one process per core), from a module fixture; each parametrized test then checks one
case's outcome, so a failing case is reported by its own name with its stderr. Cases on the same
existing run run one after another (they would otherwise meet each other's lock), and a case that
changed a run directory has it restored from a copy, so it cannot spoil the cases after it.

``pytest tests/test_bad_input.py -s`` also prints the table as markdown (case | what it checks |
result); ``ABSWIN_BAD_INPUT_TABLE=FILE`` writes it to FILE.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import resource
import re
import shutil
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from launching import PYTHON, ROOT, clean_env, unique_name, write_image_folder, write_video_set

pytestmark = [pytest.mark.slow,  # the whole table: a process per case
              pytest.mark.filterwarnings(
                  "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning")]

TASKS = {"train.py": "pretrain", "finetune.py": "finetune"}
PRE, FT = "bad-input-pretrain", "bad-input-finetune"  # the two existing (finished) runs
NOLAST, MID = "bad-input-no-last", "bad-input-mid-epoch"  # PRE without last.ckpt; a run stopped at step 3 of 6
RENAMED, REMOVED = "bad-input-renamed", "bad-input-removed"  # finetuned, then a class folder renamed / removed
TRUNC = "bad-input-truncated-last"  # PRE with half of its last.ckpt
TARGETS = {"PRE": ("train.py", PRE), "FT": ("finetune.py", FT), "NOLAST": ("train.py", NOLAST),
           "MID": ("train.py", MID), "RENAMED": ("finetune.py", RENAMED), "REMOVED": ("finetune.py", REMOVED),
           "TRUNC": ("train.py", TRUNC)}
CASE_TIMEOUT = 300  # s; a case past this is killed and fails

COMMON = ["model=hiera_atto", "data.num_workers=0", "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
          "trainer.enable_model_summary=false", "logger=csv"]
IMAGE_BASE = ["data=imagefolder", "data.root={img}", "data.img_size=64", "data.batch_size=8", *COMMON]
VIDEO_BASE = ["data=video", "data.root={vid}", "data.img_size=64", "data.num_frames=4", "data.sampling_rate=2",
              "data.batch_size=4", "data.eval_batch_size=2", "data.num_temporal_views=1",
              "data.num_spatial_views=1", "data.randaug_mstd=null", *COMMON]
GROW = ["resume=auto", "trainer.max_epochs=2"]  # continue an existing run for one more epoch

# ---------------------------------------------------------------------------------------------- the table
# (id, script, args, expected exit status, expected text, what it checks)
# args come after the base arguments (IMAGE_BASE, or VIDEO_BASE when they hold data=video) and replace
# those with the same key; {name} is a path from `world` (data sets, checkpoint files) or, for
# {PRE}/{FT}, the name of an existing run; a case without run_name= gets a fresh one.
# The expected text: for a non-zero status, a substring (or a tuple of substrings) of the last
# stderr line, which must be the only `error:` line; for 0, "finished:" (the last line starts so) or
# a log line the run must have written (stdout, stderr or its log file).
CASES: list[tuple[str, str, list[str], int, str | tuple[str, ...], str]] = [
    # --- sizes
    ("img_size_0", "train.py", ["data.img_size=0"], 2, "data.img_size=0", "image size 0"),
    ("img_size_100", "train.py", ["data.img_size=100"], 2, "img_size=100 is not allowed", "image size not a multiple of 32"),
    ("img_size_abc", "train.py", ["data.img_size=abc"], 2, ("data.img_size", "abc"), "image size not a number"),
    ("img_size_64.5", "train.py", ["data.img_size=64.5"], 2, ("data.img_size", "64.5"), "image size not an integer"),
    ("img_size_-32", "finetune.py", ["data.img_size=-32"], 2, "data.img_size=-32", "negative image size"),
    ("num_frames_0", "finetune.py", ["data=video", "data.num_frames=0"], 2, "data.num_frames=0",
     "video clip of 0 frames"),
    # --- names
    ("model_nope", "train.py", ["model=nope"], 2, ("model", "nope"), "unknown model config"),
    ("data_nope", "finetune.py", ["data=nope"], 2, ("data", "nope"), "unknown data config"),
    ("key_typo", "train.py", ["data.img_sise=64"], 2, "data.img_sise", "misspelt key"),
    ("trainer_arg_typo", "train.py", ["trainer.max_epoch=1"], 2, "max_epoch", "misspelt Trainer argument"),
    ("experiment_nope", "finetune.py", ["experiment=nope"], 2, ("experiment", "nope"), "unknown experiment"),
    ("logger_nope", "train.py", ["logger=nope"], 2, ("logger", "nope"), "unknown logger config"),
    ("trainer_nope", "train.py", ["trainer=nope"], 2, ("trainer", "nope"), "unknown trainer config"),
    # --- data roots
    ("root_missing", "train.py", ["data.root={data}/nope"], 2, ("{data}/nope", "data.root"),
     "data root that does not exist"),
    ("root_is_file", "finetune.py", ["data.root={root_file}"], 2, ("{root_file}", "data.root"),
     "data root that is a file"),
    ("root_without_train", "train.py", ["data.root={no_train}"], 2, "{no_train}/train", "root without train/"),
    ("train_without_class_folders", "finetune.py", ["data.root={flat}"], 2, "{flat}/train",
     "train/ with images but no class folders"),
    ("class_folders_without_images", "train.py", ["data.root={empty_classes}"], 2, "{empty_classes}/train",
     "class folders that hold no images"),
    ("train_all_unreadable", "finetune.py", ["data.root={unreadable}"], 2, ("{unreadable}/train", "unreadable"),
     "a split none of whose images decodes"),
    # --- pretrained= (a fresh finetuning run)
    ("pretrained_missing", "finetune.py", ["pretrained={ck}/nope.ckpt"], 2, ("{ck}/nope.ckpt", "no such file"),
     "pretrained= a missing file"),
    ("pretrained_empty", "finetune.py", ["pretrained={ck}/empty.ckpt"], 2, ("{ck}/empty.ckpt", "empty"),
     "pretrained= an empty file"),
    ("pretrained_truncated", "finetune.py", ["pretrained={ck}/truncated.ckpt"], 2,
     ("{ck}/truncated.ckpt", "truncated"), "pretrained= half of a real checkpoint"),
    ("pretrained_random_bytes", "finetune.py", ["pretrained={ck}/random.ckpt"], 2, ("{ck}/random.ckpt", "corrupt"),
     "pretrained= random bytes"),
    ("pretrained_text", "finetune.py", ["pretrained={ck}/text.ckpt"], 2, ("{ck}/text.ckpt", "corrupt"),
     "pretrained= a text file"),
    ("pretrained_code_pickle", "finetune.py", ["pretrained={ck}/evil.ckpt"], 2, ("{ck}/evil.ckpt", "refused"),
     "pretrained= a pickle that runs os.system: refused, never run"),
    ("pretrained_foreign", "finetune.py", ["pretrained={ck}/resnet18.pth"], 2, "{ck}/resnet18.pth",
     "pretrained= a torchvision resnet18 state dict"),
    ("pretrained_nan", "finetune.py", ["pretrained={ck}/nan.ckpt"], 2, ("{ck}/nan.ckpt", "NaN"),
     "pretrained= a checkpoint with NaN weights"),
    ("pretrained_directory", "finetune.py", ["pretrained={ck}/adir"], 2, ("{ck}/adir", "directory"),
     "pretrained= a directory"),
    # --- resume=PATH (into the existing pretraining run: it must stay as it was)
    ("resume_missing", "train.py", ["resume={ck}/nope.ckpt", "run_name={PRE}"], 2, ("{ck}/nope.ckpt", "no such file"),
     "resume= a missing file"),
    ("resume_empty", "train.py", ["resume={ck}/empty.ckpt", "run_name={PRE}"], 2, ("{ck}/empty.ckpt", "empty"),
     "resume= an empty file"),
    ("resume_truncated", "train.py", ["resume={ck}/truncated.ckpt", "run_name={PRE}"], 2,
     ("{ck}/truncated.ckpt", "truncated"), "resume= half of a real checkpoint"),
    ("resume_random_bytes", "train.py", ["resume={ck}/random.ckpt", "run_name={PRE}"], 2,
     ("{ck}/random.ckpt", "corrupt"), "resume= random bytes"),
    ("resume_text", "train.py", ["resume={ck}/text.ckpt", "run_name={PRE}"], 2, ("{ck}/text.ckpt", "corrupt"),
     "resume= a text file"),
    ("resume_code_pickle", "train.py", ["resume={ck}/evil.ckpt", "run_name={PRE}"], 2, ("{ck}/evil.ckpt", "refused"),
     "resume= a pickle that runs os.system: refused, never run"),
    ("resume_foreign", "train.py", ["resume={ck}/resnet18.pth", "run_name={PRE}"], 2,
     ("{ck}/resnet18.pth", "not a training checkpoint"), "resume= a torchvision resnet18 state dict"),
    ("resume_nan", "train.py", ["resume={ck}/nan.ckpt", "run_name={PRE}"], 2, ("{ck}/nan.ckpt", "NaN"),
     "resume= a training checkpoint with NaN weights"),
    ("resume_directory", "train.py", ["resume={ck}/adir", "run_name={PRE}"], 2, ("{ck}/adir", "directory"),
     "resume= a directory"),
    # --- video CSVs
    ("csv_three_fields", "train.py", ["data=video", "data.root={v_three}"], 2,
     ("{v_three}/train.csv:3", "train2.mp4 0 extra"), "a CSV line with three fields"),
    ("csv_unknown_header", "train.py", ["data=video", "data.root={v_header}"], 2,
     ("{v_header}/train.csv:1", "unknown header"), "an unknown CSV header"),
    ("csv_label_out_of_range", "finetune.py", ["data=video", "data.root={v_range}"], 2,
     ("{v_range}/val.csv:2", "label 5", "[0, 2)"), "a validation label beyond the train split's classes"),
    ("csv_negative_label", "finetune.py", ["data=video", "data.root={v_negative}"], 2,
     ("{v_negative}/train.csv:2", "label -1"), "a negative label"),
    ("csv_mixed_labels", "finetune.py", ["data=video", "data.root={v_mixed}"], 2,
     ("{v_mixed}/train.csv:2", "mixes integer and class-name labels"), "integer and class-name labels mixed"),
    # --- corrupt files: skipped, counted and logged; the run goes on
    ("truncated_jpeg_skipped", "train.py", ["data.root={img_truncated}"], 0,
     "skipping unreadable image {img_truncated}/train/class0/0.JPEG", "a truncated JPEG in train/ (run succeeds)"),
    ("fifo_image_skipped", "train.py", ["data.root={img_fifo}"], 0,
     "skipping unreadable image {img_fifo}/train/class0/fifo.JPEG", "a named pipe named like an image: skipped, no hang"),
    ("dev_zero_image_skipped", "train.py", ["data.root={img_zero}"], 0,
     "skipping unreadable image {img_zero}/train/class1/zero.JPEG (OSError: not a regular file",
     "a link to /dev/zero named like an image (under a memory limit)"),
    ("png_bomb_skipped", "train.py", ["data.root={img_bomb}"], 0,
     "skipping unreadable image {img_bomb}/train/class2/bomb.png (OSError: 1 frame(s) of 40000x40000 pixels",
     "a PNG that claims 1.6 gigapixels (under a memory limit)"),
    ("corrupt_video_skipped", "finetune.py", ["data=video", "data.root={v_corrupt}"], 0,
     "skipping unreadable video {v_corrupt}/broken.mp4", "an undecodable video in train.csv (run succeeds)"),
    ("csv_with_bom", "finetune.py", ["data=video", "data.root={v_bom}"], 0, "header line 'path label' skipped",
     "a CSV saved with a UTF-8 byte-order mark (Excel): its header is still a header"),
    ("csv_repeated_line", "finetune.py", ["data=video", "data.root={v_repeated}"], 0,
     "1 line(s) repeat a video listed before", "a validation CSV that lists a video twice: warned"),
    ("one_class", "finetune.py", ["data.root={one_class}"], 2, ("has 1 class (class0)", "at least 2"),
     "finetuning on a data root with one class"),
    ("train_fraction_abc", "finetune.py", ["data.train_fraction=abc"], 2, ("data.train_fraction=abc", "(0, 1]"),
     "a training fraction that is not a number"),
    ("video_mae_masks_every_unit", "train.py", ["data=video"], 2, ("mask_ratio", "0.9"),
     "video MAE whose mask ratio (0.9) keeps none of the 8 mask units of a 4x64x64 clip"),
    # --- batch sizes
    ("batch_larger_than_data", "train.py", ["data.batch_size=64"], 2,
     "data.batch_size=64 is larger than the 48 training samples", "a global batch larger than the data set"),
    ("batch_not_divisible", "finetune.py", ["data.batch_size=9", "trainer.accumulate_grad_batches=2"], 2,
     ("data.batch_size=9", "not divisible"), "a global batch not divisible by devices x accumulation"),
    ("resume_batch_not_divisible", "train.py",
     [*GROW, "data.batch_size=9", "trainer.accumulate_grad_batches=2", "run_name={PRE}"], 2,
     ("holds a run of another setup", "data.batch_size: 8 -> 9"), "another global batch, continuing an existing run"),
    # --- run directories
    ("resume_true_fresh", "train.py", ["resume=true"], 2, "resume=true but there is no",
     "resume=true on a name with no run"),
    ("resume_false_existing", "train.py", ["run_name={PRE}"], 2, "already holds a run",
     "resume=false on an existing run (pretraining)"),
    ("resume_false_existing_ft", "finetune.py", ["run_name={FT}"], 2, "already holds a run",
     "resume=false on an existing run (finetuning)"),
    ("resume_auto_other_img_size", "train.py", ["resume=auto", "data.img_size=96", "run_name={PRE}"], 2,
     "data.img_size: 64 -> 96", "resume=auto with another image size"),
    ("resume_auto_finished", "train.py", ["resume=auto", "run_name={PRE}"], 0, "finished:",
     "resume=auto on a finished run (pretraining)"),
    ("resume_true_finished_ft", "finetune.py", ["resume=true", "run_name={FT}"], 0, "finished:",
     "resume=true on a finished run (finetuning)"),
    ("two_runs_at_once", "train.py", ["run_name={BUSY}"], 2, "in use by a running job",
     "a second run on the name of a running one"),
    ("finished_without_last", "train.py", ["run_name={NOLAST}"], 2,
     ("already holds a run", "results.json", "no checkpoints/last.ckpt"),
     "the same command again on a finished run whose last.ckpt was deleted (best.ckpt kept)"),
    ("finished_without_last_auto", "train.py", ["resume=auto", "run_name={NOLAST}"], 2,
     ("already holds a run", "no checkpoints/last.ckpt"), "resume=auto on a finished run whose last.ckpt was deleted"),
    ("run_dir_of_other_files", "train.py", ["hydra.run.dir={foreign}"], 2, ("{foreign} is not empty", "notes.txt"),
     "hydra.run.dir= a folder of the user's own files (a .tmp among them)"),
    ("resume_class_renamed", "finetune.py", [*GROW, "data.root={renamed}", "run_name={RENAMED}"], 2,
     ("label 0 is 'class0' in the checkpoint and 'class1' here", "{renamed}"),
     "continuing a finetuning run after a class folder was renamed (the labels would be permuted)"),
    ("resume_class_removed", "finetune.py", [*GROW, "data.root={removed}", "run_name={REMOVED}"], 2,
     ("trained on 3 classes", "has 2"), "continuing a finetuning run after a class folder was removed"),
    ("resume_auto_truncated_last", "train.py", [*GROW, "run_name={TRUNC}"], 2, ("last.ckpt", "truncated"),
     "resume=auto when last.ckpt was cut short"),
    ("run_name_escapes", "train.py", ["run_name=../../escaped"], 2, ("run_name='../../escaped'", "one folder name"),
     "a run name that leaves the output root (nothing is created there)"),
    ("run_name_empty", "finetune.py", ["run_name="], 2, ("run_name=''", "one folder name"),
     "an empty run name (it would write into the task's folder)"),
    ("run_name_too_long", "train.py", ["run_name=" + "a" * 300], 2, ("is 300 bytes long", "shorter run_name="),
     "a run name longer than a file system allows"),
    ("resume_other_subset", "train.py", [*GROW, "data.train_fraction=0.5", "run_name={PRE}"], 2,
     "data.train_fraction: 1.0 -> 0.5", "continuing a run on another subset of the data"),
    ("resume_other_global_batch", "train.py", [*GROW, "data.batch_size=4", "run_name={PRE}"], 2,
     "data.batch_size: 8 -> 4", "continuing a run with another global batch"),
    ("resume_mid_epoch_other_split", "train.py",
     ["resume=true", "trainer.max_steps=6", "per_device_batch=4", "run_name={MID}"], 2,
     ("mid-epoch", "per_device_batch=8"), "continuing a mid-epoch checkpoint with another batch split: refused "
     "before the run directory is touched"),
    # --- options
    ("ddp_timeout_0", "train.py",
     ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy.timeout_s=0"], 2,
     "trainer.strategy.timeout_s=0", "a process-group timeout of 0 s"),
    ("global_pos_size_40", "finetune.py", ["model.global_pos_size=[40,40]"], 2, ("global_pos_size=[40, 40]", "16x16"),
     "a global embedding larger than the 16x16 token grid"),
    ("last_two_intervals", "train.py",
     [*GROW, "callbacks.last.every_n_train_steps=10", "callbacks.last.every_n_epochs=2", "run_name={PRE}"], 2,
     ("every_n_train_steps=10", "every_n_epochs=2"), "two checkpoint intervals (continuing an existing run)"),
    ("unknown_signal", "finetune.py", [*GROW, "callbacks.preemption.signals=[SIGNOPE]", "run_name={FT}"], 2,
     ("callbacks.preemption.signals", "SIGNOPE"), "an unknown preemption signal (continuing an existing run)"),
]
IDS = [c[0] for c in CASES]
assert len(set(IDS)) == len(IDS), "case ids must be unique"


# ---------------------------------------------------------------------------------------------- helpers
class _RunsCode:
    """Pickles as a call to os.system: loading the file would create ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def snapshot(run_dir: Path) -> dict[str, str]:
    """relative path -> sha256 of its contents (folders and links too): everything but mtimes."""
    out = {}
    for p in sorted(run_dir.rglob("*")):
        rel = str(p.relative_to(run_dir))
        if p.is_symlink():
            out[rel] = f"link -> {os.readlink(p)}"
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def snapshot_diff(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return ([f"new: {k}" for k in after.keys() - before.keys()]
            + [f"gone: {k}" for k in before.keys() - after.keys()]
            + [f"changed: {k}" for k in before.keys() & after.keys() if before[k] != after[k]])


def fill(text: str, paths: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: paths[m.group(1)], text)


def merge(base: list[str], args: list[str]) -> list[str]:
    """``base`` with ``args`` appended, an arg replacing the base argument of the same key."""
    keys = [a.split("=", 1)[0] for a in args]
    return [b for b in base if b.split("=", 1)[0] not in keys] + args


MEMORY_LIMIT = 6 * 2**30  # bytes of address space for the cases of RESOURCE_CASES (a run needs about 3)
RESOURCE_CASES = {"dev_zero_image_skipped", "png_bomb_skipped"}  # a regression fails, never fills the machine


def launch(script: str, args: list[str], out_root: Path, memory_limit: int | None = None) -> subprocess.Popen:
    env = clean_env(out_root)
    for k in ("ABSWIN_DEBUG", "HYDRA_FULL_ERROR"):
        env.pop(k, None)
    limit = None if memory_limit is None else (
        lambda: resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit)))
    return subprocess.Popen([PYTHON, script, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, start_new_session=True,
                            preexec_fn=limit)


def finish(proc: subprocess.Popen, timeout: float = CASE_TIMEOUT) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the session we started for this process
        out, err = proc.communicate()
        err += f"\n(killed after {timeout} s)"
    return proc.returncode, out, err


@dataclass
class Outcome:
    cmd: list[str]
    code: int
    stdout: str
    stderr: str
    run_dir: Path
    seconds: float
    changed: list[str] = field(default_factory=list)  # of the existing run it targeted
    code_ran: bool = False  # the os.system marker exists
    note: str = ""
    first_code: int | None = None  # two_runs_at_once: the exit status of the running job after SIGTERM
    first_last_line: str = ""


@dataclass
class World:
    out_root: Path
    paths: dict[str, str]
    marker: Path
    baselines: dict[str, dict[str, str]]  # existing run name -> snapshot (and "foreign": the user's folder)
    pristine: dict[str, Path]  # existing run name -> a copy to restore it from


# ---------------------------------------------------------------------------------------------- fixtures
def _write_data(d: Path) -> dict[str, str]:
    """The tiny data sets: a good JPEG folder and video set, and one broken variant per case."""
    from PIL import Image

    img = write_image_folder(d / "img")
    vid = write_video_set(d / "vid")
    paths = {"data": str(d), "img": str(img), "vid": str(vid)}

    def image_copy(name: str, splits=("train", "val")) -> Path:
        root = d / name
        for s in splits:
            shutil.copytree(img / s, root / s)
        paths[name] = str(root)
        return root

    root = image_copy("img_truncated")
    jpeg = root / "train" / "class0" / "0.JPEG"
    jpeg.write_bytes(jpeg.read_bytes()[:400])
    (d / "root_file").write_text("a file, not a folder\n")
    paths["root_file"] = str(d / "root_file")
    image_copy("no_train", splits=("val",))
    root = image_copy("flat", splits=("val",))
    (root / "train").mkdir()
    for i in range(6):
        shutil.copy(img / "train" / "class0" / f"{i}.JPEG", root / "train" / f"{i}.JPEG")
    root = image_copy("empty_classes", splits=("val",))
    for c in range(3):
        (root / "train" / f"class{c}").mkdir(parents=True)
    root = image_copy("img_fifo")  # a named pipe named like an image: opening it would block forever
    os.mkfifo(root / "train" / "class0" / "fifo.JPEG")
    root = image_copy("img_zero")  # a link to /dev/zero: read until memory runs out
    (root / "train" / "class1" / "zero.JPEG").symlink_to("/dev/zero")
    root = image_copy("img_bomb")  # a PNG whose header claims 1.6 gigapixels: 4.8 GB decoded
    (root / "train" / "class2" / "bomb.png").write_bytes(_png_header_only(40_000, 40_000))
    root = d / "one_class"
    for split in ("train", "val"):
        shutil.copytree(img / split / "class0", root / split / "class0")
    paths["one_class"] = str(root)
    root = image_copy("unreadable", splits=("val",))
    for c in range(3):
        (root / "train" / f"class{c}").mkdir(parents=True)
        for i in range(4):
            (root / "train" / f"class{c}" / f"{i}.JPEG").write_bytes(b"not a jpeg " * (i + 1))

    train = [f"train{i}.mp4 {i % 2}" for i in range(8)]
    val = [f"val{i}.mp4 {i % 2}" for i in range(4)]
    variants = {
        "v_three": (train[:2] + ["train2.mp4 0 extra"] + train[3:], val),
        "v_header": (["clip,category"] + [ln.replace(" ", ",") for ln in train], val),
        "v_range": (train, val[:1] + ["val1.mp4 5"] + val[2:]),
        "v_negative": (train[:1] + ["train1.mp4 -1"] + train[2:], val),
        "v_mixed": (train[:1] + ["train1.mp4 cat"] + train[2:], val),
        "v_corrupt": (train + ["broken.mp4 0"], val),
        "v_bom": (["\ufeffpath,label"] + [ln.replace(" ", ",") for ln in train], val),
        "v_repeated": (train, val + val[:1]),
    }
    for name, (tr, va) in variants.items():
        root = d / name
        root.mkdir()
        for mp4 in vid.glob("*.mp4"):
            (root / mp4.name).symlink_to(mp4)
        (root / "train.csv").write_text("\n".join(tr) + "\n")
        (root / "val.csv").write_text("\n".join(va) + "\n")
        paths[name] = str(root)
    (d / "v_corrupt" / "broken.mp4").write_text("not a video\n")
    assert Image.open(img / "train" / "class0" / "1.JPEG").size == (48, 40)
    return paths


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` RGB pixels (a decompression bomb's header)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1024))
            + chunk(b"IEND", b""))


def _write_checkpoints(ck: Path, real: Path, marker: Path) -> None:
    """Bad checkpoint files; ``real``: a real Lightning checkpoint (truncated, and with NaN weights)."""
    import torchvision

    ck.mkdir()
    (ck / "empty.ckpt").write_bytes(b"")
    data = real.read_bytes()
    (ck / "truncated.ckpt").write_bytes(data[: len(data) // 2])
    (ck / "random.ckpt").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (ck / "text.ckpt").write_text("this is not a checkpoint\n")
    with open(ck / "evil.ckpt", "wb") as f:
        pickle.dump({"state_dict": _RunsCode(marker)}, f)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), ck / "resnet18.pth")
    nan = torch.load(real, map_location="cpu", weights_only=True)
    key = next(k for k, v in nan["state_dict"].items() if k.startswith("model.") and v.is_floating_point())
    nan["state_dict"][key] = torch.full_like(nan["state_dict"][key], float("nan"))
    torch.save(nan, ck / "nan.ckpt")
    (ck / "adir").mkdir()


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    """Data sets, the two existing finished runs (their snapshots and copies) and bad checkpoints."""
    tmp = tmp_path_factory.mktemp("bad_input")
    out_root = tmp / "outputs"
    paths = _write_data(tmp / "data")
    paths.update(PRE=PRE, FT=FT, NOLAST=NOLAST, MID=MID, RENAMED=RENAMED, REMOVED=REMOVED, TRUNC=TRUNC,
                 ck=str(tmp / "ckpt"))
    base = [fill(a, paths) for a in IMAGE_BASE]
    for name in ("renamed", "removed"):  # a root of their own each: changed in place after the run
        shutil.copytree(paths["img"], tmp / name)
        paths[name] = str(tmp / name)
    extra = {MID: ["trainer.max_steps=3"], RENAMED: [f"data.root={tmp / 'renamed'}"],
             REMOVED: [f"data.root={tmp / 'removed'}"]}
    made = [TARGETS[t] for t in ("PRE", "FT", "MID", "RENAMED", "REMOVED")]
    procs = {name: launch(script, merge(base, [*extra.get(name, []), f"run_name={name}"]), out_root)
             for script, name in made}
    for script, name in made:
        code, out, err = finish(procs[name])
        assert code == 0, f"{script} run_name={name} (an existing run) exited {code}\n{out[-2000:]}\n{err[-3000:]}"
    for split in ("train", "val"):
        (tmp / "renamed" / split / "class0").rename(tmp / "renamed" / split / "zebra")
        shutil.rmtree(tmp / "removed" / split / "class2")
    nolast = out_root / "pretrain" / NOLAST  # what people do to save disk: keep best.ckpt, delete last.ckpt
    shutil.copytree(out_root / "pretrain" / PRE, nolast, symlinks=True)
    shutil.copy(nolast / "checkpoints" / "last.ckpt", nolast / "checkpoints" / "best.ckpt")
    (nolast / "checkpoints" / "last.ckpt").unlink()
    trunc = out_root / "pretrain" / TRUNC  # a crash while copying it, or a full disk
    shutil.copytree(out_root / "pretrain" / PRE, trunc, symlinks=True)
    whole = (trunc / "checkpoints" / "last.ckpt").read_bytes()
    (trunc / "checkpoints" / "last.ckpt").write_bytes(whole[: len(whole) // 2])
    foreign = tmp / "my-files"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("a week of notes\n")
    (foreign / ".draft.tmp").write_text("mine too\n")
    paths["foreign"] = str(foreign)
    baselines, pristine = {}, {}
    for script, name in TARGETS.values():
        run_dir = out_root / TASKS[script] / name
        assert (run_dir / "results.json").is_file()
        baselines[name] = snapshot(run_dir)
        pristine[name] = tmp / "pristine" / name
        shutil.copytree(run_dir, pristine[name], symlinks=True)
    baselines["foreign"] = snapshot(foreign)
    marker = tmp / "ckpt-PWNED"
    _write_checkpoints(tmp / "ckpt", out_root / "pretrain" / PRE / "checkpoints" / "last.ckpt", marker)
    return World(out_root, paths, marker, baselines, pristine)


def _run_case(case, w: World) -> Outcome:
    cid, script, args, code, expect, _ = case
    target = next((TARGETS[t][1] for t in TARGETS if f"run_name={{{t}}}" in args), None)
    busy = "run_name={BUSY}" in args
    paths = dict(w.paths, BUSY=unique_name("bad-input-busy"))
    base = VIDEO_BASE if "data=video" in args else IMAGE_BASE
    full = [fill(a, paths) for a in merge(base, args)]
    if not any(a.startswith("run_name=") for a in full):
        full.append(f"run_name={unique_name('bad-input-' + re.sub(r'[^A-Za-z0-9_]', '_', cid))}")
    run_name = next(a.split("=", 1)[1] for a in full if a.startswith("run_name="))
    run_dir = w.out_root / TASKS[script] / run_name
    first = None
    if busy:  # a long run on the same name that holds the lock while the case starts
        keep = [a for a in full if not a.startswith(("run_name=", "trainer.max_epochs="))]
        first = launch(script, [*keep, "trainer.max_epochs=100", f"run_name={run_name}"], w.out_root)
        lock, deadline = run_dir / ".lock", time.monotonic() + 120
        while not (lock.is_file() and lock.read_text().strip()) and time.monotonic() < deadline:
            if first.poll() is not None:
                break
            time.sleep(0.1)
        if not (lock.is_file() and lock.read_text().strip()):
            os.killpg(first.pid, signal.SIGKILL)
            c, o, e = finish(first, 30)
            return Outcome(full, -1, o, e, run_dir, 0.0, note=f"the first run never held the lock (exit {c})")
    owner = (run_dir / ".lock").read_text() if first is not None else None
    t0 = time.monotonic()
    got, out, err = finish(launch(script, full, w.out_root, MEMORY_LIMIT if cid in RESOURCE_CASES else None))
    seconds = time.monotonic() - t0
    outcome = Outcome(full, got, out, err, run_dir, seconds)
    if first is not None:
        if (run_dir / ".lock").read_text() != owner:
            outcome.changed.append(f".lock of the running job: {owner!r} -> {(run_dir / '.lock').read_text()!r}")
        os.kill(first.pid, signal.SIGTERM)
        outcome.first_code, _, e = finish(first, 120)
        outcome.first_last_line = _last_line(e)
        outcome.note = f"the running job, sent SIGTERM: exit {outcome.first_code}, {outcome.first_last_line[:100]}"
    outcome.code_ran = w.marker.exists()
    if "{foreign}" in " ".join(args):
        outcome.changed = snapshot_diff(w.baselines["foreign"], snapshot(Path(w.paths["foreign"])))
    if target is not None:
        outcome.changed = snapshot_diff(w.baselines[target], snapshot(run_dir))
        if outcome.changed:  # restore it for the cases after this one
            shutil.rmtree(run_dir)
            shutil.copytree(w.pristine[target], run_dir, symlinks=True)
    return outcome


@pytest.fixture(scope="module")
def outcomes(request, world) -> dict[str, Outcome]:
    """Run every selected case (in parallel; those on one existing run one after another)."""
    selected = {item.callspec.id for item in request.session.items
                if item.module is request.module and getattr(item, "callspec", None)}
    chosen = [c for c in CASES if c[0] in selected]
    chains: dict[str | None, list] = {}
    for c in chosen:
        target = next((t for t in TARGETS if f"run_name={{{t}}}" in c[2]), None)
        chains.setdefault(target, []).append(c)
    results: dict[str, Outcome] = {}
    lock = threading.Lock()

    def run_chain(cases):
        for c in cases:
            try:
                o = _run_case(c, world)
            except Exception as e:  # noqa: BLE001 - reported by the case's own test
                o = Outcome([], -1, "", "", world.out_root, 0.0, note=f"the case could not run: {e!r}")
            with lock:
                results[c[0]] = o

    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        jobs = [pool.submit(run_chain, chains[t]) for t in chains if t is not None]  # the long chains first
        jobs += [pool.submit(run_chain, [c]) for c in chains.get(None, [])]
        for j in jobs:
            j.result()
    yield results
    _report_table(results, time.monotonic() - t0)


def _last_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _report_table(results: dict[str, Outcome], seconds: float) -> None:
    rows = ["| case | what it checks | result (exit code + message start) |", "|---|---|---|"]
    for cid, _, _, _, _, what in CASES:
        if cid in results:
            o = results[cid]
            last = _last_line(o.stderr)
            msg = last
            if o.code == 0 and not last.startswith("finished:"):  # a run that went on: its skip line, if any
                skip = [ln for ln in (o.stdout + o.stderr).splitlines() if "skipping unreadable" in ln]
                msg = f"run completed, {skip[0][skip[0].index('skipping'):]}" if skip else "run completed"
            msg = re.sub(r"/\S*/bad_input\d*/", ".../", msg)[:110].replace("|", "\\|")
            rows.append(f"| `{cid}` | {what} | {o.code}: `{msg}` |")
    table = "\n".join(rows)
    slowest = sorted(results.items(), key=lambda kv: -kv[1].seconds)[:5]
    notes = "".join(f"\n{k}: {o.note}" for k, o in results.items() if o.note)
    print(f"\n{len(results)} bad-input cases ran in {seconds:.0f} s (slowest: "
          + ", ".join(f"{k} {o.seconds:.0f} s" for k, o in slowest) + f"){notes}\n{table}")
    if os.environ.get("ABSWIN_BAD_INPUT_TABLE"):
        Path(os.environ["ABSWIN_BAD_INPUT_TABLE"]).write_text(table + "\n")


# ---------------------------------------------------------------------------------------------- the test
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_bad_input(case, outcomes, world):
    cid, script, args, code, expect, what = case
    o = outcomes[cid]
    paths = dict(world.paths, BUSY="")
    wanted = [fill(e, paths) for e in ((expect,) if isinstance(expect, str) else expect)]
    last = _last_line(o.stderr)
    problems = []
    if o.code == -1 and o.note:
        problems.append(o.note)
    stopped = o.first_code == 128 + signal.SIGTERM and o.first_last_line.startswith("preempted:")
    if o.first_code is not None and not stopped:
        problems.append(f"the running job did not stop with 143 and a `preempted:` line after SIGTERM: {o.note}")
    if o.code != code:
        problems.append(f"exit status {o.code}, expected {code}")
    if "Traceback" in o.stderr:
        problems.append("a traceback in stderr")
    errors = [ln for ln in o.stderr.splitlines() if ln.startswith("error:")]
    if code != 0:
        if not last.startswith("error: "):
            problems.append("stderr does not end in an `error: ...` line")
        elif len(errors) != 1:
            problems.append(f"{len(errors)} `error:` lines in stderr, expected one")
        missing = [e for e in wanted if e not in last]
        if missing:
            problems.append(f"the last stderr line lacks {missing}")
    elif wanted == ["finished:"]:
        if not last.startswith("finished:"):
            problems.append("stderr does not end in a `finished:` line")
    else:
        log = o.run_dir / f"{Path(script).stem}.log"
        text = o.stdout + o.stderr + (log.read_text(errors="replace") if log.is_file() else "")
        if errors:
            problems.append(f"an `error:` line: {errors[0]}")
        if wanted[0] not in text:
            problems.append(f"no log line {wanted[0]!r}")
    if o.changed:
        problems.append(f"the existing run directory changed: {o.changed}")
    if o.code_ran:
        problems.append(f"the pickle's code RAN: {world.marker} exists")
    if cid == "run_name_escapes" and (world.out_root.parent / "escaped").exists():
        problems.append(f"{world.out_root.parent / 'escaped'} was created outside the output root")
    assert not problems, (
        f"{cid} ({what}): " + "; ".join(problems)
        + f"\n  command: python {script} {' '.join(o.cmd)}\n  last stderr line: {last}"
        + (f"\n  {o.note}" if o.note else "")
        + f"\n--- stderr (end) ---\n{o.stderr[-2500:]}"
    )
