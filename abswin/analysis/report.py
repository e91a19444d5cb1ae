"""Everything about one model in a folder: the PNGs of :mod:`.embeddings` and :mod:`.reconstructions`
and a ``report.md`` that shows them with the numbers (what ``python analyze.py`` writes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from ..models import pos_embed as pe
from . import drawing
from .embeddings import (channels_picture, check_channels, grid_at, next_size, num_channels, own_grid, pixels,
                         spatial_window_similarity, token_similarity_picture, window_and_global, window_of,
                         window_similarity_picture)
from .loading import LoadedModel
from .reconstructions import IMAGENET_MEAN, IMAGENET_STD, has_decoder, reconstruct

__all__ = ["Analysis", "analyze"]


@dataclass
class Analysis:
    """What :func:`analyze` wrote and measured."""

    out: Path
    files: dict[str, str] = field(default_factory=dict)  # PNG name -> what it shows
    window_similarity: dict[str, float | None] = field(default_factory=dict)  # row of the table -> value
    losses: dict[str, float] = field(default_factory=dict)  # input name -> MAE loss on its masked patches
    notes: list[str] = field(default_factory=list)

    @property
    def report(self) -> Path:
        return self.out / "report.md"


def _px(model, grid) -> str:
    h, w = pixels(model, grid)
    return f"{h}px" if h == w else f"{h}x{w}px"


def _similarity(model, grid) -> float | None:
    try:
        return spatial_window_similarity(model, grid)
    except ValueError:  # fewer than two windows
        return None


def _converted_similarity(model, parts: dict[str, torch.Tensor], grid) -> tuple[float | None, str | None]:
    """An absolute embedding split into abs-win at its own grid (``parts``), then resized the abs-win
    way: (its window similarity, or None and why)."""
    try:
        emb = pe.abswin_embed(parts["window"][None], parts["global"][None], grid)
        return pe.window_similarity(emb, window=window_of(model)), None
    except ValueError as e:
        return None, str(e)


def analyze(model: torch.nn.Module | LoadedModel, out: str | Path, size: int | Sequence[int] | None = None,
            channels: Sequence[int] | None = None, inputs: dict[str, torch.Tensor] | None = None,
            mask_ratio: float | None = None, seed: int = 0, mean: Sequence[float] = IMAGENET_MEAN,
            std: Sequence[float] = IMAGENET_STD) -> Analysis:
    """Write the pictures of ``model`` (or of a :func:`~abswin.analysis.model_from_checkpoint`
    result) and ``report.md`` into ``out``:

    * the chosen ``channels`` (default: the first 8) of the spatial position embedding at its own
      grid and resized to ``size`` pixels (default: one window more per side), with the window grid;
    * the window similarity at both sizes (the matrix between windows, and its mean in the report);
    * the token-to-token similarity of the window and global embeddings (paper, Fig. 5);
    * for an MAE, the reconstruction of each normalised input of ``inputs`` (``{name: [1, 3, H, W]
      or [1, 3, T, H, W]}``, at the model's input size) with ``mask_ratio`` and a mask from ``seed``.
    """
    loaded = model if isinstance(model, LoadedModel) else None
    model = loaded.model if loaded else model
    own = own_grid(model)
    new = grid_at(model, size if size is not None else next_size(model))
    channels = list(channels) if channels is not None else list(range(min(8, num_channels(model))))
    check_channels(model, channels)
    if inputs and not has_decoder(model):
        raise ValueError("reconstructions need an MAE checkpoint (with a decoder); this is a classifier")
    ratio = mask_ratio if mask_ratio is not None else getattr(loaded, "mask_ratio", None)
    if inputs and ratio is None:
        raise ValueError("the checkpoint does not record its MAE mask ratio: pass one (--mask-ratio R; "
                         "the recipes use 0.6 for images, 0.9 for video: conf/train.yaml)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result = Analysis(out)

    def save(name: str, image: torch.Tensor, what: str) -> None:
        drawing.save_png(image, out / name)
        result.files[name] = what

    for grid, what in ((own, "at its own grid"), (new, "resized")):
        save(f"pos_embed_channels_{_px(model, grid)}.png", channels_picture(model, channels, grid),
             f"channels {', '.join(map(str, channels))} of the position embedding {what}, {_px(model, grid)}")
    try:
        save("window_similarity.png", window_similarity_picture(model, [own, new]),
             "cosine similarity between the windows' embeddings, before and after resizing")
    except ValueError as e:
        result.notes.append(f"no window-similarity picture: {e}")

    try:  # for an absolute embedding, the least-squares split into window and global (once)
        parts, source = window_and_global(model)
    except ValueError as e:
        parts, source = None, str(e)

    how = "naive bicubic" if model.pos_embed_mode == "absolute" else "window tiled + global interpolated"
    result.window_similarity[f"at its own grid ({_px(model, own)})"] = _similarity(model, own)
    result.window_similarity[f"resized to {_px(model, new)}, {how}"] = _similarity(model, new)
    if model.pos_embed_mode == "absolute":
        value, why = _converted_similarity(model, parts, new) if parts is not None else (None, None)
        result.window_similarity[f"converted to abs-win, then resized to {_px(model, new)}"] = value
        result.notes.append(f"abs-win conversion: {why or source}")

    if parts is None:
        result.notes.append(f"no token-similarity pictures: {source}")
    for part, emb in (parts or {}).items():
        h, w = emb.shape[-2:]
        save(f"token_similarity_{part}.png",
             token_similarity_picture(emb, f"{part} embedding ({h}x{w}): cosine similarity of each token to all"),
             f"token-to-token similarity of the {part} embedding ({source})")

    if inputs:
        for name, x in inputs.items():
            r = reconstruct(model, x, ratio, seed)
            result.losses[name] = r.loss
            save(f"reconstruction_{name}.png", r.picture(mean, std, all_frames=True),
                 f"{name}: original | masked ({ratio:g} of the mask units) | prediction | prediction + visible")
        result.notes.append(f"reconstructions: mask ratio {ratio:g}, mask seed {seed}")
    result.report.write_text(_markdown(model, loaded, result, own))
    return result


def _value(v: float | None) -> str:
    return "n/a (fewer than two windows)" if v is None else f"{v:.4f}"


def _markdown(model, loaded: LoadedModel | None, result: Analysis, own) -> str:
    window = window_of(model)
    lines = ["# Position-embedding analysis", ""]
    if loaded:
        kwargs = ", ".join(f"{k}={v}" for k, v in loaded.model_kwargs.items() if v is not None)
        lines += [f"- checkpoint: `{loaded.path}` ({loaded.report.format}: {loaded.report.kind})",
                  f"- model: `{loaded.model_name}`{f' ({kwargs})' if kwargs else ''}",
                  f"- loading: {loaded.report.loaded} tensors loaded, {len(loaded.report.missing)} missing, "
                  f"{len(loaded.report.unexpected)} unexpected"]
        lines += [f"  - {note.strip()}" for note in str(loaded.report).splitlines()[1:]]
        if any(k in loaded.report.resized for k in ("pos_embed", "pos_embed_spatial")):
            lines.append("  - the file's absolute embedding was resized to this model's grid when loaded: "
                         "pass --img-size to see it at the size it was trained at")
    parts = ("absolute: one learned embedding, resized by naive bicubic interpolation"
             if model.pos_embed_mode == "absolute" else
             "abs-win: " + " + ".join(f"{name} {'x'.join(map(str, p.shape[-2:]))}" for name, p in
                                      (("window", model.pos_embed_window), ("global", model.pos_embed_global))
                                      if p is not None))
    lines += [f"- position embedding: {parts}; own grid {own[0]}x{own[1]} tokens "
              f"({'x'.join(map(str, pixels(model, own)))} px), windows of {window[0]}x{window[1]} tokens"]
    if getattr(model, "pos_embed_temporal", None) is not None:
        lines.append(f"- video: the spatial embedding is shown; the temporal one has "
                     f"{model.pos_embed_temporal.shape[1]} frame tokens")
    lines += ["", "## Window similarity", "",
              "The mean cosine similarity between the embeddings of all pairs of windows (the paper's Fig. 4, "
              "`abswin.window_similarity`); 1 means every window carries the same embedding.", "",
              "| embedding | window similarity |", "|---|---|"]
    lines += [f"| {row} | {_value(v)} |" for row, v in result.window_similarity.items()]
    lines += ["", "## Pictures", ""]
    for name, what in result.files.items():
        lines += [f"**{name}**: {what}", "", f"![{name}]({name})", ""]
    if result.losses:
        lines += ["## MAE reconstructions", "", "| input | loss on the masked patches |", "|---|---|"]
        lines += [f"| {name} | {loss:.4f} |" for name, loss in result.losses.items()]
        lines.append("")
    if result.notes:
        lines += ["## Notes", ""] + [f"- {note}" for note in result.notes] + [""]
    return "\n".join(lines)
