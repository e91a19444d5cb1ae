"""Helpers for tests that run the real entry points (train.py, finetune.py) as separate processes,
launched the way users launch them: Lightning's own DDP launcher, torchrun, a simulated 2-node
SLURM job (two processes with the environment srun sets), or one plain process.

A test starts a run with :func:`start`, which returns a :class:`Launch`: the launched processes,
their stdout/stderr files and the run directory. ``Launch.wait`` never hangs: past its timeout it
kills every process of the run and fails the test. Every process of a run carries the
variable ``ABSWIN_TEST_RUN=<run name>`` in its environment, which children inherit: ranks,
torchrun's agent, forkserver-started data-loader workers (whose command lines name no run), so
they are all found through /proc even after their parent died.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

# ---------------------------------------------------------------------------- tiny data sets
IMAGE_STEPS_PER_EPOCH = 6  # 3 classes x 16 training images, global batch 8
VIDEO_STEPS_PER_EPOCH = 2  # 8 training videos, global batch 4


def write_image_folder(root: Path, train_per_class: int = 16, size: tuple[int, int] = (40, 48)) -> Path:
    """An ImageNet-style folder of real JPEGs: 3 colour-coded classes, ``train_per_class`` train + 4
    val images each, ``size`` (height, width) px."""
    rng = np.random.default_rng(0)
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]
    for split, n in (("train", train_per_class), ("val", 4)):
        for c, colour in enumerate(colours):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(n):
                noise = rng.integers(-40, 40, (*size, 3))
                img = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"{i}.JPEG", quality=90)
    return root


def write_video_set(root: Path) -> Path:
    """A Kinetics-style set (train.csv / val.csv) of small H.264 videos: 8 train + 4 val videos,
    12 frames of 48x64, 2 classes (dark and bright)."""
    from datamodules.video_demo import write_mp4

    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 8), ("val", 4)):
        lines = []
        for i in range(n):
            label = i % 2
            frames = rng.integers(0, 120, (12, 48, 64, 3)) + 100 * label
            write_mp4(root / f"{split}{i}.mp4", frames.astype(np.uint8))
            lines.append(f"{split}{i}.mp4 {label}")
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return root


def data_overrides(kind: str, root: Path) -> list[str]:
    if kind == "images":
        return ["data=imagefolder", f"data.root={root}", "data.img_size=64", "data.batch_size=8"]
    return ["data=video", f"data.root={root}", "data.img_size=64", "data.num_frames=4", "data.sampling_rate=2",
            "data.batch_size=4", "data.eval_batch_size=2", "data.num_temporal_views=1",
            "data.num_spatial_views=1", "data.randaug_mstd=null"]


def steps_per_epoch(kind: str) -> int:
    return IMAGE_STEPS_PER_EPOCH if kind == "images" else VIDEO_STEPS_PER_EPOCH


COMMON = ["model=hiera_atto", "trainer.max_epochs=2", "data.num_workers=2", "trainer.log_every_n_steps=1",
          "trainer.enable_progress_bar=true"]

# ---------------------------------------------------------------------------- launchers
TRAINER_ARGS = {
    "lightning": ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"],
    "torchrun": ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"],
    "slurm": ["trainer=multinode", "trainer.accelerator=cpu", "trainer.devices=1", "trainer.num_nodes=2"],
    "single": ["trainer=cpu"],
}
TASKS = {"train.py": "pretrain", "finetune.py": "finetune"}

# inherited variables that would make a launched process think it is already a rank of some job
_DROP = ("LOCAL_RANK", "RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK", "NODE_RANK",
         "MASTER_ADDR", "MASTER_PORT", "PL_GLOBAL_SEED", "PL_SEED_WORKERS")
_DROP_PREFIXES = ("TORCHELASTIC", "SLURM_", "SUBMITIT_", "WANDB_")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unique_name(prefix: str) -> str:
    """A run name no other process on this machine has in its command line."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


MARKER = "ABSWIN_TEST_RUN"  # the environment variable that marks every process of a launched run


def clean_env(output_root: Path, marker: str = "", **extra: str) -> dict[str, str]:
    """The test's environment without what would make a process think it is a rank of some job,
    plus the run's ``marker`` (:data:`MARKER`)."""
    env = {k: v for k, v in os.environ.items() if k not in _DROP and not k.startswith(_DROP_PREFIXES)}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", WANDB_MODE="offline", ABSWIN_OUTPUT_ROOT=str(output_root))
    env[MARKER] = marker
    env.update(extra)
    return env


def slurm_env(rank: int, job_id: str, port: int) -> dict[str, str]:
    """What srun sets for task ``rank`` of a 2-node job with one task per node."""
    return dict(SLURM_JOB_ID=job_id, SLURM_JOB_NAME="train", SLURM_NTASKS="2", SLURM_NNODES="2",
                SLURM_NTASKS_PER_NODE="1", SLURM_PROCID=str(rank), SLURM_LOCALID="0", SLURM_NODEID=str(rank),
                SLURM_NODELIST="127.0.0.1", SLURM_JOB_NODELIST="127.0.0.1", MASTER_ADDR="127.0.0.1",
                MASTER_PORT=str(port))


def slurm_job_id() -> str:
    return str(random.randint(10_000, 999_999))


# ---------------------------------------------------------------------------- processes via /proc
def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:  # gone
        return ""


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _environ(pid: int) -> dict[str, str]:
    try:
        items = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return {}
    return dict(item.decode(errors="replace").split("=", 1) for item in items if b"=" in item)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def processes_with(marker: str) -> list[int]:
    """Live (not zombie) processes whose environment holds ``ABSWIN_TEST_RUN=marker``."""
    return [int(p.name) for p in Path("/proc").iterdir()
            if p.name.isdigit() and int(p.name) != os.getpid() and _environ(int(p.name)).get(MARKER) == marker
            and _alive(int(p.name))]


def rank_of(pid: int) -> int:
    env = _environ(pid)
    for key in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if key in env:
            return int(env[key])
    return 0


def kill_marker(marker: str, sig: int = signal.SIGKILL) -> None:
    for pid in processes_with(marker):
        try:
            os.kill(pid, signal.SIGCONT)  # a stopped process cannot die of SIGTERM
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


# ---------------------------------------------------------------------------- one launched run
class Launch:
    """The processes of one launched run (one, or one per SLURM task) and their output files."""

    def __init__(self, procs: list[subprocess.Popen], logs: list[tuple[Path, Path]], run_dir: Path, marker: str,
                 what: str):
        self.procs, self.logs, self.run_dir, self.marker, self.what = procs, logs, run_dir, marker, what

    def stdout(self, i: int = 0) -> str:
        return self.logs[i][0].read_text(errors="replace")

    def stderr(self, i: int = 0) -> str:
        return self.logs[i][1].read_text(errors="replace")

    def tail(self, i: int = 0, n: int = 3000) -> str:
        return f"--- stdout[{i}] ---\n{self.stdout(i)[-n:]}\n--- stderr[{i}] ---\n{self.stderr(i)[-n:]}"

    def tails(self) -> str:
        return "\n".join(self.tail(i) for i in range(len(self.procs)))

    def pids(self) -> list[int]:
        """Every live process of the run: launchers, ranks, data-loader workers."""
        return processes_with(self.marker)

    def ranks(self) -> dict[int, int]:
        """{global rank: pid} of the training processes: those running the entry point that are
        neither a torchrun agent nor a fork (data-loader worker) of a process with the same command
        line; forkserver workers and helpers run ``multiprocessing`` and are not ranks."""
        found = {}
        for pid in self.pids():
            cmd = cmdline(pid)
            if ("torch.distributed.run" in cmd or "submitit.local._local" in cmd or "multiprocessing" in cmd
                    or cmd == cmdline(_ppid(pid))):
                continue
            found[rank_of(pid)] = pid
        return found

    def workers(self) -> list[int]:
        """The run's other processes: data-loader workers, their forkserver, helpers."""
        ranks = set(self.ranks().values())
        return [pid for pid in self.pids() if pid not in ranks and "torch.distributed.run" not in cmdline(pid)]

    def wait_for_ranks(self, n: int, timeout: float = 60) -> dict[int, int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ranks = self.ranks()
            if len(ranks) >= n:
                return ranks
            time.sleep(0.2)
        self.kill()
        pytest.fail(f"{self.what}: found ranks {self.ranks()}, expected {n}\n{self.tails()}")

    def signal(self, sig: int, rank: int | None = None) -> None:
        """Send ``sig`` to one rank's training process, or to every rank's (``rank=None``)."""
        ranks = self.ranks()
        targets = list(ranks.values()) if rank is None else [ranks[rank]]
        for pid in targets:
            os.kill(pid, sig)

    def output(self, i: int = 0) -> str:
        return self.stdout(i) + self.stderr(i)

    def step(self, i: int = 0) -> int | None:
        """The global step rank 0's progress bar shows (Lightning writes it to stdout)."""
        return global_step(self.output(i))

    def wait_for_step(self, step: int, timeout: float = 120, i: int = 0) -> int:
        """Block until the rank-0 progress bar (process ``i``'s output) shows global step >= ``step``."""
        return wait_for_step(lambda: self.output(i), step, timeout, self)

    def poll(self) -> list[int | None]:
        return [p.poll() for p in self.procs]

    def wait(self, timeout: float, only: int | None = None) -> list[int]:
        """Exit codes of the launched processes (or of process ``only``); fails the test (after
        killing every process of the run) if they are not all done within ``timeout`` seconds."""
        procs = self.procs if only is None else [self.procs[only]]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(p.poll() is not None for p in procs):
                return [p.returncode for p in procs]
            time.sleep(0.2)
        codes, stacks = self.poll(), self.stacks()
        self.kill()
        pytest.fail(f"{self.what} did not finish within {timeout:.0f} s (exit codes so far: {codes}; last "
                    f"training step shown: {self.step()}; a hang?); killed every process of the run.\n"
                    f"{self.tails()}\n{stacks}")

    def wait_gone(self, timeout: float) -> list[int]:
        """Like :meth:`wait`, and also every other process of the run (ranks, workers) must be gone."""
        deadline = time.monotonic() + timeout
        codes = self.wait(timeout)
        while time.monotonic() < deadline:
            if not self.pids():
                return codes
            time.sleep(0.2)
        left = {pid: cmdline(pid)[:120] for pid in self.pids()}
        self.kill()
        pytest.fail(f"{self.what}: processes still alive {timeout:.0f} s after the signal: {left}\n{self.tails()}")

    def stacks(self) -> str:
        """Where each rank is, from py-spy when it is installed (it is not a dependency)."""
        spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(PYTHON).parent))
        if not spy:
            return "(pip install py-spy to see where each rank waits)"
        dumps = []
        for rank, pid in sorted(self.ranks().items()):
            try:
                r = subprocess.run([spy, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=30)
                dumps.append(f"--- rank {rank} (pid {pid}) ---\n{r.stdout[-3000:]}{r.stderr[-500:]}")
            except subprocess.TimeoutExpired:
                dumps.append(f"--- rank {rank} (pid {pid}): py-spy timed out ---")
        return "\n".join(dumps)

    def kill(self) -> None:
        """SIGKILL everything of this run: the launched process groups and every marked process."""
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        kill_marker(self.marker)
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass


_STARTED: list[Launch] = []


def kill_started() -> None:
    """SIGKILL every process of every launch so far (conftest.py calls it after each test)."""
    while _STARTED:
        _STARTED.pop().kill()


def start(launcher: str, script: str, overrides: list[str], *, output_root: Path, run_name: str,
          env: dict[str, str] | None = None, slurm_job: str | None = None) -> Launch:
    """Start ``python <script> <launcher's trainer args> <overrides> run_name=<run_name>`` under
    ``launcher`` (lightning, torchrun, slurm or single) in the background, its output going to
    files under ``output_root/logs/``. ``env`` adds variables; ``slurm_job`` is the SLURM_JOB_ID
    (default: a random one)."""
    args = [*TRAINER_ARGS[launcher], *overrides, f"run_name={run_name}"]
    if "-m" in overrides:  # a sweep: Hydra's flag first
        args = ["-m", *(a for a in args if a != "-m")]
    logs = output_root / "logs" / f"{run_name}-{len(_STARTED)}"
    logs.mkdir(parents=True, exist_ok=True)
    marker = unique_name(run_name)  # this launch's processes only, not a later launch of the same run
    base = clean_env(output_root, marker, **(env or {}))
    if launcher == "slurm":
        job, port = slurm_job or slurm_job_id(), free_port()
        commands = [([PYTHON, script, *args], {**base, **slurm_env(r, job, port)}) for r in range(2)]
    elif launcher == "torchrun":
        commands = [([PYTHON, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                      str(free_port()), script, *args], base)]
    else:
        commands = [([PYTHON, script, *args], base)]
    procs, files = [], []
    for i, (cmd, e) in enumerate(commands):
        out, err = logs / f"stdout{i}.txt", logs / f"stderr{i}.txt"
        with open(out, "wb") as o, open(err, "wb") as r:
            procs.append(subprocess.Popen(cmd, cwd=ROOT, env=e, stdout=o, stderr=r, stdin=subprocess.DEVNULL,
                                          start_new_session=True))
        files.append((out, err))
    run_dir = output_root / TASKS[script] / run_name
    launch = Launch(procs, files, run_dir, marker, f"{launcher} {script} {run_name}")
    _STARTED.append(launch)
    return launch


def run(launcher: str, script: str, overrides: list[str], *, timeout: float = 240, **kw) -> Launch:
    """Start and wait; the run must exit 0 (every process) within ``timeout`` seconds."""
    launch = start(launcher, script, overrides, **kw)
    codes = launch.wait(timeout)
    assert codes == [0] * len(codes), f"{launch.what} exited with {codes}\n{launch.tails()}"
    return launch


# ---------------------------------------------------------------------------- progress bar
_BAR = re.compile(r"Epoch (\d+):\s*\d+%\|[^|\r\n]*\|\s*(\d+)/(\d+)")


def global_step(text: str) -> int | None:
    """The global step the last rank-0 tqdm training bar (``Epoch 1:  33%|███▎  | 2/6 [...]``)
    shows, or None before the first bar."""
    matches = _BAR.findall(text)
    if not matches:
        return None
    epoch, n, total = map(int, matches[-1])
    return epoch * total + n


def epochs_shown(text: str) -> set[int]:
    """The epochs whose training progress bar appears in ``text`` (a run resumed in the middle
    of an epoch shows a ``Training: | 3/?`` bar without the epoch for that epoch)."""
    return {int(e) for e, _, _ in _BAR.findall(text)}


def wait_for_step(read, step: int, timeout: float, launch: Launch) -> int:
    """Poll ``read()`` (output text) until the progress bar shows global step >= ``step``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = global_step(read())
        if now is not None and now >= step:
            return now
        if all(rc is not None for rc in launch.poll()):
            pytest.fail(f"{launch.what} exited ({launch.poll()}) before step {step} (last seen: {now})\n"
                        f"{launch.tails()}")
        time.sleep(0.05)
    stacks = launch.stacks()
    launch.kill()
    pytest.fail(f"{launch.what} did not reach step {step} within {timeout:.0f} s (last seen: "
                f"{global_step(read())})\n{launch.tails()}\n{stacks}")


# ---------------------------------------------------------------------------- checks
def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def last_step(run_dir: Path) -> int:
    """The global step of the run's checkpoints/last.ckpt."""
    return load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"]


def image_run(data_roots: dict[str, Path], *extra: str) -> list[str]:
    """The overrides of a tiny 2-epoch run on the image set (CSV logs, 2 loader workers), plus ``extra``."""
    return [*data_overrides("images", data_roots["images"]), *COMMON, "logger=csv", *extra]


def trained_steps(run_dir: Path) -> list[int]:
    """The steps (0-based) at which the latest launch of the run logged train/loss, from the
    CSV logger's newest ``csv/version_N/metrics.csv`` (every step with log_every_n_steps=1)."""
    import csv

    versions = sorted(run_dir.glob("csv/version_*"), key=lambda p: int(p.name.split("_")[1]))
    with open(versions[-1] / "metrics.csv") as f:
        return sorted(int(row["step"]) for row in csv.DictReader(f) if row.get("train/loss"))


def assert_same_weights(a: Path, b: Path) -> None:
    """The two checkpoints' state_dicts are bit-identical."""
    sa, sb = load_checkpoint(a)["state_dict"], load_checkpoint(b)["state_dict"]
    assert sa.keys() == sb.keys()
    differ = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not differ, f"{len(differ)} of {len(sa)} tensors differ between {a} and {b}, e.g. {differ[:5]}"


def assert_finished_run(run_dir: Path, script: str, logger: str, epochs: int, steps: int) -> dict:
    """results.json, checkpoints/last.ckpt at the end of ``epochs`` epochs, the logger's files and
    the PNG plots; returns the last checkpoint."""
    assert (run_dir / "results.json").is_file(), f"no results.json in {run_dir}"
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert (ckpt["epoch"], ckpt["global_step"]) == (epochs - 1, epochs * steps)
    if logger == "csv":
        csvs = list(run_dir.rglob("metrics.csv"))
        assert csvs and "train/loss" in csvs[0].read_text().splitlines()[0], f"no CSV metrics in {run_dir}"
    else:
        offline = list((run_dir / "wandb").glob("offline-run-*"))
        assert offline, f"no W&B offline run in {run_dir / 'wandb'}"
        assert len({p.name.rsplit("-", 1)[-1] for p in offline}) == 1, f"several W&B runs: {offline}"
    plots = [p.name for p in run_dir.rglob("*.png") if "plots" in p.parts]
    assert any(n.startswith("pos_embed") for n in plots), f"no position-embedding plot in {run_dir}: {plots}"
    if script == "train.py":
        assert any(n.startswith("mae") for n in plots), f"no MAE reconstruction plot in {run_dir}: {plots}"
    return ckpt
