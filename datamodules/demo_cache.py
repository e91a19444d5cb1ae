"""Build a bundled demo data set once, atomically: :func:`build_once`, used by the image (MNIST,
:mod:`datamodules.demo`) and the video (:mod:`datamodules.video_demo`) demo sets."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["MARKER", "build_once", "is_complete"]

MARKER = ".complete.json"


def is_complete(root: Path, expected: dict) -> bool:
    """Whether ``root`` holds a finished build whose marker equals ``expected``."""
    try:
        return json.loads((root / MARKER).read_text()) == expected
    except (OSError, ValueError):
        return False


def build_once(root: Path, expected: dict, write: Callable[[Path], dict]) -> Path:
    """Build a data set folder once: ``write(tmp)`` fills a temporary sibling folder and returns
    the marker contents, which must equal ``expected``; the folder is then moved in with
    ``os.replace``. Idempotent: a folder whose marker (``.complete.json``) equals ``expected`` is
    returned untouched; concurrent callers and crashes never expose a half-written folder, and a
    half-written one left by something else (no marker) is replaced."""
    root = Path(root).expanduser()
    if is_complete(root, expected):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.build-", dir=root.parent))
    try:
        found = write(tmp)
        if found != expected:
            raise RuntimeError(f"building {root} gave {found}, expected {expected}")
        (tmp / MARKER).write_text(json.dumps(found))  # written last: its presence means "done"
        for _ in range(3):
            if is_complete(root, expected):  # another process finished first
                break
            try:
                os.replace(tmp, root)  # atomic when root is absent (or an empty folder)
                break
            except OSError:  # root exists without a marker: a half-written folder, move it away
                stale = Path(tempfile.mkdtemp(prefix=f".{root.name}.stale-", dir=root.parent))
                try:
                    os.replace(root, stale)
                except FileNotFoundError:
                    pass
                shutil.rmtree(stale, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not is_complete(root, expected):
        raise RuntimeError(f"could not build the data set at {root}")
    return root
