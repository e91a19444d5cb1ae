"""Where a checkpoint comes from, and its weights under our key names.

Hiera checkpoints come in several layouts; each has ONE pure key-mapping function (state dict
in, state dict in our names out, no model involved), listed in :data:`KEY_MAPPINGS`:

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
``transformers``          Hugging Face transformers' ``HieraForImageClassification`` /
                          ``HieraModel`` (``facebook/hiera-*-hf``): ``hiera.embeddings.*``,
                          ``hiera.encoder.stages.S.layers.L.*``, ``classifier.*``; images only
========================  ===========================================================

:func:`match_model_kind` then fits an MAE's keys to a classifier and the other way round.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import torch

from .errors import CheckpointError

StateDict = dict[str, torch.Tensor]

# keys that only an MAE has (dropped when loading an MAE into a classifier)
MAE_ONLY_PREFIXES = ("decoder_", "multi_scale_fusion_heads.", "mask_token")
# keys that only a classifier has (dropped when loading a classifier into an MAE)
CLASSIFIER_ONLY_PREFIXES = ("norm.", "head.")
# a LightningModule of ours keeps the network as its ``model`` attribute
LIGHTNING_MODEL_PREFIX = "model."
# DDP and torch.compile wrap the network and prefix every key
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def find_weights(checkpoint: dict, path: str | Path) -> tuple[StateDict, str | None]:
    """The tensors of a checkpoint and the key they sit under (``"model_state"``,
    ``"state_dict"``, ``"model"``, or ``None`` for a bare state dict)."""
    container = next((k for k in ("model_state", "state_dict", "model") if isinstance(checkpoint.get(k), dict)), None)
    sd = checkpoint[container] if container else checkpoint
    tensors = {k: v for k, v in sd.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        keys = ", ".join(str(k) for k in list(checkpoint)[:8])
        raise CheckpointError.about(path, f"holds no tensors (top-level keys: {keys})")
    return tensors, container


def detect_format(checkpoint: dict, container: str | None, weights: StateDict) -> str:
    """``"lightning"``, ``"abswin"``, ``"timm"``, ``"transformers"`` or ``"official"`` (see the table above)."""
    if is_lightning(weights):
        return "lightning"
    if looks_like_transformers(weights):
        return "transformers"
    if isinstance(checkpoint.get("abswin"), dict):  # written by abswin.convert
        return "abswin"
    if looks_like_timm(strip_wrappers(weights)):
        return "timm"
    return "official" if container == "model_state" else "abswin"


def our_state_dict(checkpoint: dict, path: str | Path) -> tuple[str, StateDict, StateDict]:
    """``(format, the file's tensors, those tensors in our names)`` of a read checkpoint."""
    weights, container = find_weights(checkpoint, path)
    fmt = detect_format(checkpoint, container, weights)
    try:
        return fmt, weights, KEY_MAPPINGS[fmt](weights)
    except CheckpointError:
        raise
    except ValueError as e:  # a layout the mapping cannot take: one line naming the file
        raise CheckpointError.about(path, str(e)) from None


def is_lightning(weights: StateDict) -> bool:
    """A LightningModule's state dict: (at least half of) its keys are those of its ``model``."""
    prefixed = [k for k in weights if k.startswith(LIGHTNING_MODEL_PREFIX)]
    return len(prefixed) * 2 >= len(weights)


def looks_like_timm(sd: StateDict) -> bool:
    """timm's names: ``head.fc`` and its LayerNorm ``head.norm.weight`` (our linear probe's
    ``head.norm`` is a BatchNorm: only running statistics), or timm's position-embedding names."""
    if any(k.startswith("head.fc.") for k in sd) or "head.norm.weight" in sd:
        return True
    if "pos_embed_win" in sd or "pos_embed_abs" in sd:
        return True
    return "pos_embed" in sd and sd["pos_embed"].dim() == 4


TRANSFORMERS_LAYER = re.compile(r"^(?:hiera\.)?encoder\.stages\.(\d+)\.layers\.(\d+)\.(.+)$")
TRANSFORMERS_NAMES = {  # inside a block: transformers' name -> ours
    "layernorm_before.": "norm1.", "layernorm_after.": "norm2.", "attn.qkv.": "attn.qkv.", "attn.proj.": "attn.proj.",
    "mlp.fc1.": "mlp.fc1.", "mlp.fc2.": "mlp.fc2.", "proj.": "proj.",
}
TRANSFORMERS_OUTSIDE = {  # outside the blocks
    "embeddings.position_embeddings": "pos_embed", "embeddings.patch_embeddings.projection.": "patch_embed.proj.",
    "pooler.layernorm.": "norm.", "classifier.": "head.projection.",
}


def looks_like_transformers(sd: StateDict) -> bool:
    return any(k.startswith(("hiera.embeddings.", "embeddings.patch_embeddings.")) for k in sd)


# ---------------------------------------------------------------------------- key mappings
def strip_wrappers(sd: StateDict) -> StateDict:
    """Remove DDP / torch.compile prefixes that every key carries."""
    for prefix in WRAPPER_PREFIXES:
        if all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def timm_to_ours(sd: StateDict) -> StateDict:
    """timm's head and abs-win names to ours."""
    out = {}
    for k, v in strip_wrappers(sd).items():
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


def transformers_to_ours(sd: StateDict) -> StateDict:
    """transformers' Hiera names to ours (the official ones): blocks numbered across stages in
    the order of their stage and layer; keys of other parts (an MAE decoder) are kept as they are,
    to be reported. A video model is refused: transformers keeps one joint position embedding
    where ours has a spatial and a temporal one."""
    sd = strip_wrappers(sd)
    patch = sd.get("hiera.embeddings.patch_embeddings.projection.weight",
                   sd.get("embeddings.patch_embeddings.projection.weight"))
    if patch is not None and patch.dim() == 5:
        raise ValueError("a transformers video Hiera keeps one joint position embedding (ours are spatial and "
                         "temporal): not supported; use the official or timm file of that model")
    layers = sorted({(int(m[1]), int(m[2])) for k in sd if (m := TRANSFORMERS_LAYER.match(k))})
    block_of = {layer: i for i, layer in enumerate(layers)}
    out = {}
    for key, value in sd.items():
        name = key.removeprefix("hiera.")
        if m := TRANSFORMERS_LAYER.match(key):
            inner = m[3]
            prefix = next((p for p in TRANSFORMERS_NAMES if inner.startswith(p)), None)
            if prefix is not None:
                out[f"blocks.{block_of[(int(m[1]), int(m[2]))]}.{TRANSFORMERS_NAMES[prefix]}{inner[len(prefix):]}"] = value
                continue
        prefix = next((p for p in TRANSFORMERS_OUTSIDE if name.startswith(p)), None)
        out[TRANSFORMERS_OUTSIDE[prefix] + name[len(prefix):] if prefix else key] = value
    return out


def lightning_to_ours(sd: StateDict) -> StateDict:
    """The ``model.`` part of a LightningModule's state dict; the rest (a loss's weights, ...)
    is listed by :func:`lightning_extras`."""
    n = len(LIGHTNING_MODEL_PREFIX)
    return strip_wrappers({k[n:]: v for k, v in sd.items() if k.startswith(LIGHTNING_MODEL_PREFIX)})


def lightning_extras(sd: StateDict) -> list[str]:
    """The keys of a LightningModule's state dict that are not its model's."""
    return [k for k in sd if not k.startswith(LIGHTNING_MODEL_PREFIX)]


KEY_MAPPINGS: dict[str, Callable[[StateDict], StateDict]] = {
    "official": strip_wrappers,  # the official names are ours
    "abswin": strip_wrappers,
    "timm": timm_to_ours,
    "lightning": lightning_to_ours,
    "transformers": transformers_to_ours,
}


# ---------------------------------------------------------------------------- what it holds
def describe(sd: StateDict) -> str:
    """E.g. ``"video MAE, absolute position embedding"``, from a state dict in our names."""
    w = sd.get("patch_embed.proj.weight")
    video = "pos_embed_temporal" in sd or (w is not None and w.dim() == 5)
    mae = any(k.startswith(MAE_ONLY_PREFIXES) or k.startswith("encoder_norm.") for k in sd)
    if "pos_embed_window" in sd or "pos_embed_global" in sd:
        pos = "abs-win"
    elif "pos_embed" in sd or "pos_embed_spatial" in sd:
        pos = "absolute"
    else:
        pos = "no"
    return f"{'video' if video else 'image'} {'MAE' if mae else 'classifier'}, {pos} position embedding"


def match_model_kind(sd: StateDict, model_sd: StateDict) -> tuple[StateDict, list[str], list[str]]:
    """Fit an MAE's keys to a classifier or a classifier's to an MAE: ``(state dict, keys
    dropped, notes)``. An MAE's ``encoder_norm`` becomes a classifier's ``norm``; the parts
    the model has no place for (decoder, head) are dropped."""
    sd = dict(sd)
    notes = []
    model_is_mae = "decoder_pos_embed" in model_sd or "encoder_norm.weight" in model_sd
    if model_is_mae:
        drop = [k for k in sd if k.startswith(CLASSIFIER_ONLY_PREFIXES) and k not in model_sd]
    else:
        if "norm.weight" in model_sd and "norm.weight" not in sd and "encoder_norm.weight" in sd:
            for k in [k for k in sd if k.startswith("encoder_norm.")]:
                sd["norm." + k[len("encoder_norm."):]] = sd.pop(k)
            notes.append("MAE encoder_norm loaded as the classifier's norm")
        drop = [k for k in sd if k.startswith(MAE_ONLY_PREFIXES) and k not in model_sd]
    if not any(k.startswith("head.") for k in model_sd):  # a model without a head: none of the file's
        drop += [k for k in sd if k.startswith("head.")]  # (a head it lacks a part of is unexpected)
    dropped = list(dict.fromkeys(drop))
    for k in dropped:
        sd.pop(k)
    return sd, dropped, notes
