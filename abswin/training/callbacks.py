"""Callbacks that watch the position embedding and MAE reconstructions during training.

They need only ``pl_module.model`` (a :class:`~abswin.Hiera` or MAE model). Pictures go to
every :class:`~lightning.pytorch.loggers.WandbLogger` of the trainer and are always saved as
PNG under ``<default_root_dir>/plots/`` (CSV users get them too). Only global rank 0 makes
them, so nothing here may call a collective (``trainer.log_dir`` is one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.utils import make_grid

from ..batch import Batch
from ..models import pos_embed as pe

__all__ = [
    "WindowSimilarityLogger",
    "PosEmbedImageLogger",
    "MAEReconstructionLogger",
    "spatial_window_similarity",
    "log_and_save_image",
]


def _model(pl_module: pl.LightningModule) -> torch.nn.Module:
    return pl_module.model


def spatial_window_similarity(model) -> float:
    """The paper's window similarity (Fig. 4) of the model's spatial position embedding
    (composed for abs-win; for video without the temporal part)."""
    grid = list(model.tokens_spatial_shape[-2:])
    with torch.no_grad():
        pos = model.get_pos_embed(grid)  # 2-d shape: the spatial embedding only, [1, H*W, C]
    return pe.window_similarity(pos, window=model.mask_unit_size[-2:], grid=grid)


def _plots_dir(trainer: pl.Trainer) -> Path:
    """``<default_root_dir>/plots`` (the run directory). Not ``trainer.log_dir``: that is a
    broadcast to every rank, and the pictures are made on rank 0 alone."""
    return Path(trainer.default_root_dir) / "plots"


def log_and_save_image(trainer: pl.Trainer, key: str, image: torch.Tensor, caption: str | None = None) -> Path:
    """Log a ``[3, H, W]`` uint8 image to every WandbLogger and save it as PNG (global rank 0)."""
    from lightning.pytorch.loggers import WandbLogger

    image = image.detach().cpu()
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            kw = {"caption": [caption]} if caption else {}
            logger.log_image(key=key, images=[image.permute(1, 2, 0).numpy()], step=trainer.global_step, **kw)
    path = _plots_dir(trainer) / f"{key.replace('/', '_')}_epoch{trainer.current_epoch:04d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)
    return path


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def _normalise_each(x: torch.Tensor) -> torch.Tensor:
    """Min-max scale each ``[h, w]`` map of ``[N, h, w]`` to [0, 1]."""
    flat = x.flatten(1)
    lo, hi = flat.min(1, keepdim=True)[0], flat.max(1, keepdim=True)[0]
    return ((flat - lo) / (hi - lo).clamp_min(1e-12)).view_as(x)


class _EveryNEpochs(pl.Callback):
    def __init__(self, every_n_epochs: int = 1):
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        self.every_n_epochs = every_n_epochs

    def _due(self, trainer: pl.Trainer) -> bool:
        return (trainer.current_epoch + 1) % self.every_n_epochs == 0 and not trainer.sanity_checking


class WindowSimilarityLogger(pl.Callback):
    """Logs ``pos_embed/window_similarity`` at the end of every training epoch (and at the
    start of training, for the curve's first point, when ``log_at_start``)."""

    def __init__(self, log_at_start: bool = True):
        self.log_at_start = log_at_start

    def on_train_start(self, trainer, pl_module) -> None:
        if self.log_at_start:
            try:
                value = spatial_window_similarity(_model(pl_module))
            except ValueError:  # grid of fewer than two windows
                return
            for logger in trainer.loggers:
                logger.log_metrics({"pos_embed/window_similarity": value}, step=trainer.global_step)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        try:
            value = spatial_window_similarity(_model(pl_module))
        except ValueError:  # grid of fewer than two windows
            return
        # the same value on every rank: sync_dist only keeps Lightning from warning
        pl_module.log("pos_embed/window_similarity", value, on_step=False, on_epoch=True, sync_dist=True)


class PosEmbedImageLogger(_EveryNEpochs):
    """Every ``every_n_epochs`` epochs, a picture of the first ``num_channels`` channels of the
    spatial position embedding at the model's token grid (each channel min-max scaled).
    Rows: the composed embedding, and for abs-win also its tiled window part and its
    interpolated global part. Tiles are enlarged ``scale`` times (nearest)."""

    def __init__(self, every_n_epochs: int = 1, num_channels: int = 8, scale: int = 4):
        super().__init__(every_n_epochs)
        self.num_channels = num_channels
        self.scale = scale

    @torch.no_grad()
    def make_image(self, model) -> torch.Tensor:
        grid = list(model.tokens_spatial_shape[-2:])
        h, w = grid
        rows = [model.get_pos_embed(grid)[0].T.reshape(-1, h, w)]
        if model.pos_embed_mode == "abswin":
            if model.pos_embed_window is not None:
                rows.append(pe.tile_window(model.pos_embed_window, grid)[0])
            if model.pos_embed_global is not None:
                rows.append(pe.resize_global(model.pos_embed_global, grid, model.global_pos_antialias)[0])
        n = min(self.num_channels, rows[0].shape[0])
        tiles = torch.cat([_normalise_each(r[:n].float()) for r in rows])[:, None]  # [rows*n, 1, h, w]
        if self.scale > 1:
            tiles = F.interpolate(tiles, scale_factor=self.scale, mode="nearest")
        image = make_grid(tiles.cpu(), nrow=n, padding=2, pad_value=1.0)
        return _to_uint8(image)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not self._due(trainer) or not trainer.is_global_zero:
            return
        model = _model(pl_module)
        parts = "composed, window, global" if model.pos_embed_mode == "abswin" else "absolute"
        log_and_save_image(trainer, "pos_embed/channels", self.make_image(model),
                           caption=f"epoch {trainer.current_epoch}: {parts}")


class MAEReconstructionLogger(_EveryNEpochs):
    """Every ``every_n_epochs`` epochs, original | masked | reconstruction (visible patches
    pasted in) for a fixed batch of ``num_images`` from the val loader (else the train loader),
    with a fixed mask. The per-patch normalised prediction (``norm_pix_loss``) is mapped back
    with the original patch's mean and variance; images are un-normalised with ``mean``/``std``.
    Video: the same for the middle frame of each clip (of the frames the MAE target uses)."""

    def __init__(
        self,
        every_n_epochs: int = 1,
        num_images: int = 4,
        mask_ratio: float | None = None,
        seed: int = 0,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
    ):
        super().__init__(every_n_epochs)
        self.num_images = num_images
        self.mask_ratio = mask_ratio
        self.seed = seed
        self.mean = list(mean)
        self.std = list(std)
        self._batch: torch.Tensor | None = None

    def _fixed_batch(self, trainer) -> torch.Tensor | None:
        if self._batch is None:
            for loaders in (trainer.val_dataloaders, trainer.train_dataloader):
                images = _first_images(loaders, self.num_images)
                if images is not None:
                    self._batch = images
                    break
        return self._batch

    @torch.no_grad()
    def make_image(self, model, images: torch.Tensor, mask_ratio: float) -> torch.Tensor:
        x = images.to(next(model.parameters()).device, next(model.parameters()).dtype)
        g = torch.Generator(device=x.device).manual_seed(self.seed)
        latent, mask = model.forward_encoder(x, mask_ratio, model.get_random_mask(x, mask_ratio, generator=g))
        pred, kept = model.forward_decoder(latent, mask)  # [B, L, C*p*p], [B, L] True = visible
        patches = model.patchify(x).float()
        pred = model.denormalize_pred(pred.float(), patches)
        keep = kept[..., None].float()
        recon = patches * keep + pred * (1 - keep)
        masked = patches * keep

        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        cols = [_picture(model, t) * std + mean for t in (patches, masked, recon)]
        visible = _picture(model, keep.expand_as(patches))
        cols[1] = cols[1] * visible + 0.5 * (1 - visible)
        tiles = torch.stack(cols, dim=1).flatten(0, 1)  # per image: original, masked, recon
        return _to_uint8(make_grid(tiles.cpu(), nrow=3, padding=2, pad_value=1.0))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not self._due(trainer) or not trainer.is_global_zero:
            return
        model = _model(pl_module)
        images = self._fixed_batch(trainer)
        if images is None or images.dim() not in (4, 5) or not hasattr(model, "forward_decoder"):
            return
        ratio = self.mask_ratio if self.mask_ratio is not None else pl_module.hparams.get("mask_ratio", 0.6)
        was_training = model.training
        model.eval()
        try:
            image = self.make_image(model, images, ratio)
        finally:
            model.train(was_training)
        log_and_save_image(trainer, "mae/reconstruction", image,
                           caption=f"epoch {trainer.current_epoch}: original | masked | reconstruction")


def _picture(model, patches: torch.Tensor) -> torch.Tensor:
    """MAE patches back to ``[B, C, H, W]``; for video the middle one of the target's frames."""
    x = model.unpatchify(patches)
    return x[:, :, x.shape[2] // 2] if x.dim() == 5 else x


def _first_images(loaders, n: int) -> torch.Tensor | None:
    """The first ``n`` images (or clips: of a video, its first clip or view) of a loader (or of the
    first loader of a list / dict), read from a map-style dataset through the loader's collate when
    possible (no worker start-up)."""
    if loaders is None:
        return None
    if isinstance(loaders, dict):
        loaders = next(iter(loaders.values()), None)
    elif isinstance(loaders, (list, tuple)):
        loaders = loaders[0] if loaders else None
    if loaders is None:
        return None
    dataset = getattr(loaders, "dataset", None)
    batch = None
    try:
        if dataset is not None and hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__"):
            batch = loaders.collate_fn([dataset[i] for i in range(min(n, len(dataset)))])
    except Exception:
        pass
    if not isinstance(batch, Batch) or batch.num_samples == 0:
        batch = next(iter(loaders))
    images = batch.views[:, 0] if batch.views is not None else batch.images[::batch.clips_per_sample]
    return images[:n].cpu()
