"""DDP that ends instead of hanging, and starts each job's own ranks.

Two changes to Lightning's ``DDPStrategy``:

* ``timeout_s``: the process-group timeout. A collective that cannot complete (a rank stuck or
  dead) raises after this many seconds instead of Lightning's 30 minutes; the entry points turn
  the error into one line naming the rank and step (:func:`distributed_failure`).
* when Lightning starts the ranks of a node itself (``trainer=ddp`` without torchrun or SLURM),
  :class:`JobLauncher` starts ranks 1..N-1 with ``strategy.rank_command(local_rank)``: the command
  of *this* job, which the entry point sets. Lightning's own launcher re-runs ``sys.argv``, so in a ``-m``
  sweep every rank would re-run the whole sweep. After the job it waits for its ranks, ends the
  process group and restores the environment, so the next job of a sweep gets its own ranks and
  its own process group. If a rank dies, the others are ended too.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from datetime import timedelta
from typing import Any, Callable, Sequence

import torch
from lightning.pytorch.strategies import DDPStrategy as LightningDDPStrategy

from .lightning_private import LauncherChoice, SubprocessScriptLauncher, default_rank_command

log = logging.getLogger("abswin")

__all__ = ["DDPStrategy", "JobLauncher", "DistributedFailure", "distributed_failure"]

# what Lightning's launcher sets in the launching process (restored after each job)
_LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


class DistributedFailure(RuntimeError):
    """A collective failed on this rank: another rank died, hung or diverged from this one."""


def distributed_failure(error: BaseException, rank: int, step: int, timeout_s: float | None) -> DistributedFailure | None:
    """A one-line :class:`DistributedFailure` for an error raised by a collective, else None."""
    text = " ".join(str(error).split())
    low = text.lower()
    # gloo reports a peer's timeout as "Application timeout caused pair closure" (no "gloo" in it)
    is_dist = isinstance(error, torch.distributed.DistError) or (
        isinstance(error, RuntimeError) and any(k in low for k in ("gloo", "nccl", "connection closed by peer",
                                                                   "connection reset by peer", "pair closure")))
    if not is_dist:
        return None
    if "timed out" in low or "timeout" in low:
        why = (f"a collective did not complete within the process-group timeout ({timeout_s:g} s, "
               f"trainer.strategy.timeout_s): another rank is stuck or gone")
    elif "closed by peer" in low or "reset by peer" in low:
        why = "another rank closed its connection (it died or was killed); see its log"
    else:
        why = f"a collective failed ({text[:200]})"
    return DistributedFailure(f"rank {rank} at step {step}: {why}")


class JobLauncher(SubprocessScriptLauncher):
    """Lightning's subprocess launcher, but ranks > 0 run ``strategy.rank_command`` (the job's
    own command) and the launch is undone after the job (see the module docstring)."""

    grace_s = 20.0  # after a rank fails, how long the others get to end by themselves

    def __init__(self, strategy: "DDPStrategy") -> None:
        super().__init__(strategy.cluster_environment, strategy.num_processes, strategy.num_nodes)
        self.strategy = strategy

    def launch(self, function: Callable, *args: Any, trainer=None, **kwargs: Any) -> Any:
        if self.cluster_environment.creates_processes_externally:  # torchrun, SLURM, ranks > 0
            return super().launch(function, *args, trainer=trainer, **kwargs)
        saved = {k: os.environ.get(k) for k in _LAUNCH_ENV}
        try:
            self.cluster_environment.validate_settings(num_devices=self.num_processes, num_nodes=self.num_nodes)
            self._start_ranks()
            _RankWatcher(self.procs, self.grace_s).start()
            result = function(*args, **kwargs)
            self._wait_for_ranks()
            return result
        except BaseException:
            self._end_ranks()
            raise
        finally:
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def _start_ranks(self) -> None:
        env = self.cluster_environment
        os.environ.update(MASTER_ADDR=env.main_address, MASTER_PORT=str(env.main_port),
                          NODE_RANK=str(env.node_rank()), LOCAL_RANK=str(env.local_rank()),
                          WORLD_SIZE=str(self.num_processes * self.num_nodes))
        command = self.strategy.rank_command or (lambda local_rank: default_rank_command())
        self.procs = []
        for local_rank in range(1, self.num_processes):
            child_env = dict(os.environ, LOCAL_RANK=str(local_rank))
            self.procs.append(subprocess.Popen(list(command(local_rank)), env=child_env))

    def _wait_for_ranks(self) -> None:
        for i, proc in enumerate(self.procs, start=1):
            code = proc.wait()
            if code != 0:
                raise DistributedFailure(f"rank {i} exited with status {code}; see its log")

    def _end_ranks(self) -> None:
        deadline = time.monotonic() + 10
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()


class _RankWatcher(threading.Thread):
    """Ends the job when a rank exits with an error: the launching process gets ``grace_s`` to end
    by itself (it usually fails fast in its next collective), then it and every rank are killed."""

    def __init__(self, procs: Sequence[subprocess.Popen], grace_s: float) -> None:
        super().__init__(daemon=True, name="abswin-rank-watcher")
        self.procs = list(procs)
        self.grace_s = grace_s

    def run(self) -> None:
        while True:
            codes = [p.poll() for p in self.procs]
            failed = [(i, c) for i, c in enumerate(codes, start=1) if c not in (None, 0)]
            if failed:
                break
            if all(c == 0 for c in codes):
                return
            time.sleep(1.0)
        rank, code = failed[0]
        log.error("rank %d exited with status %d: ending this job's other ranks", rank, code)
        time.sleep(self.grace_s)
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        os.kill(os.getpid(), signal.SIGKILL)


class DDPStrategy(LauncherChoice, LightningDDPStrategy):
    """Lightning's DDP with a process-group timeout in seconds and :class:`JobLauncher`.

    Args:
        timeout_s: seconds a collective may wait for the other ranks before it fails.
        **kwargs: Lightning ``DDPStrategy`` arguments (``find_unused_parameters``, ...).
    """

    def __init__(self, timeout_s: float = 300.0, **kwargs: Any) -> None:
        if not timeout_s or timeout_s <= 0:
            raise ValueError(f"trainer.strategy.timeout_s={timeout_s} must be a positive number of seconds")
        super().__init__(timeout=timedelta(seconds=float(timeout_s)), **kwargs)
        self.timeout_s = float(timeout_s)
        self.rank_command: Callable[[int], list[str]] | None = None  # set by the entry point: local rank -> argv

    def choose_launcher(self, launcher):
        """Lightning's launcher of this node's ranks (no torchrun, no SLURM) becomes :class:`JobLauncher`."""
        return JobLauncher(self) if isinstance(launcher, SubprocessScriptLauncher) else launcher
