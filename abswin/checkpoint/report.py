"""What a checkpoint load did, kept apart from the loading so that the CLI, the logs and the
tests read one summary: tensors loaded, converted, resized, missing and unexpected."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


def shape_of(t: torch.Tensor) -> tuple[int, ...]:
    """A tensor's shape as plain ints, for reports and error messages."""
    return tuple(int(i) for i in t.shape)


@dataclass
class LoadReport:
    """What :func:`~abswin.checkpoint.load_checkpoint` did. ``str(report)`` is a short human summary."""

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
            lines.append(f"  re-initialised (shape differs): {_summarise_keys(self.reinitialised)}")
        if self.ignored:
            lines.append(f"  ignored: {_summarise_keys(self.ignored)}")
        if self.missing:
            lines.append(f"  missing (left as initialised): {_summarise_keys(self.missing)}")
        if self.unexpected:
            lines.append(f"  unexpected (not loaded): {_summarise_keys(self.unexpected)}")
        return "\n".join(lines)


def _summarise_keys(keys: list[str], limit: int = 6) -> str:
    """``decoder_blocks.* (24), mask_token`` rather than 40 key names."""
    groups: dict[str, int] = {}
    for k in keys:
        head = k.split(".", 1)[0]
        name = k if head == k else head + ".*"
        groups[name] = groups.get(name, 0) + 1
    parts = [f"{g} ({n})" if n > 1 else g for g, n in groups.items()]
    more = f", ... ({len(parts) - limit} more groups)" if len(parts) > limit else ""
    return f"{len(keys)} keys: " + ", ".join(parts[:limit]) + more
