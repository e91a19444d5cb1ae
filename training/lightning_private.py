"""Every use of Lightning's private API, in one place.

Lightning promises nothing about names with a leading underscore, nor about the attributes of its
private classes (the loops, ``_FitLoop`` and ``_TrainingEpochLoop``, are private since 2.0). Each
entry below is used because no public way does the same; each says why, and
``tests/test_lightning_private.py`` checks every one of them (it exists, its signature, and what it
does) so that a Lightning upgrade that changes one fails there, naming the symbol, instead of
somewhere in a training run. ``pyproject.toml`` bounds Lightning to the releases checked.

The data modules keep their one accessor of this kind (``datamodules.datamodule.batches_done``):
data code does not import ``training``.
"""

from __future__ import annotations

import importlib
from typing import Any, Sequence

import lightning

__all__ = [
    "LauncherChoice",
    "SubprocessScriptLauncher",
    "accumulating",
    "close_progress_bars",
    "default_rank_command",
    "save_checkpoint_now",
    "setup_train_data",
]


def _private(module: str, name: str) -> Any:
    """``module.name``, or an ImportError that names the Lightning release and the symbol."""
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        raise ImportError(f"Lightning {lightning.__version__} has no {module}.{name}: training/lightning_private.py "
                          f"must be updated for this release (tests/test_lightning_private.py)") from None


# ---------------------------------------------------------------------------------------- DDP launch
# Why: Lightning's launcher for `trainer=ddp` without torchrun/SLURM starts the ranks > 0 by re-running
# sys.argv. Our JobLauncher (training/ddp.py) starts them with the current job's own command instead
# (a `-m` sweep would otherwise re-run the whole sweep on every rank). No public launcher class or
# strategy argument lets a launcher be replaced, so we subclass the private one and swap it in.

#: Lightning's ``_SubprocessScriptLauncher`` (``lightning.pytorch.strategies.launchers.subprocess_script``):
#: the base of :class:`training.ddp.JobLauncher`. Used: ``__init__(cluster_environment, num_processes,
#: num_nodes)``, ``launch(function, *args, trainer=None, **kwargs)``, the attributes
#: ``cluster_environment``, ``num_processes``, ``num_nodes``, ``procs``.
SubprocessScriptLauncher = _private("lightning.pytorch.strategies.launchers.subprocess_script",
                                    "_SubprocessScriptLauncher")


_basic_subprocess_cmd = _private("lightning.fabric.strategies.launchers.subprocess_script", "_basic_subprocess_cmd")


def default_rank_command() -> Sequence[str]:
    """The command Lightning's own launcher runs for the ranks > 0 (this process's ``sys.argv``
    under the same interpreter). Private: ``lightning.fabric.strategies.launchers.subprocess_script.
    _basic_subprocess_cmd``; a copy of its rules (``-m`` module vs script) would drift silently."""
    return _basic_subprocess_cmd()


class LauncherChoice:
    """Mixin for a Lightning strategy: :meth:`choose_launcher` sees the launcher Lightning picked
    and returns the one to use. Private: ``Strategy._configure_launcher()`` (called by the Trainer
    when it sets up the strategy) and ``Strategy._launcher``; the public ``Strategy.launcher`` is
    read-only and no Trainer or strategy argument takes a launcher."""

    def _configure_launcher(self) -> None:
        super()._configure_launcher()
        self._launcher = self.choose_launcher(self._launcher)

    def choose_launcher(self, launcher: Any) -> Any:
        return launcher


# ---------------------------------------------------------------------------------------- the fit loop
def accumulating(trainer) -> bool:
    """True when the batch just trained only accumulated its gradient (no optimizer step after it),
    as Lightning decides it: every ``accumulate_grad_batches`` batches and on the last batch of an
    epoch, unless the strategy accumulates itself. Private: ``trainer.fit_loop._should_accumulate()``.
    There is no public equivalent; recomputing the rule from public pieces would drift silently if
    Lightning changed it (as it did for the final batch)."""
    return bool(trainer.fit_loop._should_accumulate())


def setup_train_data(trainer) -> None:
    """Load the training data now (what Lightning does at the start of the fit loop), so that
    ``trainer.num_training_batches`` is known in ``configure_optimizers``. Private:
    ``trainer.fit_loop.setup_data()`` (a method of the private ``_FitLoop``). The public
    ``trainer.estimated_stepping_batches`` calls it too, but not when ``max_steps`` ends the run
    (``max_epochs=-1``), which is when the steps per epoch are still needed for ``warmup_epochs``."""
    trainer.fit_loop.setup_data()


# ---------------------------------------------------------------------------------------- checkpoints
def save_checkpoint_now(callback, trainer) -> None:
    """Have a ``ModelCheckpoint`` save now as its own interval would: its file name and top-k
    bookkeeping (``best_model_path``, the file it replaces), and nothing when it already saved at
    this step, in a sanity check or outside ``fit``. Private: ``ModelCheckpoint.
    _should_skip_saving_checkpoint``, ``_monitor_candidates`` and ``_save_topk_checkpoint``. Public
    ``ModelCheckpoint`` saves only on its interval and, with ``save_last``, a separate last file;
    ``trainer.save_checkpoint`` alone would skip the callback's bookkeeping."""
    if callback._should_skip_saving_checkpoint(trainer):
        return
    callback._save_topk_checkpoint(trainer, callback._monitor_candidates(trainer))


# ---------------------------------------------------------------------------------------- progress bars
_BARS = ("train_progress_bar", "val_progress_bar", "test_progress_bar", "predict_progress_bar")


def close_progress_bars(trainer) -> None:
    """Close the tqdm bars of the trainer's :class:`~lightning.pytorch.callbacks.TQDMProgressBar`
    (after an error; else they redraw at exit, after the one-line message). Lightning closes them
    only when a stage ends normally. Public properties (``train_progress_bar``, ...), but one
    undocumented behaviour: a bar not created yet raises TypeError instead of returning None."""
    from lightning.pytorch.callbacks import TQDMProgressBar

    progress = trainer.progress_bar_callback
    if not isinstance(progress, TQDMProgressBar):
        return
    for name in _BARS:
        try:
            bar = getattr(progress, name)
        except TypeError:  # not created (yet)
            continue
        if bar is not None:
            bar.close()

