"""Named published Hiera weights: where each file lives, what it builds, how to preprocess for it,
and fetching it once into the standard cache.

``pretrained=<name>`` (or :func:`fetch_pretrained`) returns the local path of a published checkpoint;
:func:`abswin.load_checkpoint` then converts it as it converts any file. A file is looked for, in
this order:

1. ``$TORCH_HOME/hub/checkpoints/<file_name>`` (``torch.hub.get_dir()``): where the official files
   are downloaded to, and the one place to put any of them by hand on a machine without internet;
2. timm's files only: the Hugging Face cache (``$HF_HUB_CACHE``, ``$HF_HOME/hub``), through
   ``huggingface_hub.hf_hub_download``, which also works offline (``HF_HUB_OFFLINE=1``) once the file
   is cached;
3. downloaded, with a progress bar: the official files from Meta's server into (1), timm's into (2).

``pretrained=hf-hub:OWNER/NAME[@REVISION]`` (or :func:`fetch_exported`) is a folder that ``python -m
abswin.export --push-to-hub OWNER/NAME`` published, kept in the Hugging Face cache like timm's files.

``ABSWIN_WEIGHTS_MIRROR=URL`` downloads every file from ``URL/<file_name>`` into (1) instead (an
internal server; ``file:///shared/weights`` works too).

**Checksums.** Neither Meta nor timm publishes SHA-256 digests for these files, and this table was
written without downloading them, so the entries carry no digest. What is checked:

- an entry that carries a digest (``sha256=``: a lab's own entries, the tests') is checked on every
  use; a download that fails it is deleted, a cached file that fails it is not used;
- a file in the Hugging Face cache is stored under the SHA-256 the hub reports for it (the blob's
  name): the file must hash to it;
- otherwise the digest is pinned on first use: written next to the file (``<file>.sha256``) and
  every later use is checked against it. This catches a file that changed or was damaged since;
  it cannot tell whether the first download was the file Meta published.

Every failure is one line (:class:`PretrainedError`, a ``ValueError``): an unknown name (with the
close ones), a file that cannot be fetched (with the file to get and where to put it), a checksum
that does not match.
"""

from __future__ import annotations

import difflib
import fcntl
import fnmatch
import hashlib
import os
import re
import socket
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .normalization import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["HUB_PREFIX", "PretrainedError", "PretrainedWeights", "fetch_exported", "fetch_pretrained", "get_pretrained",
           "list_pretrained", "local_path", "lookup", "register_pretrained"]

MIRROR_ENV = "ABSWIN_WEIGHTS_MIRROR"
HUB_PREFIX = "hf-hub:"  # pretrained=hf-hub:OWNER/NAME: a folder of python -m abswin.export on the Hugging Face hub
EXPORTED_FILES = ("config.json", "model.safetensors", "README.md")
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors", ".bin")
DOWNLOAD_TIMEOUT_S = 60  # per connect / read, not for the whole file
_SIZE = re.compile(r"^(?:mae_)?hiera_(atto|tiny|small|base_plus|base|large|huge)_")


class PretrainedError(ValueError):
    """A named checkpoint that is unknown, does not fit, cannot be fetched or fails its checksum.
    The message is one line."""


@dataclass(frozen=True)
class PretrainedWeights:
    """One published checkpoint: where it is, what it builds, and how its inputs were preprocessed."""

    name: str                   # what `pretrained=` takes: <model>.<training>, timm's convention
    model: str                  # the registry model it holds (abswin.create_model; MAE: mae_*)
    source: str                 # "official" (facebookresearch/hiera) or "timm"
    url: str                    # https://... or hf://<repo id>/<file in the repo>
    sha256: str | None          # None: pinned on first use (see the module docstring)
    training: str               # what it was trained on, in words
    num_classes: int            # 0: no classifier head (MAE)
    img_size: int
    num_frames: int | None = None
    crop_pct: float = 0.875     # evaluation: resize the short side to img_size / crop_pct, centre crop
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    license: str = "cc-by-nc-4.0"

    @property
    def file_name(self) -> str:
        """The file's name in the torch hub cache and on a mirror (timm's, all ``model.safetensors``
        on the hub, are ``<name>.safetensors`` there)."""
        base = self.url.rsplit("/", 1)[-1]
        return f"{self.name}{Path(base).suffix}" if self.url.startswith("hf://") else base

    @property
    def download_url(self) -> str:
        """The https address of the file (timm's: the hub's ``resolve/main`` address)."""
        if self.url.startswith("hf://"):
            repo_id, _, file_name = self.url.removeprefix("hf://").rpartition("/")
            return f"https://huggingface.co/{repo_id}/resolve/main/{file_name}"
        return self.url

    @property
    def input(self) -> str:
        return "video" if self.num_frames else "image"

    @property
    def size(self) -> str:
        match = _SIZE.match(self.model)
        return match.group(1) if match else self.model

    @property
    def pos_embed(self) -> str:
        return "abswin" if "abswin" in self.model else "absolute"

    def fits(self, model_name: str) -> bool:
        """Whether the registry model ``model_name`` has this checkpoint's architecture (an MAE's
        encoder fits the classifier of its size and input, and the other way round)."""
        return self.model.removeprefix("mae_") == model_name.removeprefix("mae_")


OFFICIAL = "https://dl.fbaipublicfiles.com/hiera"


def _official() -> list[PretrainedWeights]:
    """facebookresearch/hiera's files (the URLs of ``hiera-transformer``'s ``hiera.py``); an MAE file
    holds the encoder and the decoder."""
    entries = []
    for size in ("tiny", "small", "base", "base_plus", "large", "huge"):
        entries += [
            PretrainedWeights(f"hiera_{size}_224.mae_in1k_ft_in1k", f"hiera_{size}_224", "official",
                              f"{OFFICIAL}/hiera_{size}_224.pth", None, "MAE on ImageNet-1k, finetuned on ImageNet-1k",
                              1000, 224),
            PretrainedWeights(f"hiera_{size}_224.mae_in1k", f"mae_hiera_{size}_224", "official",
                              f"{OFFICIAL}/mae_hiera_{size}_224.pth", None, "MAE on ImageNet-1k", 0, 224),
        ]
    for size in ("base", "base_plus", "large", "huge"):  # Kinetics clips: short side to 224, 224 crops
        entries += [
            PretrainedWeights(f"hiera_{size}_16x224.mae_k400_ft_k400", f"hiera_{size}_16x224", "official",
                              f"{OFFICIAL}/hiera_{size}_16x224.pth", None,
                              "MAE on Kinetics-400, finetuned on Kinetics-400", 400, 224, 16, crop_pct=1.0),
            PretrainedWeights(f"hiera_{size}_16x224.mae_k400", f"mae_hiera_{size}_16x224", "official",
                              f"{OFFICIAL}/mae_hiera_{size}_16x224.pth", None, "MAE on Kinetics-400", 0, 224, 16,
                              crop_pct=1.0),
        ]
    return entries


def _timm() -> list[PretrainedWeights]:
    """timm's abs-win Hiera-S (``timm/models/hiera.py`` default_cfgs), supervised with the "better
    ViT baselines" recipe (sbb2) for 200 epochs on ImageNet-12k (11821 classes), then finetuned on
    ImageNet-1k; ``pd``: with patch dropout over mask units."""
    entries = []
    for tag in ("sbb2_e200_in12k_ft_in1k", "sbb2_pd_e200_in12k_ft_in1k", "sbb2_e200_in12k", "sbb2_pd_e200_in12k"):
        name = f"hiera_small_abswin_256.{tag}"
        training = "supervised on ImageNet-12k" + (" with patch dropout" if "_pd_" in tag else "")
        training += ", finetuned on ImageNet-1k" if tag.endswith("in1k") else ""
        entries.append(PretrainedWeights(name, "hiera_small_abswin_256", "timm", f"hf://timm/{name}/model.safetensors",
                                         None, training, 1000 if tag.endswith("in1k") else 11821, 256, crop_pct=0.95,
                                         license="apache-2.0"))
    return entries


_REGISTRY: dict[str, PretrainedWeights] = {w.name: w for w in (*_official(), *_timm())}


def register_pretrained(weights: PretrainedWeights) -> None:
    """Add or replace an entry (a lab's own published checkpoints, or a test's)."""
    _REGISTRY[weights.name] = weights


def list_pretrained(pattern: str = "*") -> list[str]:
    """Names of the published checkpoints, optionally filtered by a glob (``"*abswin*"``)."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def get_pretrained(name: str) -> PretrainedWeights:
    """The entry called ``name``; an unknown name is one line listing the close ones."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    close = difflib.get_close_matches(name, list(_REGISTRY), n=4, cutoff=0.6)  # the closest first
    close += [n for n in list_pretrained() if n.split(".")[0] == name.split(".")[0] and n not in close]
    hint = f"; close: {', '.join(close)}" if close else ""
    raise PretrainedError(f"unknown pretrained weights {name!r}{hint} (abswin.list_pretrained() lists all "
                          f"{len(_REGISTRY)})")


def lookup(value: str) -> PretrainedWeights | None:
    """What ``pretrained=value`` means: the named entry, or None for a file path (an existing file,
    or a value with a directory or a checkpoint suffix) or a folder on the hub (``hf-hub:``). A value that is neither is taken for a
    misspelt name: :class:`PretrainedError` with the close names."""
    value = str(value)
    if Path(value).exists() or value.startswith(HUB_PREFIX):
        return None
    if value in _REGISTRY:
        return _REGISTRY[value]
    if "/" in value or os.sep in value or value.endswith(CHECKPOINT_SUFFIXES):
        return None
    return get_pretrained(value)


# ------------------------------------------------------------------------------------------ fetching
def fetch_pretrained(name: str, progress: bool = True) -> Path:
    """The local path of the named checkpoint, fetched once (see the module docstring) and checked
    against its SHA-256. Safe to call from every rank at once: one downloads, the others wait."""
    weights = get_pretrained(name)
    mirror = os.environ.get(MIRROR_ENV)
    path = torch_cache_path(weights)
    if path.is_file():
        _verify(weights, path, downloaded=False)
        return path
    if weights.url.startswith("hf://") and not mirror:
        return _from_hugging_face(weights)
    url = f"{mirror.rstrip('/')}/{weights.file_name}" if mirror else weights.url
    return _from_url(weights, url, path, progress)


def torch_cache_path(weights: PretrainedWeights) -> Path:
    """Where the file is (or goes) in the torch hub cache."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / weights.file_name


@contextmanager
def _exclusive(path: Path):
    """Hold ``<path>.lock`` (other processes fetching the same file wait here)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _from_url(weights: PretrainedWeights, url: str, path: Path, progress: bool) -> Path:
    import torch.hub

    with _exclusive(path):
        if path.is_file():  # another process fetched it while this one waited
            _verify(weights, path, downloaded=False)
            return path
        # torch.hub opens the URL without a timeout: a server that never answers (a firewall dropping
        # packets) would hang the run
        timeout = socket.getdefaulttimeout()
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
        try:  # into a temporary file, renamed when complete
            torch.hub.download_url_to_file(url, str(path), progress=progress)
        except Exception as e:  # offline, refused, 404, timeout: one line saying what to do by hand
            raise PretrainedError(f"cannot download {weights.name} from {url} ({_reason(e)}): put {weights.file_name} "
                                  f"from {weights.download_url} at {path}") from None
        finally:
            socket.setdefaulttimeout(timeout)
        _verify(weights, path, downloaded=True)
    return path


def _reason(error: BaseException) -> str:
    if isinstance(getattr(error, "code", None), int):  # urllib's HTTPError: 404 and the like
        return f"HTTP {error.code} {getattr(error, 'reason', '')}".strip()
    text = str(getattr(error, "reason", "") or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _hub_reason(error: BaseException) -> str:
    """Why huggingface_hub could not fetch a file, in a few words: not cached while offline or
    unreachable (with the cache's place), or the hub's own error."""
    from huggingface_hub import constants
    from huggingface_hub.errors import LocalEntryNotFoundError

    if isinstance(error, LocalEntryNotFoundError):
        why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "the hub is unreachable"
        return f"{why} and it is not in the Hugging Face cache {constants.HF_HUB_CACHE}"
    return f"{type(error).__name__}: {_reason(error)}"


def _from_hugging_face(weights: PretrainedWeights) -> Path:
    repo_id, _, file_name = weights.url.removeprefix("hf://").rpartition("/")
    by_hand = (f"put {weights.download_url} at {torch_cache_path(weights)}, or fill the Hugging Face cache "
               f"where the hub is reachable (hf download {repo_id} {file_name})")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise PretrainedError(f"{weights.name} is on the Hugging Face hub and huggingface_hub is not installed "
                              f"(pip install huggingface_hub): {by_hand}") from None
    try:
        path = Path(hf_hub_download(repo_id, file_name))
    except Exception as e:  # offline and not cached, unreachable, unknown repo
        raise PretrainedError(f"cannot fetch {weights.name} from the Hugging Face hub ({_hub_reason(e)}): "
                              f"{by_hand}") from None
    _verify(weights, path, downloaded=False)
    return path


def fetch_exported(name: str) -> Path:
    """The local copy of an exported folder (``python -m abswin.export --push-to-hub OWNER/NAME``) on the
    Hugging Face hub, ``name`` = ``OWNER/NAME`` or ``OWNER/NAME@REVISION`` (a commit, branch or tag;
    default the newest on ``main``). Through ``snapshot_download``: online it asks the hub for the
    revision's commit and downloads what the cache lacks; offline (``HF_HUB_OFFLINE=1``) it reads the
    cache. The folder is ``.../snapshots/<commit>``: the commit that was used (logged by the entry
    points). Failures are one line (:class:`PretrainedError`)."""
    repo_id, _, revision = name.partition("@")
    by_hand = f"download it where the hub is reachable (hf download {repo_id} --local-dir DIR) and pass pretrained=DIR"
    if repo_id.count("/") != 1 or not all(repo_id.split("/")) or "@" in revision:
        raise PretrainedError(f"{HUB_PREFIX}{name}: a Hugging Face model repository is {HUB_PREFIX}OWNER/NAME "
                              f"or {HUB_PREFIX}OWNER/NAME@REVISION")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise PretrainedError(f"{HUB_PREFIX}{repo_id} needs huggingface_hub (pip install huggingface_hub): "
                              f"{by_hand}") from None
    try:
        folder = Path(snapshot_download(repo_id, revision=revision or None, allow_patterns=list(EXPORTED_FILES)))
    except Exception as e:  # offline and not cached, unreachable, unknown or private repository
        raise PretrainedError(f"cannot fetch {HUB_PREFIX}{name} from the Hugging Face hub ({_hub_reason(e)}): "
                              f"{by_hand}") from None
    missing = [name for name in EXPORTED_FILES[:2] if not (folder / name).is_file()]
    if missing:
        raise PretrainedError(f"{HUB_PREFIX}{name} has no {' or '.join(missing)}: not a folder of python -m abswin.export")
    return folder


def local_path(value: str) -> Path:
    """What ``pretrained=value`` names, on this machine: a published name's file (fetched once), an
    exported folder on the hub (``hf-hub:OWNER/NAME``, fetched once), or the file or folder itself."""
    value = str(value)
    if value.startswith(HUB_PREFIX):
        return fetch_exported(value[len(HUB_PREFIX):])
    weights = lookup(value)
    return fetch_pretrained(weights.name) if weights is not None else Path(value)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(weights: PretrainedWeights, path: Path, downloaded: bool) -> None:
    """Check the file against the entry's digest, the Hugging Face blob's, or the one pinned at its
    first use (which it pins when there is none). A fresh download that fails is deleted."""
    actual = sha256_of(path)
    blob = Path(os.path.realpath(path)).name
    pin = path.with_name(path.name + ".sha256")
    if weights.sha256:
        expected, whose = weights.sha256, "the table's"
    elif re.fullmatch(r"[0-9a-f]{64}", blob):
        expected, whose = blob, "the Hugging Face hub's"
    elif pin.is_file():
        expected, whose = pin.read_text().strip(), f"the one pinned at its first use ({pin})"
    else:
        try:
            tmp = pin.with_name(f"{pin.name}.{os.getpid()}.tmp")
            tmp.write_text(actual + "\n")
            tmp.replace(pin)
        except OSError:  # a read-only cache (shared, prepared by hand): nothing to pin against
            pass
        return
    if actual != expected:
        if downloaded:
            path.unlink()
        what = "deleted: the download was damaged or is not the published file" if downloaded else \
            "not used: delete it to download it again"
        raise PretrainedError(f"{path} has SHA-256 {actual[:16]}..., not {whose} {expected[:16]}... for "
                              f"{weights.name}: {what}")
