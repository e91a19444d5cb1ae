"""Reading video frames: :func:`read_frames`, decord, PyAV or torchcodec with a time limit per read.

decord ``VideoReader`` on the CPU, opened per video and released right after one ``get_batch`` call
(decord leaks memory/threads when readers are kept around, issues dmlc/decord#197/#208/#220/#373),
PyAV (seek + decode only the needed frames) or torchcodec (PyTorch's decoder, on the system's
FFmpeg 4-8 libraries: where they are missing it fails at once and the next decoder reads);
``decoder`` picks the one tried first, and the others, in the order of :data:`DECODERS`, retry on
any failure or time-out. Each read runs in a fresh daemon *thread* joined with a time-out
(``decode_timeout``), not ``signal.alarm``: (1) decord's calls go through ctypes, which releases the
GIL, so the waiting thread gets control back on time even when decord hangs inside C code, whereas a
SIGALRM handler only runs between Python bytecodes, i.e. never while the hung C call lasts; (2)
``signal.alarm`` only works in a process's main thread and would clobber any other SIGALRM user
(with ``num_workers=0`` that is the trainer's process). The cost: a hung read's thread cannot be
killed and is abandoned (counted in ``num_abandoned_reads``, logged); training workers
(non-persistent with a seed) are re-created each epoch, which reclaims them.
"""
from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

import numpy as np

log = logging.getLogger("datamodules")

__all__ = ["DECODERS", "num_abandoned_reads", "read_frames"]

num_abandoned_reads = 0  # timed-out reads in this process (their threads cannot be killed)


def _run_with_timeout(fn: Callable, timeout: float | None):
    """``fn()`` in a fresh daemon thread; TimeoutError after ``timeout`` seconds (the thread is
    abandoned: it cannot be killed). See the module docstring for why a thread, not SIGALRM."""
    if timeout is None or timeout <= 0:
        return fn()
    out: dict = {}

    def target():
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            out["error"] = e

    t = threading.Thread(target=target, daemon=True, name="abswin-video-read")
    t.start()
    t.join(timeout)
    if t.is_alive():
        global num_abandoned_reads
        num_abandoned_reads += 1
        log.warning("video read exceeded %g s: thread abandoned (%d in this process)", timeout, num_abandoned_reads)
        raise TimeoutError(f"read took more than {timeout:g} s")
    if "error" in out:
        raise out["error"]
    return out["value"]


def _read_decord(path: str, choose: Callable[[int], np.ndarray]) -> np.ndarray:
    import decord

    vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
    try:
        n = len(vr)
        if n <= 0:
            raise ValueError("no frames")
        idx = np.asarray(choose(n), dtype=np.int64)
        uniq, inverse = np.unique(np.clip(idx, 0, n - 1), return_inverse=True)
        frames = vr.get_batch(uniq.tolist()).asnumpy()  # one call: [U, H, W, 3] uint8
    finally:
        del vr
    return frames[inverse]


def _read_pyav(path: str, choose: Callable[[int], np.ndarray]) -> np.ndarray:
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_count = 1  # as decord: one thread per read; loader workers are the parallelism
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        tb = float(stream.time_base) if stream.time_base else 0.0
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None and tb else 0.0
        n = int(stream.frames or 0)
        if n <= 0 and stream.duration and tb and fps:
            n = int(round(float(stream.duration * stream.time_base) * fps))
        if n <= 0 or fps <= 0 or not tb:  # no usable metadata: decode everything
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
            if not frames:
                raise ValueError("no frames")
            idx = np.clip(np.asarray(choose(len(frames)), dtype=np.int64), 0, len(frames) - 1)
            return np.stack([frames[i] for i in idx])
        idx = np.clip(np.asarray(choose(n), dtype=np.int64), 0, n - 1)
        want = np.unique(idx)
        first, last = int(want[0]), int(want[-1])
        if first > 0:
            container.seek(int((start + first / fps) / tb), stream=stream, backward=True, any_frame=False)
        got: dict[int, np.ndarray] = {}
        wanted = set(want.tolist())
        for count, frame in enumerate(container.decode(stream)):
            i = int(round((frame.pts * tb - start) * fps)) if frame.pts is not None else first + count
            if i in wanted:
                got[i] = frame.to_ndarray(format="rgb24")
            if i >= last:
                break
        if not got:
            raise ValueError(f"PyAV decoded none of frames {first}..{last}")
        keys = sorted(got)
        out = []
        for i in idx:  # a frame beyond the real end (metadata over-counts) -> the last decoded one
            j = keys[max(0, np.searchsorted(keys, i, side="right") - 1)]
            out.append(got[j])
        return np.stack(out)


def _read_torchcodec(path: str, choose: Callable[[int], np.ndarray]) -> np.ndarray:
    from torchcodec.decoders import VideoDecoder

    decoder = VideoDecoder(path, dimension_order="NHWC", num_ffmpeg_threads=1, seek_mode="exact")
    n = int(decoder.metadata.num_frames or 0)
    if n <= 0:
        raise ValueError("no frames")
    idx = np.asarray(choose(n), dtype=np.int64)
    uniq, inverse = np.unique(np.clip(idx, 0, n - 1), return_inverse=True)
    return decoder.get_frames_at(uniq.tolist()).data.numpy()[inverse]


DECODERS = {"decord": "decord", "pyav": "PyAV", "torchcodec": "torchcodec"}  # name -> display name, fallback order


def _reader(decoder: str) -> Callable:  # looked up per call (tests patch them)
    return {"decord": _read_decord, "pyav": _read_pyav, "torchcodec": _read_torchcodec}[decoder]


def read_frames(path: str | os.PathLike, choose: Callable[[int], np.ndarray],
                timeout: float | None = 30.0, decoder: str = "decord") -> np.ndarray:
    """uint8 ``[len(idx), H, W, 3]`` RGB frames ``idx = choose(num_frames)`` (indices clipped to
    the video). ``decoder`` first ("decord", "pyav" or "torchcodec"), then its fallback (PyAV, or
    decord for PyAV) when it fails or exceeds ``timeout`` seconds; raises when both fail (the
    message names both errors). Two tries at most, so a hung file costs two time limits."""
    if decoder not in DECODERS:
        raise ValueError(f"decoder={decoder!r} is not one of {sorted(DECODERS)}")
    path = str(path)
    first, second = decoder, "decord" if decoder == "pyav" else "pyav"
    try:
        return _run_with_timeout(lambda: _reader(first)(path, choose), timeout)
    except Exception as first_error:  # noqa: BLE001 - any failure: retry with the other decoder
        try:
            return _run_with_timeout(lambda: _reader(second)(path, choose), timeout)
        except Exception as second_error:  # noqa: BLE001
            a = " ".join(str(first_error).split())[:200]
            b = " ".join(str(second_error).split())[:200]
            raise OSError(f"{DECODERS[first]}: {type(first_error).__name__}: {a}; {DECODERS[second]}: "
                          f"{type(second_error).__name__}: {b}") from second_error
