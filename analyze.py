"""``python analyze.py CHECKPOINT --out DIR``: pictures of a checkpoint's position embedding
(chosen channels at its own size and resized, window similarity, token similarity of the window
and global embeddings) and, for an MAE, reconstructions of the images or videos you pass, with a
``report.md`` beside the PNGs. It reads every checkpoint :func:`abswin.load_checkpoint` reads; files
other than this project's Lightning checkpoints need ``--model NAME``.

Examples::

    python analyze.py outputs/pretrain/<run>/checkpoints/last.ckpt --out analysis --image cat.jpg
    python analyze.py hiera_base_224.pth --model hiera_base_224 --out analysis --size 256 --channels 0-15

Bad input ends with one ``error:`` line and exit status 2 (``ABSWIN_DEBUG=1``: the traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

__all__ = ["main"]


def parse_channels(text: str) -> list[int]:
    """``"0-7"``, ``"0,3,9"`` or ``"0-3,9"`` to channel indices."""
    channels = []
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            lo, _, hi = part.partition("-")
            channels += list(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected channel numbers such as 0-7 or 0,3,9") from None
    if not channels:
        raise argparse.ArgumentTypeError(f"{text!r}: no channels")
    return channels


def parse_size(text: str) -> int | tuple[int, int]:
    """``"256"`` or ``"256x320"`` (height x width) pixels."""
    try:
        sides = [int(s) for s in text.lower().split("x")]
    except ValueError:
        sides = []
    if len(sides) not in (1, 2) or min(sides) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected pixels such as 256 or 256x320")
    return sides[0] if len(sides) == 1 else (sides[0], sides[1])


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        """One line (argparse adds the usage): ``error: ...``, exit status 2."""
        self.exit(2, f"error: {message} (see python analyze.py --help)\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python analyze.py", description=__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="official, timm or abswin file (.pth, .ckpt, .safetensors)")
    p.add_argument("--out", required=True, help="folder for the PNGs and report.md (created)")
    p.add_argument("--size", type=parse_size, default=None,
                   help="image size to resize the embedding to, pixels (256 or 256x320); "
                        "default: one window more per side (224 -> 256)")
    p.add_argument("--channels", type=parse_channels, default=None, help="channels to draw, e.g. 0-7 (default) or 0,5,9")
    p.add_argument("--image", nargs="+", default=[], metavar="PATH", help="images to reconstruct (image MAE)")
    p.add_argument("--video", nargs="+", default=[], metavar="PATH", help="videos to reconstruct (video MAE)")
    p.add_argument("--sampling-rate", type=int, default=4,
                   help="a clip takes every n-th frame of the middle of the video (default 4, as Kinetics)")
    p.add_argument("--mask-ratio", type=float, default=None,
                   help="of the mask units; default: the run's (our checkpoints record it)")
    p.add_argument("--seed", type=int, default=0, help="seed of the reconstruction mask")
    build = p.add_argument_group("building the model (a Lightning checkpoint of ours says all of this itself)")
    build.add_argument("--model", default=None, help="registry name, e.g. hiera_base_224 (abswin.list_models())")
    build.add_argument("--img-size", type=int, default=None, help="default: the checkpoint's, else the registry's")
    build.add_argument("--num-frames", type=int, default=None, help="video models; default as --img-size")
    build.add_argument("--pos-embed", choices=("absolute", "abswin"), default=None,
                       help="default: what the file holds (absolute or abs-win)")
    return p


def read_clip(path: str, num_frames: int, sampling_rate: int) -> np.ndarray:
    """uint8 ``[num_frames, H, W, 3]``: every ``sampling_rate``-th frame from the middle of a video."""
    from datamodules.video_decoding import read_frames

    def choose(n: int) -> np.ndarray:
        start = max(0, (n - (num_frames - 1) * sampling_rate - 1) // 2)
        return np.minimum(start + np.arange(num_frames) * sampling_rate, n - 1)

    try:
        return read_frames(path, choose)
    except OSError as e:
        raise ValueError(f"video {path}: cannot be decoded ({' '.join(str(e).split())[:300]})") from None


def inputs_for(model, images: list[str], videos: list[str], sampling_rate: int) -> dict:
    """``{name: normalised input at the model's size}`` for the files given."""
    from abswin.analysis import has_decoder, load_image, prepare

    if not images and not videos:
        return {}
    if not has_decoder(model):
        raise ValueError("--image / --video reconstruct with an MAE's decoder; this checkpoint is a classifier")
    video_model = len(model.input_size) == 3
    if images and video_model:
        raise ValueError("--image needs an image model; this is a video model: pass --video")
    if videos and not video_model:
        raise ValueError("--video needs a video model; this is an image model: pass --image")
    size = model.input_size[-2:]
    inputs = {}
    for path in images + videos:
        pixels = read_clip(path, model.input_size[0], sampling_rate) if video_model else load_image(path)
        name, i = Path(path).stem, 1
        while name in inputs:
            name, i = f"{Path(path).stem}_{i}", i + 1
        inputs[name] = prepare(pixels, size)
    return inputs


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        for path in args.image + args.video:
            if not Path(path).is_file():
                raise FileNotFoundError(f"{path}: no such file")
        if args.sampling_rate < 1:
            raise ValueError(f"--sampling-rate {args.sampling_rate}: must be at least 1")
        from abswin.analysis import analyze, model_from_checkpoint

        loaded = model_from_checkpoint(args.checkpoint, args.model, args.img_size, args.num_frames, args.pos_embed)
        inputs = inputs_for(loaded.model, args.image, args.video, args.sampling_rate)
        result = analyze(loaded, args.out, size=args.size, channels=args.channels, inputs=inputs,
                         mask_ratio=args.mask_ratio, seed=args.seed)
    except (ValueError, OSError) as e:  # CheckpointError is a ValueError; FileNotFoundError an OSError
        if os.environ.get("ABSWIN_DEBUG"):
            raise
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    for row, value in result.window_similarity.items():
        print(f"window similarity, {row}: {'n/a' if value is None else f'{value:.4f}'}")
    for name, loss in result.losses.items():
        print(f"MAE loss on the masked patches of {name}: {loss:.4f}")
    print(f"wrote {len(result.files)} pictures and {result.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
