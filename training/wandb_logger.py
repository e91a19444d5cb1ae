"""Weights & Biases without surprises: never prompt, never block, resume the same run.

* :func:`configure_wandb_env` — offline mode when there is no API key (unless ``WANDB_MODE``
  is set), silent, no console capture.
* a run directory keeps its W&B run id in ``<run_dir>/wandb_run_id.txt``
  (:func:`get_or_create_run_id`); a resumed run reads it back and logs into the same W&B run
  (``resume="allow"``). Only global rank 0 creates and writes the id.
* online, global rank 0 first asks the W&B server for any answer (:func:`server_problem`, seconds);
  one that cannot be reached logs offline with a warning (``offline_fallback``, on by default;
  ``wandb sync`` uploads it later) or is refused in one line, instead of W&B's traceback after
  about 100 s with nothing trained.
* :func:`make_wandb_logger` does all of this and returns a Lightning ``WandbLogger``.
"""

from __future__ import annotations

import logging
import os
import secrets
import string
from pathlib import Path
from typing import Any, MutableMapping

from .atomic_save import atomic_write_text

__all__ = [
    "RUN_ID_FILENAME",
    "configure_wandb_env",
    "run_id_file",
    "read_run_id",
    "write_run_id",
    "new_run_id",
    "get_or_create_run_id",
    "make_wandb_logger",
    "server_problem",
]

RUN_ID_FILENAME = "wandb_run_id.txt"
DEFAULT_SERVER = "https://api.wandb.ai"

log = logging.getLogger("abswin")


def configure_wandb_env(environ: MutableMapping[str, str] | None = None) -> str:
    """Set W&B environment defaults (only variables that are unset) and return the mode.

    Online when there are credentials (``WANDB_API_KEY``, or a ``wandb login`` in ``~/.netrc`` /
    ``$NETRC``), unless ``WANDB_MODE`` says otherwise; ``WANDB_MODE=offline`` when there are none,
    so that a run never prompts or blocks. ``WANDB_SILENT=true``, ``WANDB_CONSOLE=off``.
    ``WANDB_MODE=online`` without credentials is a one-line ValueError saying what to do (W&B
    would fail seconds later with a traceback, after the run started).
    """
    env = os.environ if environ is None else environ
    logged_in = bool(env.get("WANDB_API_KEY")) or has_wandb_login(env)
    if not logged_in and not env.get("WANDB_MODE"):
        env["WANDB_MODE"] = "offline"
    elif not logged_in and env.get("WANDB_MODE") == "online":
        raise ValueError("WANDB_MODE=online but there is no W&B API key: run `wandb login` or set WANDB_API_KEY; "
                         "or log offline (unset WANDB_MODE, or WANDB_MODE=offline) and `wandb sync` later")
    env.setdefault("WANDB_SILENT", "true")
    env.setdefault("WANDB_CONSOLE", "off")
    return env.get("WANDB_MODE") or "online"


def has_wandb_login(env: MutableMapping[str, str]) -> bool:
    """Whether ``wandb login`` stored credentials for the W&B host in the netrc file."""
    import netrc

    host = env.get("WANDB_BASE_URL", DEFAULT_SERVER).split("://")[-1].split("/")[0].split(":")[0]
    path = env.get("NETRC") or os.path.join(env.get("HOME", os.path.expanduser("~")), ".netrc")
    try:
        entry = netrc.netrc(path).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])


def run_id_file(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / RUN_ID_FILENAME


def read_run_id(run_dir: str | os.PathLike) -> str | None:
    path = run_id_file(run_dir)
    if not path.is_file():
        return None
    run_id = path.read_text().strip()
    return run_id or None


def write_run_id(run_dir: str | os.PathLike, run_id: str) -> Path:
    """Write the id atomically (temp file + ``os.replace``)."""
    path = run_id_file(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, run_id)
    return path


def new_run_id(length: int = 8) -> str:
    """A W&B-style id (lowercase letters and digits)."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _global_rank() -> int:
    from lightning.pytorch.utilities import rank_zero_only

    rank = getattr(rank_zero_only, "rank", None)
    return int(rank) if rank is not None else int(os.environ.get("RANK", 0))


def get_or_create_run_id(run_dir: str | os.PathLike) -> str | None:
    """The run id saved in ``run_dir``; on global rank 0 a new one is created and saved if
    there is none. Other ranks get the saved id or ``None`` (their logger logs nothing)."""
    run_id = read_run_id(run_dir)
    if run_id is None and _global_rank() == 0:
        run_id = new_run_id()
        write_run_id(run_dir, run_id)
    return run_id


def server_problem(url: str, timeout_s: float) -> str | None:
    """Why the W&B server at ``url`` cannot be reached within ``timeout_s`` (None: it answered,
    with any HTTP status). Proxies from the environment apply, as they do for W&B itself."""
    import socket
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout_s).close()
    except urllib.error.HTTPError:  # an answer: the server is there
        return None
    except (urllib.error.URLError, socket.timeout, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        return f"no answer within {timeout_s:g} s" if isinstance(reason, (socket.timeout, TimeoutError)) else str(reason)
    return None


def choose_mode(run_dir: Path, offline_fallback: bool, probe_timeout_s: float) -> str:
    """W&B's mode for this run: as :func:`configure_wandb_env` says, but offline (with a warning)
    or a one-line error when an online run's server cannot be reached."""
    mode = configure_wandb_env()  # the mode goes through WANDB_MODE, which wandb.init reads
    if mode != "online" or _global_rank() != 0:
        return mode
    url = os.environ.get("WANDB_BASE_URL", DEFAULT_SERVER)
    problem = server_problem(url, probe_timeout_s)
    if problem is None:
        return mode
    if not offline_fallback:
        raise ValueError(f"the W&B server {url} cannot be reached ({problem}): log offline with WANDB_MODE=offline "
                         f"(or logger.offline_fallback=true) and `wandb sync` later, or fix the network")
    log.warning("the W&B server %s cannot be reached (%s): logging offline to %s; upload it later with "
                "`wandb sync %s/wandb/offline-run-*`", url, problem, run_dir / "wandb", run_dir)
    os.environ["WANDB_MODE"] = "offline"
    return "offline"


def make_wandb_logger(run_dir: str | os.PathLike, project: str | None = None, name: str | None = None,
                      offline_fallback: bool = True, probe_timeout_s: float = 10.0, **kwargs: Any):
    """A ``WandbLogger`` writing under ``run_dir`` whose run id persists in ``run_dir``, so
    that restarting the job in the same directory continues the same W&B run. An unreachable
    server: see :func:`choose_mode`."""
    from lightning.pytorch.loggers import WandbLogger

    run_dir = Path(run_dir)
    choose_mode(run_dir, offline_fallback, probe_timeout_s)
    run_dir.mkdir(parents=True, exist_ok=True)
    run_id = kwargs.pop("id", None) or get_or_create_run_id(run_dir)
    if run_id is not None and read_run_id(run_dir) != run_id and _global_rank() == 0:
        write_run_id(run_dir, run_id)
    kwargs.setdefault("resume", "allow")
    return WandbLogger(save_dir=str(run_dir), project=project, name=name, id=run_id, **kwargs)
