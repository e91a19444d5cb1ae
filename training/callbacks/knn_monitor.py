"""A k-NN monitor for MAE pretraining: is the encoder learning features worth having?

MAE's loss says little about its features. Every ``every_n_epochs`` epochs this embeds a fixed,
seeded subset of the training split and of the validation split (evaluation transform, the
encoder's mean-pooled last stage, L2-normalised) and classifies each validation sample by its
``k`` nearest training samples, each voting with ``exp(cosine / temperature)`` (DINO's weighted
k-NN: k=20, temperature 0.07). Logged: ``knn/top1``, ``knn/samples`` (validation samples
classified, all ranks), ``knn/seconds`` and ``knn/cost`` (its share of the measured epoch's
time; divide by ``every_n_epochs`` for the run's), and the curve's first point before training.

Under DDP each rank embeds its share of the subsets (no sample twice, none padded) and the
features are gathered, so every rank computes the same number. Needs labelled splits (image
folders, the demo sets, Kinetics CSVs): without a validation split it logs one line and stays
off. Video: the first evaluation view of each video. Turned off with
``callbacks.knn_monitor.enabled=false``. The two splits are listed once per run.
"""

from __future__ import annotations

import logging
import time

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

__all__ = ["KNNMonitor", "knn_top1"]

log = logging.getLogger("abswin")


def knn_top1(train_features: torch.Tensor, train_labels: torch.Tensor, val_features: torch.Tensor,
             val_labels: torch.Tensor, k: int, temperature: float, num_classes: int, chunk: int = 1024) -> float:
    """Top-1 of the weighted k-NN classifier on L2-normalised features (DINO's ``knn_classifier``)."""
    k = min(k, train_features.shape[0])
    correct = 0
    for start in range(0, val_features.shape[0], chunk):
        similarity = val_features[start:start + chunk] @ train_features.T
        weights, neighbours = similarity.topk(k, dim=1)
        votes = torch.zeros(similarity.shape[0], num_classes, device=similarity.device)
        votes.scatter_add_(1, train_labels[neighbours], (weights / temperature).exp())
        correct += int((votes.argmax(1) == val_labels[start:start + chunk]).sum())
    return correct / max(1, val_features.shape[0])


class KNNMonitor(pl.Callback):
    """See the module docstring. ``train_samples`` / ``val_samples``: the subset sizes (the whole
    split when smaller); ``batch_size``: per forward; ``seed``: which samples."""

    def __init__(self, enabled: bool = True, every_n_epochs: int = 1, train_samples: int = 10000,
                 val_samples: int = 5000, k: int = 20, temperature: float = 0.07, batch_size: int = 64,
                 seed: int = 0):
        for name, value in (("every_n_epochs", every_n_epochs), ("train_samples", train_samples),
                            ("val_samples", val_samples), ("k", k), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 1:
                raise ValueError(f"callbacks.knn_monitor.{name}={value} must be a whole number >= 1")
        if not float(temperature) > 0:
            raise ValueError(f"callbacks.knn_monitor.temperature={temperature} must be > 0")
        self.enabled = bool(enabled)
        self.every_n_epochs, self.k, self.temperature = int(every_n_epochs), int(k), float(temperature)
        self.samples = {"train": int(train_samples), "val": int(val_samples)}
        self.batch_size, self.seed = int(batch_size), int(seed)
        self._epoch_start = None
        self._warned = False
        self._sets: dict | None = None  # the two evaluation sets and this rank's indices, built once

    def on_train_start(self, trainer, pl_module) -> None:
        """The curve's first point: the features before any training step (not on a resume)."""
        if self.enabled and trainer.global_step == 0:
            values = self._measure(trainer, pl_module)
            for logger in trainer.loggers if values else ():
                logger.log_metrics({k: v for k, v in values.items() if k != "knn/cost"}, step=0)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not self.enabled or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        values = self._measure(trainer, pl_module)
        for name, value in (values or {}).items():  # the same on every rank: sync_dist only keeps Lightning quiet
            pl_module.log(name, value, on_step=False, on_epoch=True, sync_dist=True)

    def _measure(self, trainer, pl_module) -> dict[str, float] | None:
        """The k-NN numbers now, or None (and one warning) without labelled train and val splits."""
        datamodule = getattr(trainer, "datamodule", None)
        if self._sets is None:  # listing a split (1.28M files on ImageNet) once per run, not per measurement
            self._sets = {split: datamodule.evaluation_set(split) if hasattr(datamodule, "evaluation_set") else None
                          for split in ("train", "val")}
        sets = self._sets
        if sets["train"] is None or sets["val"] is None:
            if not self._warned:
                log.warning("k-NN monitor off: it needs labelled train and val splits (this data module has %s)",
                            ", ".join(s for s, d in sets.items() if d is not None) or "neither")
                self._warned = True
            return None
        started = time.perf_counter()
        features = {split: self._embed(trainer, pl_module, datamodule, split, dataset) for split, dataset in sets.items()}
        (train_f, train_y), (val_f, val_y) = features["train"], features["val"]
        top1 = knn_top1(train_f, train_y, val_f, val_y, self.k, self.temperature, datamodule.num_classes)
        seconds = time.perf_counter() - started
        epoch = started - self._epoch_start if self._epoch_start is not None else float("nan")
        return {"knn/top1": top1, "knn/samples": float(val_f.shape[0]), "knn/seconds": seconds,
                "knn/cost": seconds / (epoch + seconds) if epoch == epoch else float("nan")}

    def _subset(self, dataset, split: str, world: int, rank: int) -> list[int]:
        """This rank's share of the split's fixed subset."""
        n = len(dataset)
        generator = torch.Generator().manual_seed(self.seed + (split == "val"))
        chosen = torch.randperm(n, generator=generator)[: min(n, self.samples[split])].sort().values
        return chosen[rank::world].tolist()

    @torch.no_grad()
    def _embed(self, trainer, pl_module, datamodule, split: str, dataset) -> tuple[torch.Tensor, torch.Tensor]:
        """L2-normalised features and labels of the split's subset, gathered from every rank."""
        indices = self._subset(dataset, split, trainer.world_size, trainer.global_rank)
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, indices), batch_size=self.batch_size,
                                             collate_fn=datamodule.collate_eval,
                                             num_workers=getattr(datamodule, "num_workers", 0),
                                             generator=torch.Generator().manual_seed(self.seed))  # not the global RNG
        model = pl_module.model
        was_training = model.training
        model.eval()
        feats, labels = [], []
        try:
            for batch in loader:
                batch = datamodule.model_input(pl_module.transfer_batch_to_device(batch, pl_module.device, 0))
                x = batch.views[:, 0] if batch.views is not None else batch.images
                if x.shape[0] == 0:
                    continue
                with trainer.strategy.precision_plugin.forward_context():
                    f = model.forward_features(x)
                feats.append(F.normalize(f.flatten(1, -2).mean(1).float(), dim=1))
                labels.append(batch.labels.to(pl_module.device))
        finally:
            model.train(was_training)
        dim = getattr(model, "num_features", None) or (feats[0].shape[1] if feats else 1)
        f = torch.cat(feats) if feats else torch.zeros(0, dim, device=pl_module.device)
        y = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long, device=pl_module.device)
        return _gather(pl_module, f), _gather(pl_module, y)


def _gather(pl_module, t: torch.Tensor) -> torch.Tensor:
    """Rows of every rank, in rank order (ranks may hold different numbers of rows)."""
    trainer = pl_module.trainer
    if trainer.world_size == 1:
        return t
    sizes = pl_module.all_gather(torch.tensor([t.shape[0]], device=t.device)).flatten().tolist()
    padded = torch.zeros((max(sizes), *t.shape[1:]), dtype=t.dtype, device=t.device)
    padded[: t.shape[0]] = t
    everything = pl_module.all_gather(padded)  # [world, max, ...]
    return torch.cat([everything[r, :n] for r, n in enumerate(sizes)])
