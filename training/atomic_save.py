"""Crash-safe checkpoint files for Lightning.

``AtomicCheckpointIO`` writes a checkpoint to a temporary file in the target's directory,
flushes and fsyncs it, then ``os.replace``-s it over the target (atomic on POSIX) and fsyncs
the directory. A crash or an exception mid-write leaves the previous ``last.ckpt`` intact
and no partial file behind. Loading uses ``weights_only=True`` unless told otherwise.

Use: ``Trainer(plugins=[AtomicCheckpointIO()])``.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Callable, Optional

import torch
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO

__all__ = ["AtomicCheckpointIO", "atomic_torch_save", "atomic_write_text"]


def _local_path(path) -> str | None:
    """The local file path of ``path`` (``file://`` stripped), or None for remote storage."""
    fs, urlpath = url_to_fs(str(path))
    return urlpath if isinstance(fs, LocalFileSystem) else None


def atomic_write_text(path: os.PathLike, text: str) -> None:
    """Write a small text file (``run.json``, ``results.json``) so that a reader sees the old
    content or the new, never a half-written file: a temporary file beside it, then ``os.replace``."""
    path = os.fspath(path)
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(text if text.endswith("\n") else text + "\n")
    os.replace(tmp, path)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` through a fsynced temporary file and ``os.replace``."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file 0600; keep the old file's mode, else the usual 0644
        os.chmod(tmp, os.stat(path).st_mode & 0o777 if os.path.exists(path) else 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. platforms without directory fds
        return
    try:
        os.fsync(dfd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(dfd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """:class:`TorchCheckpointIO` with atomic local writes and ``weights_only=True`` loads.

    Remote paths (``s3://`` etc.) fall back to Lightning's own (transactional) writer.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__}.save_checkpoint does not take storage_options")
        local = _local_path(path)
        if local is None:
            return super().save_checkpoint(checkpoint, path)
        atomic_torch_save(checkpoint, local)

    def load_checkpoint(
        self,
        path,
        map_location: Optional[Callable] = lambda storage, loc: storage,
        weights_only: Optional[bool] = True,
    ) -> dict[str, Any]:
        if weights_only is None:
            weights_only = True
        fs = get_filesystem(path)
        if not fs.exists(path):
            raise FileNotFoundError(f"Checkpoint file not found: {path}")
        # fsspec + torch.load: what Lightning's loader does for local and remote files, through public API
        with fs.open(path, "rb") as f:
            return torch.load(f, map_location=map_location, weights_only=weights_only)
