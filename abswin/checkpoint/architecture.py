"""What network a checkpoint holds, read from its tensors (and, for ours, its hyperparameters):
enough to build the model it fits before loading it (``eval.py`` evaluates a file at any size
without being told how it was trained)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .formats import MAE_ONLY_PREFIXES, our_state_dict
from .reading import read_checkpoint

__all__ = ["Architecture", "read_architecture", "recorded_classes"]


@dataclass
class Architecture:
    video: bool
    mae: bool
    pos_embed: str                           # "abswin" or "absolute": how it resizes
    global_pos_size: tuple[int, int] | None  # abs-win global embedding grid (None: window only)
    window_pos_embed: bool
    num_classes: int                         # rows of the classifier head; 0: no head
    probe_head: bool = False                 # a linear probe's head (BatchNorm before the projection)
    model_name: str | None = None            # ours: the registry model it was trained as
    model_kwargs: dict = field(default_factory=dict)  # ours: the options it was built with
    classes: list[str] | None = None         # ours: the class names, in the head's order

    def model_options(self) -> dict:
        """``create_model`` options that make a model this checkpoint loads into as trained (its
        position-embedding mode and shapes; ours also the rest of what it was built with)."""
        options = dict(self.model_kwargs)
        options.update(pos_embed=self.pos_embed, window_pos_embed=self.window_pos_embed)
        if self.probe_head:
            options["probe_head"] = True
        if self.pos_embed == "abswin":
            options["global_pos_size"] = list(self.global_pos_size) if self.global_pos_size else None
        return options


def read_architecture(path: str | Path, checkpoint: dict | None = None) -> Architecture:
    """The architecture of an official, timm or abswin checkpoint file (``checkpoint``: the file,
    already read by :func:`read_checkpoint`)."""
    checkpoint = read_checkpoint(path) if checkpoint is None else checkpoint
    fmt, _, sd = our_state_dict(checkpoint, path)
    patch = sd.get("patch_embed.proj.weight")
    global_embed = sd.get("pos_embed_global")
    head = sd.get("head.projection.weight")
    hparams = checkpoint.get("hyper_parameters") if fmt == "lightning" else None
    hparams = hparams if isinstance(hparams, dict) else {}
    exported = checkpoint.get("abswin") if isinstance(checkpoint.get("abswin"), dict) else {}  # convert / export
    return Architecture(
        video="pos_embed_temporal" in sd or (patch is not None and patch.dim() == 5),
        mae=any(k.startswith(MAE_ONLY_PREFIXES) for k in sd),
        pos_embed="abswin" if "pos_embed_window" in sd or global_embed is not None else "absolute",
        global_pos_size=tuple(global_embed.shape[-2:]) if global_embed is not None else None,
        window_pos_embed="pos_embed_window" in sd,
        num_classes=int(head.shape[0]) if head is not None else 0,
        probe_head="head.norm.running_mean" in sd,
        model_name=hparams.get("model_name") or exported.get("model"),
        model_kwargs=dict(hparams.get("model_kwargs") or exported.get("options") or {}),
        classes=recorded_classes(checkpoint),
    )


def recorded_classes(checkpoint: dict) -> list[str] | None:
    """The class names a checkpoint of ours recorded (a training checkpoint: its data module's
    state; an exported or converted file: its metadata), or None."""
    exported = checkpoint.get("abswin")
    if isinstance(exported, dict) and isinstance(exported.get("classes"), list):
        return exported["classes"]
    for value in checkpoint.values():
        if isinstance(value, dict) and "train_position" in value and isinstance(value.get("classes"), list):
            return value["classes"]
    return None
