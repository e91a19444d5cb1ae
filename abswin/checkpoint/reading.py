"""Read a checkpoint file without ever running code from it.

A downloaded ``.pth`` is a pickle, and a pickle can run anything. Files are read with
safetensors or ``torch.load(weights_only=True)``; when that refuses or fails, the file is
inspected statically (its pickle opcodes, its zip end record, its safetensors header) so the
user gets one line saying why: it would run code, it is truncated, or it is not a checkpoint.
"""

from __future__ import annotations

import json
import pickletools
import re
import struct
import warnings
import zipfile
from pathlib import Path

import torch

from .errors import CheckpointError

EXPORTED_WEIGHTS = "model.safetensors"  # the weights of a folder written by python -m abswin.export

# pickled globals a plain torch weights file may reference
_SAFE_GLOBAL_MODULES = ("torch", "collections", "_codecs")


def read_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint file safely into a dict (a state dict or a wrapper around one).

    ``.safetensors`` files (or files that look like one) come back as
    ``{"state_dict": tensors}`` plus ``"abswin"`` metadata where present. A folder written by
    ``python -m abswin.export`` is read through its ``model.safetensors``.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError.about(path, "no such file")
    if path.is_dir():
        if not (path / EXPORTED_WEIGHTS).is_file():
            raise CheckpointError.about(path, f"is a directory without {EXPORTED_WEIGHTS}: not a checkpoint file "
                                              "or a folder of python -m abswin.export")
        path = path / EXPORTED_WEIGHTS
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError.about(path, "empty file (0 bytes)")
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise CheckpointError.about(path, f"cannot be read ({e.strerror or type(e).__name__})") from None
    if path.suffix == ".safetensors" or _looks_like_safetensors(head, size):
        tensors, meta = _read_safetensors(path, size)
        return {"state_dict": tensors, **meta}
    try:
        with warnings.catch_warnings():  # torch warns about protocols it then refuses; we explain
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError.about(path, _why_torch_load_failed(path, head, size, e)) from None
    if not isinstance(obj, dict):
        raise CheckpointError.about(path, f"holds a {type(obj).__name__}, not a state dict")
    return obj


def check_finite(tensors: dict[str, torch.Tensor], path: str | Path) -> None:
    """A one-line :class:`CheckpointError` naming the tensors that hold NaN or infinite values."""
    bad = [k for k, v in tensors.items()
           if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise CheckpointError.about(
            path, f"holds NaN or infinite values in {', '.join(bad[:3])}{more} (weights of a diverged run?)"
        )


# ---------------------------------------------------------------------------- safetensors
def _looks_like_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 9:
        return False
    n = struct.unpack("<Q", head[:8])[0]
    return head[8:9] == b"{" and 8 + n <= size


def _read_safetensors(path: Path, size: int) -> tuple[dict, dict]:
    """``(tensors, {"abswin": metadata} or {})``; truncation and corruption are told apart."""
    from safetensors.torch import load_file

    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise CheckpointError.about(path, f"truncated: {size} bytes, too short for a safetensors file")
        n = struct.unpack("<Q", raw)[0]
        if f.read(1) != b"{":
            raise CheckpointError.about(path, "corrupt: not a safetensors file (no JSON header)")
        if 8 + n > size:
            raise CheckpointError.about(
                path, f"truncated: the safetensors header alone needs {8 + n} bytes, the file has {size}"
            )
        try:
            header = json.loads(b"{" + f.read(n - 1))
            end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
        except Exception:
            raise CheckpointError.about(path, "corrupt: the safetensors header is not valid") from None
    if 8 + n + end > size:
        raise CheckpointError.about(path, f"truncated: {size} bytes of {8 + n + end} (an incomplete download or copy?)")
    try:
        tensors = load_file(str(path), device="cpu")
    except Exception as e:
        raise CheckpointError.about(path, f"corrupt safetensors file ({_first_line(e)})") from None
    meta = {}
    raw_meta = (header.get("__metadata__") or {}).get("abswin")
    if raw_meta:
        try:
            meta = json.loads(raw_meta)
        except ValueError:
            meta = {}
    return tensors, {"abswin": meta} if meta else {}


# ---------------------------------------------------------------------------- pickle forensics
def _first_line(e: BaseException) -> str:
    text = " ".join(str(e).split("\n")[:1]).strip()
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _scan_pickles(f, max_pickles: int = 4) -> tuple[list[str], str]:
    """Statically list the globals a pickle stream references, without running it.

    Returns ``(globals, status)`` with status ``"ok"``, ``"eof"`` (cut off inside a pickle) or
    ``"bad"`` (not a pickle). Legacy torch files hold several pickles in a row; the first few
    (magic number, protocol, system info, the object) are scanned.
    """
    found: list[str] = []
    for i in range(max_pickles):
        strings: list[str] = []
        try:
            at_start = f.tell()
            for op, arg, _ in pickletools.genops(f):
                if isinstance(arg, str):
                    strings.append(arg)
                if op.name in ("GLOBAL", "INST"):
                    found.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL":
                    found.append(".".join(strings[-2:]) if len(strings) >= 2 else "?")
        except ValueError as e:
            if i > 0 and f.tell() == at_start:
                return found, "ok"  # clean end of the stream after whole pickles
            cut = any(w in str(e) for w in ("not enough data", "exhausted", "remain"))
            return found, "eof" if cut else "bad"
        except Exception:
            return found, "bad"
    return found, "ok"


def _scan_torch_file(path: Path, head: bytes, size: int) -> tuple[list[str], str]:
    """:func:`_scan_pickles` on a torch file, zip (``data.pkl`` inside) or legacy (pickles in a
    row). A zip without its end record comes back as ``([], "truncated zip")``."""
    if head.startswith(b"PK\x03\x04"):
        with open(path, "rb") as f:
            f.seek(max(0, size - 65557))
            if b"PK\x05\x06" not in f.read():
                return [], "truncated zip"
        with zipfile.ZipFile(path) as z:
            name = next((n for n in z.namelist() if n.endswith("data.pkl")), None)
            if name is None:
                return [], "bad"
            with z.open(name) as f:
                return _scan_pickles(f, max_pickles=1)
    with open(path, "rb") as f:
        return _scan_pickles(f)


def _why_torch_load_failed(path: Path, head: bytes, size: int, err: BaseException) -> str:
    """Turn a failed ``torch.load`` into one line: refused, truncated or corrupt."""
    msg = str(err)
    refused = "refused: its pickle would run code (not a plain weights file)"
    m = re.search(r"GLOBAL ([\w.]+)", msg)
    if "Weights only load failed" in msg and m:
        return f"{refused}: it calls {m.group(1)}"
    try:
        found, status = _scan_torch_file(path, head, size)
    except Exception:
        found, status = [], "bad"
    if status == "truncated zip":
        return "truncated: the zip archive has no end record (an incomplete download or copy?)"
    unsafe = [g for g in found if re.fullmatch(r"[A-Za-z_][\w.]*", g) and g.split(".", 1)[0] not in _SAFE_GLOBAL_MODULES]
    if unsafe:
        return f"{refused}: it calls {unsafe[0]}"
    if not head.startswith((b"PK\x03\x04", b"\x80")):  # every torch file and protocol>=2 pickle starts so
        return "corrupt: not a PyTorch checkpoint (zip or pickle) nor a safetensors file"
    if isinstance(err, EOFError) or "unexpected EOF" in msg or status == "eof":
        return f"truncated ({size} bytes; an incomplete download or copy?)"
    if status == "ok" and "Weights only load failed" in msg:
        detail = next((ln.strip() for ln in msg.splitlines() if ln.strip().startswith("Unsupported")), "")
        return (
            "cannot be read safely: torch.load(weights_only=True) does not support its pickle"
            + (f" ({detail})" if detail else "")
            + "; re-save it with torch.save's default pickle protocol"
        )
    return f"corrupt or unreadable ({_first_line(err)})"
