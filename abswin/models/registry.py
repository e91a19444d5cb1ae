"""One table of Hiera sizes and the factories built from it.

Names follow the official package (``hiera_base_224``, ``hiera_large_16x224``, MAE models
as ``mae_hiera_base_224``) plus ``hiera_atto_*``, a very small size for tests and the CPU
demo, and timm's abs-win variants (``hiera_small_abswin_256``, ``hiera_base_abswin_256``)
so timm's published abs-win weights load and reproduce timm's outputs.
"""

from __future__ import annotations

import inspect

import torch.nn as nn

from .hiera import Hiera
from .mae import MaskedAutoencoderHiera

# size -> constructor arguments shared by image, video and MAE models
SIZES: dict[str, dict] = {
    "atto": dict(embed_dim=32, num_heads=1, stages=(1, 1, 3, 1)),
    "tiny": dict(embed_dim=96, num_heads=1, stages=(1, 2, 7, 2)),
    "small": dict(embed_dim=96, num_heads=1, stages=(1, 2, 11, 2)),
    "base": dict(embed_dim=96, num_heads=1, stages=(2, 3, 16, 3)),
    "base_plus": dict(embed_dim=112, num_heads=2, stages=(2, 3, 16, 3)),
    "large": dict(embed_dim=144, num_heads=2, stages=(2, 6, 36, 4)),
    "huge": dict(embed_dim=256, num_heads=4, stages=(2, 6, 36, 4)),
}
IMAGE_SIZES = list(SIZES)
VIDEO_SIZES = ["atto", "base", "base_plus", "large", "huge"]

# what turns an image Hiera into the video one (official hiera_base_16x224)
VIDEO_ARGS = dict(
    q_stride=(1, 2, 2),
    mask_unit_size=(1, 8, 8),
    patch_kernel=(3, 7, 7),
    patch_stride=(2, 4, 4),
    patch_padding=(1, 3, 3),
)
# MAE decoders: official default (512 wide, 8 blocks, 16 heads); a light one for atto
MAE_DECODER = {"atto": dict(decoder_embed_dim=128, decoder_depth=2, decoder_num_heads=4)}

# timm's abs-win variants (timm/models/hiera.py): LayerScale, 256px, a larger global embedding,
# antialiased resize of it; the small one also drops the stage-transition projection. (timm
# also inits them as JAX does; we keep our init: it only matters without timm's weights.)
TIMM_ABSWIN = {
    "hiera_small_abswin_256": dict(SIZES["small"], global_pos_size=(16, 16), expand_proj=False),
    "hiera_base_abswin_256": dict(SIZES["base"], global_pos_size=(14, 14)),
}
TIMM_ABSWIN_COMMON = dict(pos_embed="abswin", layer_scale_init=1e-5, global_pos_antialias=True, img_size=256)


def _registry() -> dict[str, tuple[type, dict]]:
    reg: dict[str, tuple[type, dict]] = {}
    for size in IMAGE_SIZES:
        reg[f"hiera_{size}_224"] = (Hiera, dict(SIZES[size], img_size=224))
        reg[f"mae_hiera_{size}_224"] = (MaskedAutoencoderHiera, dict(SIZES[size], img_size=224, **MAE_DECODER.get(size, {})))
    for size in VIDEO_SIZES:
        video = dict(SIZES[size], **VIDEO_ARGS, img_size=224, num_frames=16)
        reg[f"hiera_{size}_16x224"] = (Hiera, dict(video, num_classes=400))
        reg[f"mae_hiera_{size}_16x224"] = (MaskedAutoencoderHiera, dict(video, **MAE_DECODER.get(size, {})))
    for name, args in TIMM_ABSWIN.items():
        reg[name] = (Hiera, dict(args, **TIMM_ABSWIN_COMMON))
    return reg


_MODELS = _registry()


def list_models(pattern: str = "*") -> list[str]:
    """Model names, optionally filtered by a glob pattern (``list_models("mae_*")``)."""
    import fnmatch

    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def model_args(name: str, **overrides) -> tuple[type, dict]:
    """The class and constructor arguments ``create_model(name, **overrides)`` would use."""
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    cls, args = _MODELS[name]
    if overrides.get("num_frames") is not None and "num_frames" not in args:
        raise ValueError(f"num_frames is only for video models; {name} is an image model")
    args = dict(args, **{k: v for k, v in overrides.items() if v is not None or k == "global_pos_size"})
    img_size = args.pop("img_size")
    num_frames = args.pop("num_frames", None)
    if "input_size" not in args:
        hw = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        args["input_size"] = hw if num_frames is None else (num_frames, *hw)
    allowed = set(inspect.signature(Hiera.__init__).parameters) | set(inspect.signature(cls.__init__).parameters)
    allowed -= {"self", "kwargs"}
    unknown = sorted(set(args) - allowed)
    if unknown:
        raise ValueError(
            f"unknown option {unknown[0]!r} for {name}; allowed: img_size, num_frames, {', '.join(sorted(allowed))}"
        )
    return cls, args


def create_model(name: str, features_only: bool = False, out_indices=(0, 1, 2, 3), **overrides) -> nn.Module:
    """Build a model by name. Common overrides: ``pos_embed`` (``"abswin"``/``"absolute"``),
    ``img_size``, ``num_frames``, ``num_classes``, ``drop_path_rate``, ``global_pos_size``,
    ``global_pos_antialias``, ``grad_ckpt``; any constructor argument of :class:`Hiera` or
    :class:`MaskedAutoencoderHiera` is accepted. ``features_only``: the backbone of a dense task,
    returning the maps of the stages ``out_indices`` (:class:`~abswin.models.features.HieraFeatures`;
    to load weights, load them into ``create_model(name)`` and wrap it)."""
    cls, args = model_args(name, **overrides)
    model = cls(**args)
    if features_only:
        from .features import HieraFeatures

        return HieraFeatures(model, out_indices)
    return model


INPUTS = ("image", "video")


def hiera_name(size: str, input: str = "image", mae: bool = False) -> str:
    """The registry name of the Hiera of ``size`` for ``input`` (``"image"`` or ``"video"``), the
    MAE model when ``mae``: ``hiera_name("large", "video", mae=True) == "mae_hiera_large_16x224"``.
    The configs name a model by its size and the data's input, never by assembling strings."""
    if input not in INPUTS:
        raise ValueError(f"input={input!r}: must be one of {', '.join(INPUTS)}")
    sizes = VIDEO_SIZES if input == "video" else IMAGE_SIZES
    if size not in sizes:
        raise ValueError(f"model size {size!r} has no {input} Hiera; {input} sizes: {', '.join(sizes)}")
    return f"{'mae_' if mae else ''}hiera_{size}_{'16x224' if input == 'video' else '224'}"
