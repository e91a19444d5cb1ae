"""What the bench scripts share, so that they format, time and judge the machine alike.

* numbers and tables: :func:`num`, :func:`ms`, :func:`table` / :func:`table_lines`;
* is the machine quiet enough to time: :func:`cpu_busy`, :func:`busy_cpu_seconds`,
  :func:`wait_until_quiet` (Linux ``/proc/stat``; elsewhere they report nothing and never wait);
* the step they time: :func:`classifier_step` and :func:`timed` (CUDA synchronised);
* where a result came from: :func:`machine` (CPU model, cores, GPU, versions, date),
  :func:`command_line` (the command as typed from the repository root) and :func:`write_results`
  (both beside the results, as the JSON that ``bench/report.py`` renders into the docs).

The scripts run as ``python bench/<script>.py``: Python puts ``bench/`` on ``sys.path``, so they
import this as ``common``.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from contextlib import nullcontext
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent  # the clone's root: commands are recorded relative to it


# ---------------------------------------------------------------------------------- numbers and tables
def num(x: float) -> str:
    """Three significant digits or so: 0.58, 12.9, 3457.7."""
    return f"{x:.2f}" if abs(x) < 10 else f"{x:.1f}"


def ms(seconds: float) -> float:
    return 1e3 * seconds


def table_lines(header: list[str], rows: list[list], widths: list[int] | None = None) -> list[str]:
    """The header and rows as lines: left-aligned first column, right-aligned others, two spaces
    apart; floats through :func:`num`, anything else as ``str`` (format it first for another
    precision). ``widths``: each column's least width, for a fixed layout (a longer cell widens it)."""
    cells = [[str(c) for c in header]] + [[num(c) if isinstance(c, float) else str(c) for c in r] for r in rows]
    least = widths or [0] * len(header)
    widths = [max([least[i]] + [len(r[i]) for r in cells]) for i in range(len(header))]
    return ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in cells]


def table(header: list[str], rows: list[list], indent: str = "", widths: list[int] | None = None) -> None:
    """Print :func:`table_lines`, each line after ``indent``."""
    for line in table_lines(header, rows, widths):
        print(indent + line, flush=True)


# ---------------------------------------------------------------------------------- is the machine quiet
def _proc_stat() -> tuple[int, int]:
    """(all, idle + iowait) clock ticks of all cores since boot."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return sum(v), v[3] + v[4]


def busy_cpu_seconds() -> float | None:
    """CPU seconds all processes have used so far (None where there is no ``/proc/stat``)."""
    try:
        total, idle = _proc_stat()
    except (OSError, ValueError):
        return None
    return (total - idle) / os.sysconf("SC_CLK_TCK")


def cpu_busy(seconds: float = 0.5) -> float | None:
    """Share of all cores busy over the next ``seconds`` (None where unknown). Taken before a run:
    on a shared machine another job lowers every number it measures."""
    try:
        t0, i0 = _proc_stat()
        time.sleep(seconds)
        t1, i1 = _proc_stat()
    except (OSError, ValueError):
        return None
    return 1 - (i1 - i0) / max(t1 - t0, 1)


def wait_until_quiet(limit_s: float, busy: float) -> None:
    """Sleep until less than the share ``busy`` of the CPUs is used over 5 s (at most ``limit_s``)."""
    deadline = time.perf_counter() + limit_s
    while time.perf_counter() < deadline:
        share = cpu_busy(5)
        if share is None or share < busy:
            return


# ---------------------------------------------------------------------------------- the timed step
def classifier_step(model, x, y, dtype: torch.dtype, optimizer=None, fwd=None):
    """One training step as a closure: forward (autocast to ``dtype`` unless fp32) + cross-entropy +
    backward, then ``optimizer``'s step or, without one, ``zero_grad``. Gradients are set to None
    after it, so that every step allocates them afresh, as a training step does. ``fwd``: what to
    call instead of ``model`` (its compiled wrapper)."""
    fwd = model if fwd is None else fwd

    def step():
        with torch.autocast(x.device.type, dtype=dtype) if dtype != torch.float32 else nullcontext():
            loss = F.cross_entropy(fwd(x).float(), y)
        loss.backward()
        if optimizer is not None:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        else:
            model.zero_grad(set_to_none=True)

    return step


def timed(fn, device: torch.device | str) -> float:
    """Seconds of one ``fn()``; on CUDA synchronised before and after, so that queued kernels count."""
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
    t = time.perf_counter()
    fn()
    if cuda:
        torch.cuda.synchronize(device)
    return time.perf_counter() - t


# ---------------------------------------------------------------------------------- where a result came from
def cpu_model() -> str | None:
    """The CPU's model name (Linux ``/proc/cpuinfo``; elsewhere what ``platform`` knows, or None)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "processor\t: ")) and ":" in line:
                    name = line.split(":", 1)[1].strip()
                    if name and not name.isdigit():
                        return name
    except OSError:
        pass
    return platform.processor() or None


def machine(gpu: bool = True) -> dict:
    """The machine a result was measured on, as plain values: CPU model, cores, torch threads, GPU
    name (None without CUDA), torch and Python versions, and the date (UTC). ``gpu=False`` leaves CUDA
    untouched (``gpu`` is then None): a script that forks loader workers asks before or after them."""
    return {"cpu": cpu_model(), "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if gpu and torch.cuda.is_available() else None,
            "torch": torch.__version__, "python": platform.python_version(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def command_line(script: str, argv: list[str] | None = None) -> str:
    """The command as one types it from the repository root: ``python bench/x.py ARGS``. ``script``:
    the bench script's ``__file__``; ``argv``: its arguments (default ``sys.argv[1:]``)."""
    args = sys.argv[1:] if argv is None else list(argv)
    path = Path(script).resolve()
    rel = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    return shlex.join(["python", rel.as_posix(), *args])


def with_provenance(results: dict, script: str, argv: list[str] | None = None, gpu: bool = True) -> dict:
    """``results`` with ``command`` and ``machine`` first (see :func:`command_line`, :func:`machine`)."""
    return {"command": command_line(script, argv), "machine": machine(gpu), **results}


def write_results(path: str | Path, results: dict, script: str, argv: list[str] | None = None,
                  gpu: bool = True) -> dict:
    """Write ``results`` with their command and machine as JSON to ``path`` (``-``: stdout); returns
    what was written. The results are plain numbers, strings and lists: ``bench/report.py`` renders
    them into the docs."""
    out = with_provenance(results, script, argv, gpu)
    text = json.dumps(out, indent=2) + "\n"
    if str(path) == "-":
        sys.stdout.write(text)
    else:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)
    return out
