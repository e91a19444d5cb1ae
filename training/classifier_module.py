"""Supervised finetuning of Hiera as a LightningModule (paper, Appendix A, Table 13)."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torchmetrics.classification import MulticlassAccuracy
from torchvision.transforms import v2

from abswin.batch import Batch
from abswin.models import create_model
from .module_base import TrainingModule, resolve_lr

__all__ = ["ClassifierModule", "FinetuneModule", "MixupCutmix", "soft_target_cross_entropy"]


def soft_target_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.sum(-target * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


class MixupCutmix:
    """timm-style batch mixing with torchvision's :class:`~torchvision.transforms.v2.MixUp` /
    :class:`~torchvision.transforms.v2.CutMix`: per batch, CutMix with probability
    ``switch_prob`` when both are on, else the one that is on. Returns images and soft
    targets with label smoothing applied (``(1 - s) * mixed + s / num_classes``, which is
    timm's ``mixup_target``). Works for images ``[B, C, H, W]`` and video ``[B, C, T, H, W]``
    (the box is cut in H, W, the same in every frame). All randomness from the global RNG.
    """

    def __init__(self, mixup_alpha: float, cutmix_alpha: float, switch_prob: float, num_classes: int,
                 label_smoothing: float = 0.0):
        self.mixup = v2.MixUp(alpha=mixup_alpha, num_classes=num_classes) if mixup_alpha > 0 else None
        self.cutmix = v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes) if cutmix_alpha > 0 else None
        self.switch_prob = switch_prob
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing

    @property
    def enabled(self) -> bool:
        return self.mixup is not None or self.cutmix is not None

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mixup is not None and self.cutmix is not None:
            op = self.cutmix if float(torch.rand(())) < self.switch_prob else self.mixup
        else:
            op = self.mixup or self.cutmix
        shape = images.shape
        flat = images.reshape(shape[0], -1, *shape[-2:])  # video: fold T into channels
        flat, target = op(flat, labels)
        s = self.label_smoothing
        target = target * (1.0 - s) + s / self.num_classes
        return flat.reshape(shape), target


class ClassifierModule(TrainingModule):
    """What every classifier's module shares: the evaluation. ``self.model`` is a
    :class:`~abswin.Hiera` classifier; subclasses train it (:class:`FinetuneModule`: all of it;
    :class:`~training.probe_module.LinearProbeModule`: its head on a frozen encoder) and call
    :meth:`_add_metrics`. Evaluation is the same for both: image batches, and the video multi-view
    protocol, each sample counted once over all ranks."""

    def __init__(self) -> None:
        super().__init__()
        self.ema_model: torch.nn.Module | None = None  # FinetuneModule's EMA, evaluated beside the live model

    @staticmethod
    def _classifier(model_name: str, model_kwargs: dict, num_classes: int) -> torch.nn.Module:
        """The registry's classifier with ``num_classes`` outputs (``model_kwargs`` may not say otherwise)."""
        kwargs = dict(model_kwargs)
        if kwargs.setdefault("num_classes", num_classes) != num_classes:
            raise ValueError(f"model_kwargs num_classes={kwargs['num_classes']} != num_classes={num_classes}")
        return create_model(model_name, **kwargs)

    def _add_metrics(self, num_classes: int, stages: tuple[str, ...]) -> None:
        self._num_evaluated = 0  # this rank's evaluated samples in this eval epoch
        self._num_missing = 0  # this rank's unreadable samples in this eval epoch
        k5 = min(5, num_classes)
        for stage in stages:
            setattr(self, f"{stage}_acc1", MulticlassAccuracy(num_classes, top_k=1, average="micro"))
            setattr(self, f"{stage}_acc5", MulticlassAccuracy(num_classes, top_k=k5, average="micro"))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def _eval_step(self, batch: Batch, stage: str):
        """Images or clips: ``batch.images``. Video multi-view: ``batch.views [B, V, ...]``: the
        softmax averaged over the V views of each video is its prediction (the multi-view protocol).
        ``batch.missing`` (files that could not be decoded) are counted, never replaced. Each sample
        is evaluated on exactly one rank (the loaders shard without padding), so the summed metrics
        count every sample once."""
        labels = batch.labels
        self._num_missing += batch.missing.numel()
        if batch.num_samples == 0:
            return None
        self._num_evaluated += batch.num_samples
        loss = self._score(self.model, batch, stage)
        if stage == "val" and self.ema_model is not None:
            self._score(self.ema_model, batch, "val_ema")
        return loss

    def _score(self, model: torch.nn.Module, batch: Batch, stage: str) -> torch.Tensor:
        """``model``'s loss and accuracy on an evaluation batch, logged under ``stage/``."""
        labels = batch.labels
        if batch.views is not None:
            scores = self._multi_view_probs(model, batch.views)
            loss = F.nll_loss(scores.clamp_min(1e-12).log(), labels)
        else:
            scores = model(batch.images).float()
            loss = F.cross_entropy(scores, labels)
        acc1, acc5 = getattr(self, f"{stage}_acc1"), getattr(self, f"{stage}_acc5")
        acc1(scores, labels)
        acc5(scores, labels)
        bs = batch.num_samples
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=bs)
        self.log(f"{stage}/acc1", acc1, on_step=False, on_epoch=True, prog_bar=stage == "val", batch_size=bs)
        self.log(f"{stage}/acc5", acc5, on_step=False, on_epoch=True, batch_size=bs)
        return loss

    def _multi_view_probs(self, model: torch.nn.Module, views: torch.Tensor) -> torch.Tensor:
        """``[B, V, C, T, H, W]`` -> per-video class probabilities ``[B, classes]``: the mean of
        the V views' softmax, run ``eval_views_per_forward`` clips at a time."""
        B, V = views.shape[:2]
        flat = views.flatten(0, 1)
        chunk = self.hparams.eval_views_per_forward or flat.shape[0]
        probs = torch.cat([model(c).float().softmax(-1) for c in flat.split(chunk)])
        return probs.view(B, V, -1).mean(1)

    def _log_counts(self, stage: str) -> None:
        """Log the evaluated and missing counts summed over ranks (every rank calls this)."""
        counts = torch.tensor([self._num_evaluated, self._num_missing], dtype=torch.float64, device=self.device)
        num_samples, num_missing = (int(c) for c in self.trainer.strategy.reduce(counts, reduce_op="sum"))
        if self.trainer.sanity_checking:
            return
        if num_missing:
            rank_zero_warn(f"{stage}: {num_missing} video(s) or image(s) could not be decoded and are not in "
                           f"{stage}/acc1 ({num_samples} evaluated); see the log for their paths")
        self.log(f"{stage}/samples", float(num_samples), on_step=False, on_epoch=True)
        self.log(f"{stage}/missing", float(num_missing), on_step=False, on_epoch=True)

    def on_validation_epoch_start(self) -> None:
        self._num_evaluated = self._num_missing = 0

    def on_test_epoch_start(self) -> None:
        self._num_evaluated = self._num_missing = 0

    def on_validation_epoch_end(self) -> None:
        self._log_counts("val")

    def on_test_epoch_end(self) -> None:
        self._log_counts("test")

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0):
        return self._eval_step(batch, "val")

    def test_step(self, batch, batch_idx: int, dataloader_idx: int = 0):
        return self._eval_step(batch, "test")


class FinetuneModule(ClassifierModule):
    """Finetuning / supervised training. ``self.model`` is the :class:`~abswin.Hiera` classifier.

    Args:
        model_name: a classifier of the registry, e.g. ``"hiera_base_224"``.
        model_kwargs: overrides for :func:`abswin.create_model` (``head_dropout``,
            ``drop_path_rate``, ``img_size``, ``pos_embed``, ``grad_ckpt``, ...).
        num_classes: classifier outputs.
        lr, blr: exactly one; ``lr = blr * batch_size / 256`` for ``blr``.
        batch_size: the GLOBAL effective batch, for the ``blr`` scaling.
        weight_decay, layer_decay, betas: AdamW with layer-wise lr decay
            (:func:`abswin.optim.param_groups_lrd`).
        warmup_epochs (or ``warmup_steps``), min_lr: per-step warmup + cosine schedule.
        mixup, cutmix, mixup_switch_prob: batch mixing alphas; off when both are 0, and for
            batches of one sample.
        label_smoothing: applied to the (mixed) targets.
        compile: ``torch.compile`` the model (in place; checkpoint keys do not change).
        eval_views_per_forward: video evaluation runs the B x V views of a batch through the
            model this many clips at a time (None: all at once); lowers peak memory at 32x320.
        ema_decay: None (off), or keep an exponential moving average of the weights, updated after
            every optimizer step (``ema = decay * ema + (1 - decay) * weights``, buffers copied), as
            ``self.ema_model``: in the checkpoints beside the live model (exact resume restores it),
            evaluated beside it (``val_ema/...``), exported with ``python -m abswin.export --ema``.

    Video batches (``[B, C, T, H, W]`` clips) train exactly like images (mixup/cutmix cut the
    same box in every frame); evaluation takes the multi-view batches of
    :class:`~datamodules.VideoDataModule` and averages the softmax over each video's views.

    Logs ``train/loss``, ``val/loss`` (plain cross-entropy), ``val/acc1``, ``val/acc5``,
    ``val/samples`` (images or videos evaluated, all ranks) and ``val/missing`` (images or videos
    that could not be decoded: not in the accuracy); ``test/...`` likewise. The lr and throughput
    are the callbacks' (:mod:`training.callbacks`).
    """

    def __init__(
        self,
        model_name: str,
        model_kwargs: dict,
        num_classes: int,
        lr: float | None,
        blr: float | None,
        batch_size: int,
        weight_decay: float,
        layer_decay: float,
        betas: list[float],
        warmup_epochs: float,
        min_lr: float,
        mixup: float,
        cutmix: float,
        mixup_switch_prob: float,
        label_smoothing: float,
        eval_views_per_forward: int | None,
        ema_decay: float | None,
        warmup_steps: int | None = None,
        compile: bool = False,
    ):
        super().__init__()
        betas = list(betas)
        self.save_hyperparameters()
        self.lr, self._lr_from_blr = resolve_lr(lr, blr, batch_size)
        model = self._classifier(model_name, model_kwargs, num_classes)
        if ema_decay is not None:
            if isinstance(ema_decay, bool) or not 0.0 < float(ema_decay) < 1.0:
                raise ValueError(f"module.ema_decay={ema_decay} must be in (0, 1), e.g. 0.9999, or null for no EMA")
            self.ema_model = copy.deepcopy(model).requires_grad_(False).eval()
        self._set_model(model, compile)
        self.mix = MixupCutmix(mixup, cutmix, mixup_switch_prob, num_classes, label_smoothing)
        self._add_metrics(num_classes, ("val", "test", *(("val_ema",) if ema_decay is not None else ())))

    def training_step(self, batch: Batch, batch_idx: int):
        if batch.images.shape[0] == 0:  # every image of this batch was unreadable (skipped by the loader)
            return self._unreadable_batch(batch_idx)
        images, labels = batch.images, batch.labels
        if self.mix.enabled and images.shape[0] > 1:
            images, target = self.mix(images, labels)
            loss = soft_target_cross_entropy(self.model(images), target)
        else:
            loss = F.cross_entropy(self.model(images).float(), labels,
                                   label_smoothing=self.hparams.label_smoothing)
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=images.shape[0])
        return loss

    def pretrained_loaded(self) -> None:
        if self.ema_model is not None:  # the average starts from the loaded weights
            self.ema_model.load_state_dict(self.model.state_dict())

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        """Lightning's step, then the EMA update (once per optimizer step, after any accumulation)."""
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        if self.ema_model is not None:
            self._update_ema()

    @torch.no_grad()
    def _update_ema(self) -> None:
        if not hasattr(self, "_ema_pairs"):  # the same tensors every step: paired once
            ema = dict(self.ema_model.named_parameters())
            self._ema_pairs = [(ema[n], p) for n, p in self.model.named_parameters()]
        torch._foreach_lerp_([e for e, _ in self._ema_pairs], [p.detach() for _, p in self._ema_pairs],
                             1.0 - float(self.hparams.ema_decay))
        for (_, mine), (_, theirs) in zip(self.ema_model.named_buffers(), self.model.named_buffers()):
            mine.copy_(theirs)

    def on_fit_start(self) -> None:
        if self.ema_model is not None and any(p.dtype != torch.float32 for p in self.ema_model.parameters()):
            raise ValueError(f"module.ema_decay={self.hparams.ema_decay} needs float32 weights (an update of "
                             f"{1 - self.hparams.ema_decay:g} is below bf16's resolution): use "
                             f"trainer.precision=bf16-mixed, not {self.trainer.precision}")
