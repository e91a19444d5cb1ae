"""Load Hiera checkpoints of any origin into abswin models.

``load_checkpoint(model, path)`` reads a file safely (``torch.load(weights_only=True)`` or
safetensors: a file whose pickle would run code is refused, never executed), recognises
where it comes from, renames its keys to ours and converts the position embeddings to the
model at hand:

========================  ===========================================================
format                    what it looks like
========================  ===========================================================
``official``              ``{"model_state": ...}`` from the ``hiera-transformer``
                          package: image or video, classifier or MAE
``timm``                  timm's Hiera: ``head.fc.*``, ``head.norm.*``; abs-win as a
                          4-D global ``pos_embed`` (older: ``pos_embed_abs``) and
                          ``pos_embed_win``
``abswin``                ours: a plain state dict, ``{"model": ...}``,
                          ``{"state_dict": ...}`` or the output of ``abswin.convert``
``lightning``             ours inside a Lightning checkpoint
                          (``{"state_dict": {"model.<key>": ...}}``)
========================  ===========================================================

Position embeddings always go through :mod:`abswin.models.pos_embed`:

* absolute -> absolute: naive bicubic resize to the model's ``pretrain_grid`` (the
  paper's baseline);
* absolute -> abs-win: least-squares split into a window and a global part
  (:func:`~abswin.models.pos_embed.absolute_to_abswin`); the report says how much of
  the original it reproduces;
* abs-win -> abs-win: window copied, global resized if its size differs;
* abs-win -> absolute: composed exactly at the model's grid;
* temporal: linear; MAE ``decoder_pos_embed``: per frame bicubic, linear in time.

Anything that cannot be reconciled is a one-line :class:`CheckpointError` naming the file.
"""

from __future__ import annotations

import json
import logging
import math
import pickletools
import re
import struct
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from .models import pos_embed as pe

__all__ = ["CheckpointError", "LoadReport", "load_checkpoint", "read_checkpoint"]

logger = logging.getLogger("abswin")

# keys that only an MAE has (dropped when loading an MAE into a classifier)
MAE_ONLY_PREFIXES = ("decoder_", "multi_scale_fusion_heads.", "mask_token")
# keys that only a classifier has (dropped when loading a classifier into an MAE)
CLASSIFIER_ONLY_PREFIXES = ("norm.", "head.")
# pickled globals a plain torch weights file may reference
_SAFE_GLOBAL_MODULES = ("torch", "collections", "_codecs")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or fitted to the model. The message is one line
    that names the file and the problem."""


@dataclass
class LoadReport:
    """What :func:`load_checkpoint` did. ``str(report)`` is a short human summary."""

    format: str  # "official", "timm", "abswin" or "lightning"
    path: str = ""
    kind: str = ""  # e.g. "video MAE, absolute position embedding"
    loaded: int = 0  # number of tensors copied into the model
    missing: list[str] = field(default_factory=list)  # model keys the file did not provide
    unexpected: list[str] = field(default_factory=list)  # file keys the model has no place for
    ignored: list[str] = field(default_factory=list)  # file keys dropped on purpose (MAE decoder, ...)
    resized: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)
    reinitialised: list[str] = field(default_factory=list)  # head keys of another num_classes
    converted: list[str] = field(default_factory=list)  # notes: renames, abs-win split, antialias
    explained: float | None = None  # absolute -> abs-win: fraction of the variance reproduced

    def __str__(self) -> str:
        lines = [f"{self.format} checkpoint {self.path} ({self.kind}): {self.loaded} tensors loaded"]
        for k, (old, new) in self.resized.items():
            lines.append(f"  resized {k}: {tuple(old)} -> {tuple(new)}")
        lines += [f"  {note}" for note in self.converted]
        if self.reinitialised:
            lines.append(f"  re-initialised (shape differs): {_summarise(self.reinitialised)}")
        if self.ignored:
            lines.append(f"  ignored: {_summarise(self.ignored)}")
        if self.missing:
            lines.append(f"  missing (left as initialised): {_summarise(self.missing)}")
        if self.unexpected:
            lines.append(f"  unexpected (not loaded): {_summarise(self.unexpected)}")
        return "\n".join(lines)


def _summarise(keys: list[str], limit: int = 6) -> str:
    """``decoder_blocks.* (24), mask_token`` rather than 40 key names."""
    groups: dict[str, int] = {}
    for k in keys:
        head = k.split(".", 1)[0]
        name = k if head == k else head + ".*"
        groups[name] = groups.get(name, 0) + 1
    parts = [f"{g} ({n})" if n > 1 else g for g, n in groups.items()]
    more = f", ... ({len(parts) - limit} more groups)" if len(parts) > limit else ""
    return f"{len(keys)} keys: " + ", ".join(parts[:limit]) + more


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(int(i) for i in t.shape)


# ====================================================================== reading files
def _fail(path: Path, problem: str) -> CheckpointError:
    return CheckpointError(f"checkpoint {path}: {problem}")


def _first_line(e: BaseException) -> str:
    text = " ".join(str(e).split("\n")[:1]).strip()
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 9:
        return False
    n = struct.unpack("<Q", head[:8])[0]
    return head[8:9] == b"{" and 8 + n <= size


def _read_safetensors(path: Path, size: int) -> tuple[dict, dict]:
    from safetensors.torch import load_file

    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise _fail(path, f"truncated: {size} bytes, too short for a safetensors file")
        n = struct.unpack("<Q", raw)[0]
        if f.read(1) != b"{":
            raise _fail(path, "corrupt: not a safetensors file (no JSON header)")
        if 8 + n > size:
            raise _fail(path, f"truncated: the safetensors header alone needs {8 + n} bytes, the file has {size}")
        try:
            header = json.loads(b"{" + f.read(n - 1))
            end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
        except Exception:
            raise _fail(path, "corrupt: the safetensors header is not valid") from None
    if 8 + n + end > size:
        raise _fail(path, f"truncated: {size} bytes of {8 + n + end} (an incomplete download or copy?)")
    try:
        tensors = load_file(str(path), device="cpu")
    except Exception as e:
        raise _fail(path, f"corrupt safetensors file ({_first_line(e)})") from None
    meta = {}
    raw_meta = (header.get("__metadata__") or {}).get("abswin")
    if raw_meta:
        try:
            meta = json.loads(raw_meta)
        except ValueError:
            meta = {}
    return tensors, {"abswin": meta} if meta else {}


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


def _diagnose(path: Path, head: bytes, size: int, err: BaseException) -> str:
    """Turn a failed ``torch.load`` into one line: refused, truncated or corrupt."""
    msg = str(err)
    refused = "refused: its pickle would run code (not a plain weights file)"
    m = re.search(r"GLOBAL ([\w.]+)", msg)
    if "Weights only load failed" in msg and m:
        return f"{refused}: it calls {m.group(1)}"
    is_zip = head.startswith(b"PK\x03\x04")
    found, status = [], "bad"
    try:
        if is_zip:
            with open(path, "rb") as f:
                f.seek(max(0, size - 65557))
                if b"PK\x05\x06" not in f.read():
                    return "truncated: the zip archive has no end record (an incomplete download or copy?)"
            with zipfile.ZipFile(path) as z:
                name = next((n for n in z.namelist() if n.endswith("data.pkl")), None)
                if name is not None:
                    with z.open(name) as f:
                        found, status = _scan_pickles(f, max_pickles=1)
        else:
            with open(path, "rb") as f:
                found, status = _scan_pickles(f)
    except Exception:
        found, status = [], "bad"
    unsafe = [g for g in found if re.fullmatch(r"[A-Za-z_][\w.]*", g) and g.split(".", 1)[0] not in _SAFE_GLOBAL_MODULES]
    if unsafe:
        return f"{refused}: it calls {unsafe[0]}"
    if not is_zip and not head.startswith(b"\x80"):  # every torch file and protocol>=2 pickle starts so
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


def read_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint file safely into a dict (a state dict or a wrapper around one).

    ``.safetensors`` files (or files that look like one) come back as
    ``{"state_dict": tensors}`` plus ``"abswin"`` metadata where present.
    """
    path = Path(path)
    if not path.exists():
        raise _fail(path, "no such file")
    if path.is_dir():
        raise _fail(path, "is a directory, not a checkpoint file")
    size = path.stat().st_size
    if size == 0:
        raise _fail(path, "empty file (0 bytes)")
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise _fail(path, f"cannot be read ({e.strerror or type(e).__name__})") from None
    if path.suffix == ".safetensors" or _looks_like_safetensors(head, size):
        tensors, meta = _read_safetensors(path, size)
        return {"state_dict": tensors, **meta}
    try:
        with warnings.catch_warnings():  # torch warns about protocols it then refuses; we explain
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise _fail(path, _diagnose(path, head, size, e)) from None
    if not isinstance(obj, dict):
        raise _fail(path, f"holds a {type(obj).__name__}, not a state dict")
    return obj


# ====================================================================== formats and keys
def _unwrap(obj: dict, path: Path) -> tuple[dict[str, torch.Tensor], str | None, list[str], bool]:
    """The weights inside a checkpoint: ``(state_dict, container key, ignored keys, lightning)``."""
    container = next((k for k in ("model_state", "state_dict", "model") if isinstance(obj.get(k), dict)), None)
    sd = obj[container] if container else obj
    tensors = {k: v for k, v in sd.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        keys = ", ".join(str(k) for k in list(obj)[:8])
        raise _fail(path, f"holds no tensors (top-level keys: {keys})")
    ignored: list[str] = []
    lightning = False
    prefixed = [k for k in tensors if k.startswith("model.")]
    if len(prefixed) * 2 >= len(tensors):  # a LightningModule's state dict: our model is `model`
        lightning = True
        ignored = [k for k in tensors if not k.startswith("model.")]
        tensors = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    for prefix in ("module.", "_orig_mod."):  # DDP / torch.compile wrappers
        if all(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix):]: v for k, v in tensors.items()}
    check_finite(tensors, path)
    return tensors, container, ignored, lightning


def check_finite(tensors: dict[str, torch.Tensor], path: str | Path) -> None:
    """A one-line :class:`CheckpointError` naming the tensors that hold NaN or infinite values."""
    bad = [k for k, v in tensors.items()
           if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise _fail(Path(path), f"holds NaN or infinite values in {', '.join(bad[:3])}{more} (weights of a diverged run?)")


def _is_timm(sd: dict[str, torch.Tensor]) -> bool:
    if any(k.startswith(("head.fc.", "head.norm.")) for k in sd):
        return True
    if "pos_embed_win" in sd or "pos_embed_abs" in sd:
        return True
    return "pos_embed" in sd and sd["pos_embed"].dim() == 4


def _describe(sd: dict[str, torch.Tensor]) -> str:
    w = sd.get("patch_embed.proj.weight")
    video = "pos_embed_temporal" in sd or (w is not None and w.dim() == 5)
    mae = any(k.startswith(MAE_ONLY_PREFIXES) or k.startswith("encoder_norm.") for k in sd)
    if any(k.startswith("pos_embed_win") or k in ("pos_embed_global", "pos_embed_abs") for k in sd) or (
        "pos_embed" in sd and sd["pos_embed"].dim() == 4
    ):
        pos = "abs-win"
    elif "pos_embed" in sd or "pos_embed_spatial" in sd:
        pos = "absolute"
    else:
        pos = "no"
    return f"{'video' if video else 'image'} {'MAE' if mae else 'classifier'}, {pos} position embedding"


def _timm_to_ours(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        if k.startswith("head.fc."):
            k = "head.projection." + k[len("head.fc."):]
        elif k.startswith("head.norm."):
            k = "norm." + k[len("head.norm."):]
        elif k == "pos_embed_win":
            k = "pos_embed_window"
        elif k == "pos_embed_abs" or (k == "pos_embed" and v.dim() == 4):
            k = "pos_embed_global"
        out[k] = v
    return out


def _square_grid(path: Path, key: str, n: int) -> tuple[int, int]:
    side = math.isqrt(n)
    if side * side != n:
        raise _fail(path, f"{key} has {n} tokens, not a square grid: cannot infer its size")
    return side, side


# ====================================================================== position embeddings
def _convert_pos_embeds(model: nn.Module, sd: dict, report: LoadReport, path: Path,
                        ckpt_antialias: bool, model_sd: dict) -> bool | None:
    """Fit the spatial, temporal and decoder position embeddings of ``sd`` to ``model`` (in
    place). Returns the ``global_pos_antialias`` the model must use afterwards (``None``: keep)."""
    new_antialias = None
    t_file = sd["pos_embed_temporal"].shape[1] if "pos_embed_temporal" in sd else None
    abs_key = next((k for k in ("pos_embed", "pos_embed_spatial") if k in sd and sd[k].dim() == 3), None)
    model_abs_key = next((k for k in ("pos_embed", "pos_embed_spatial") if k in model_sd), None)
    ckpt_abswin = "pos_embed_window" in sd or "pos_embed_global" in sd
    model_abswin = getattr(model, "pos_embed_mode", None) == "abswin"

    if abs_key and model_abs_key == abs_key:  # absolute -> absolute
        pos = sd[abs_key]
        grid = _square_grid(path, abs_key, pos.shape[1])
        target = tuple(model.pretrain_grid)
        if grid != target:
            sd[abs_key] = pe.resize_absolute(pos, grid, target)
            report.resized[abs_key] = (_shape(pos), _shape(sd[abs_key]))

    elif abs_key and model_abswin:  # absolute -> abs-win: least-squares split
        pos = sd.pop(abs_key)
        grid = _square_grid(path, abs_key, pos.shape[1])
        win_p, glob_p = model.pos_embed_window, model.pos_embed_global
        window = tuple(model.mask_unit_size[-2:]) if win_p is not None else (1, 1)
        gsize = tuple(glob_p.shape[-2:]) if glob_p is not None else (1, 1)
        try:
            dec = pe.absolute_to_abswin(pos, grid, window=window, global_size=gsize)
        except ValueError as e:
            raise _fail(path, f"cannot split {abs_key} {_shape(pos)} into abs-win: {e}") from None
        window_emb, glob_emb = dec.window, dec.glob
        # a part the model lacks is folded into the other exactly: bicubic resizing keeps
        # constants, and a 1x1 "window" or "global" is a per-channel constant
        if glob_p is None:
            window_emb, glob_emb = window_emb + glob_emb, None
        if win_p is None:
            window_emb, glob_emb = None, glob_emb + window_emb
        if window_emb is not None:
            sd["pos_embed_window"] = window_emb.contiguous()
        if glob_emb is not None:
            sd["pos_embed_global"] = glob_emb.contiguous()
        parts = " + ".join(
            f"{n} {_shape(t)}" for n, t in (("window", window_emb), ("global", glob_emb)) if t is not None
        )
        report.explained = dec.explained
        report.converted.append(
            f"absolute {abs_key} {_shape(pos)} ({grid[0]}x{grid[1]} grid) split into abs-win {parts}: "
            f"reproduces {dec.explained:.2%} of its variance (relative error {dec.rel_error:.3f})"
        )
        if model.global_pos_antialias:
            report.converted.append("global_pos_antialias set to False (the split assumes plain bicubic)")
        new_antialias = False

    elif ckpt_abswin and model_abswin:  # abs-win -> abs-win
        if "pos_embed_window" in sd and "pos_embed_window" in model_sd:
            old, new = _shape(sd["pos_embed_window"]), _shape(model_sd["pos_embed_window"])
            if old[-2:] != new[-2:]:
                raise _fail(path, f"pos_embed_window has shape {old} in the file but {new} in the model: "
                                  "a window embedding of another mask-unit size cannot be converted")
        for key in ("pos_embed_window", "pos_embed_global"):  # a part the file lacks adds nothing
            if key in model_sd and key not in sd:
                sd[key] = torch.zeros_like(model_sd[key])
                report.converted.append(f"{key}: not in the file, set to zero (the file's embedding is the other part alone)")
        if report.format == "timm":
            report.converted.append("global_pos_antialias = True: timm composes the global embedding with antialias")
            new_antialias = True
        elif ckpt_antialias != model.global_pos_antialias:
            report.converted.append(f"global_pos_antialias set to {ckpt_antialias} (as the checkpoint was trained)")
            new_antialias = ckpt_antialias
        if "pos_embed_global" in sd and "pos_embed_global" in model_sd:
            g = sd["pos_embed_global"]
            size = tuple(model_sd["pos_embed_global"].shape[-2:])
            if tuple(g.shape[-2:]) != size and g.shape[1] == model_sd["pos_embed_global"].shape[1]:
                sd["pos_embed_global"] = pe.resize_global(g, size, antialias=ckpt_antialias).contiguous()
                report.resized["pos_embed_global"] = (_shape(g), _shape(sd["pos_embed_global"]))

    elif ckpt_abswin and model_abs_key:  # abs-win -> absolute: compose exactly
        win, glob = sd.pop("pos_embed_window", None), sd.pop("pos_embed_global", None)
        grid = tuple(model.pretrain_grid)
        pos = pe.abswin_embed(win, glob, grid, antialias=ckpt_antialias).flatten(2).transpose(1, 2).contiguous()
        sd[model_abs_key] = pos
        report.converted.append(
            f"abs-win embedding composed into absolute {model_abs_key} {_shape(pos)} at the "
            f"{grid[0]}x{grid[1]} grid (exact, antialias={ckpt_antialias})"
        )

    if "pos_embed_temporal" in sd and "pos_embed_temporal" in model_sd:
        t = sd["pos_embed_temporal"]
        n = model_sd["pos_embed_temporal"].shape[1]
        if t.shape[1] != n:
            sd["pos_embed_temporal"] = pe.resize_temporal(t, n).contiguous()
            report.resized["pos_embed_temporal"] = (_shape(t), _shape(sd["pos_embed_temporal"]))

    if "decoder_pos_embed" in sd and "decoder_pos_embed" in model_sd:
        d = sd["decoder_pos_embed"]
        want = model_sd["decoder_pos_embed"].shape
        if d.shape != want and d.shape[-1] == want[-1]:
            final = list(model.tokens_spatial_shape_final)
            grid_new = tuple(final[-2:])
            if len(final) == 3:  # video: [1, T*h*w, C], T outermost
                t_old = t_file or final[0]
                if d.shape[1] % t_old:
                    raise _fail(path, f"decoder_pos_embed has {d.shape[1]} tokens, not a multiple of {t_old} frames")
                grid_old = _square_grid(path, "decoder_pos_embed (per frame)", d.shape[1] // t_old)
                frames = [pe.resize_absolute(f[None], grid_old, grid_new)[0] for f in d[0].view(t_old, -1, d.shape[-1])]
                x = torch.stack(frames, 1)  # [h*w, T, C]: one temporal sequence per spatial token
                x = pe.resize_temporal(x, final[0])
                new = x.transpose(0, 1).reshape(1, -1, d.shape[-1])
            else:
                grid_old = _square_grid(path, "decoder_pos_embed", d.shape[1])
                new = pe.resize_absolute(d, grid_old, grid_new)
            sd["decoder_pos_embed"] = new.contiguous()
            report.resized["decoder_pos_embed"] = (_shape(d), _shape(new))
    return new_antialias


# ====================================================================== the loader
def load_checkpoint(model: nn.Module, path: str | Path, strict: bool = False) -> LoadReport:
    """Load an official, timm or abswin checkpoint (``.pth``/``.ckpt``/``.safetensors``) into
    ``model``, converting keys and position embeddings as needed.

    Heads of another ``num_classes`` are not loaded (``report.reinitialised``); an MAE's decoder
    is ignored by a classifier and its ``encoder_norm`` becomes the classifier's ``norm``.
    ``strict=True`` raises :class:`CheckpointError` if any model key is missing or any file key
    unexpected. The model is only modified once everything fits.
    """
    path = Path(path)
    obj = read_checkpoint(path)
    sd, container, ignored, lightning = _unwrap(obj, path)
    meta = obj.get("abswin") if isinstance(obj.get("abswin"), dict) else None
    timm = _is_timm(sd)
    if lightning:
        fmt = "lightning"
    elif meta is not None:
        fmt = "abswin"
    elif timm:
        fmt = "timm"
    elif container == "model_state":
        fmt = "official"
    else:
        fmt = "abswin"
    report = LoadReport(format=fmt, path=str(path), kind=_describe(sd), ignored=list(ignored))
    model_sd = model.state_dict()

    if timm:
        sd = _timm_to_ours(sd)
        report.converted.append("timm names mapped to ours (head.fc/head.norm/pos_embed_win/pos_embed)")

    # antialias the checkpoint's global embedding was composed with
    if timm:
        ckpt_antialias = True
    elif meta is not None and "global_pos_antialias" in meta.get("options", {}):
        ckpt_antialias = bool(meta["options"]["global_pos_antialias"])
    else:
        ckpt_antialias = bool(getattr(model, "global_pos_antialias", False))

    # MAE <-> classifier
    model_is_mae = "decoder_pos_embed" in model_sd or "encoder_norm.weight" in model_sd
    if not model_is_mae:
        if "norm.weight" in model_sd and "norm.weight" not in sd and "encoder_norm.weight" in sd:
            for k in [k for k in sd if k.startswith("encoder_norm.")]:
                sd["norm." + k[len("encoder_norm."):]] = sd.pop(k)
            report.converted.append("MAE encoder_norm loaded as the classifier's norm")
        drop = [k for k in sd if k.startswith(MAE_ONLY_PREFIXES) and k not in model_sd]
    else:
        drop = [k for k in sd if k.startswith(CLASSIFIER_ONLY_PREFIXES) and k not in model_sd]
    drop += [k for k in sd if k.startswith("head.") and k not in model_sd]  # model without a head
    for k in dict.fromkeys(drop):
        sd.pop(k)
        report.ignored.append(k)

    new_antialias = _convert_pos_embeds(model, sd, report, path, ckpt_antialias, model_sd)

    # heads of another size are re-initialised; any other mismatch is an error
    mismatched = []
    for k in list(sd):
        if k in model_sd and sd[k].shape != model_sd[k].shape:
            if k.startswith("head."):
                report.reinitialised.append(k)
                sd.pop(k)
            else:
                mismatched.append(k)
    if mismatched:
        k = mismatched[0]
        more = f" (and {len(mismatched) - 1} more mismatched tensors: another model size?)" if len(mismatched) > 1 else ""
        raise _fail(path, f"{k} has shape {_shape(sd[k])} in the file but {_shape(model_sd[k])} in the model{more}")

    report.missing = [k for k in model_sd if k not in sd and k not in report.reinitialised]
    report.unexpected = [k for k in sd if k not in model_sd]
    if strict and (report.missing or report.unexpected):
        raise _fail(
            path,
            f"strict load: {len(report.missing)} missing ({', '.join(report.missing[:3]) or '-'}), "
            f"{len(report.unexpected)} unexpected ({', '.join(report.unexpected[:3]) or '-'})",
        )

    if not any(k in model_sd for k in sd):
        sample = ", ".join(list(sd)[:3])
        raise _fail(path, f"none of its {len(sd)} tensors belong to this model ({sample}, ...): "
                          f"a checkpoint of another architecture?")
    result = model.load_state_dict({k: v for k, v in sd.items() if k in model_sd}, strict=False)
    assert not result.unexpected_keys
    report.loaded = sum(1 for k in sd if k in model_sd)
    if new_antialias is not None:
        model.global_pos_antialias = new_antialias

    if report.explained is not None:
        logger.warning(
            "%s: absolute position embedding converted to abs-win; tile(window) + interp(global) "
            "reproduces %.2f%% of it", path, 100 * report.explained,
        )
    level = logging.WARNING if report.missing or report.unexpected else logging.INFO
    logger.log(level, "%s", report)
    return report
