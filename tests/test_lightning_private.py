"""Every use of Lightning's private API still works: one test per entry of
``training/lightning_private.py`` (and the data modules' ``batches_done``). Each checks that the
symbol exists, its signature, and what it does, and fails naming the Lightning release and the
symbol: after a Lightning upgrade, this file says what to update."""

from __future__ import annotations

import importlib
import inspect
import sys

import lightning
import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

VERSION = lightning.__version__


def broken(symbol: str, what: str, where: str = "training/lightning_private.py") -> None:
    pytest.fail(f"Lightning {VERSION}: {symbol} {what}; update {where} (or the Lightning bound in pyproject.toml)",
                pytrace=False)


def private(module: str, name: str):
    """``module.name`` (a dotted attribute path), or a failure naming it."""
    try:
        obj = importlib.import_module(module)
    except ImportError:
        broken(module, "cannot be imported")
    for part in name.split("."):
        if not hasattr(obj, part):
            broken(f"{module}.{name}", "no longer exists")
        obj = getattr(obj, part)
    return obj


def parameters(symbol: str, fn, expected: list[str]) -> None:
    got = [n for n in inspect.signature(fn).parameters if n != "self"]
    if got != expected:
        broken(symbol, f"takes ({', '.join(got)}) instead of ({', '.join(expected)})")


def expect(ok: bool, symbol: str, what: str, where: str = "training/lightning_private.py") -> None:
    if not ok:
        broken(symbol, what, where)


# ---------------------------------------------------------------------------------------- a tiny fit
class Linear(pl.LightningModule):
    """One linear layer on 6 samples in batches of 2: 3 batches an epoch."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        return DataLoader(TensorDataset(torch.randn(6, 4, generator=g), torch.randn(6, 1, generator=g)), batch_size=2)


def fit(tmp_path, module=None, ckpt_path=None, **kw) -> pl.Trainer:
    args = dict(accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    args.update(kw)
    trainer = pl.Trainer(**args)
    trainer.fit(module or Linear(), ckpt_path=ckpt_path)
    return trainer


class AtBatchEnd(pl.Callback):
    def __init__(self, fn):
        self.fn, self.seen = fn, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seen.append(self.fn(trainer))


# ---------------------------------------------------------------------------------------- DDP launch
def test_subprocess_script_launcher():
    symbol = "lightning.pytorch.strategies.launchers.subprocess_script._SubprocessScriptLauncher"
    cls = private("lightning.pytorch.strategies.launchers.subprocess_script", "_SubprocessScriptLauncher")
    parameters(f"{symbol}.__init__", cls.__init__, ["cluster_environment", "num_processes", "num_nodes"])
    parameters(f"{symbol}.launch", cls.launch, ["function", "args", "trainer", "kwargs"])
    from lightning.fabric.plugins.environments import LightningEnvironment

    launcher = cls(LightningEnvironment(), 2, 1)
    for name, value in (("num_processes", 2), ("num_nodes", 1), ("procs", [])):
        expect(getattr(launcher, name, None) == value, f"{symbol}.{name}", f"is not {value!r} after __init__")
    expect(isinstance(launcher.cluster_environment, LightningEnvironment), f"{symbol}.cluster_environment",
           "is not the environment given")

    from training.lightning_private import SubprocessScriptLauncher

    assert SubprocessScriptLauncher is cls


def test_basic_subprocess_cmd():
    symbol = "lightning.fabric.strategies.launchers.subprocess_script._basic_subprocess_cmd"
    fn = private("lightning.fabric.strategies.launchers.subprocess_script", "_basic_subprocess_cmd")
    parameters(symbol, fn, [])
    from training.lightning_private import default_rank_command

    command = list(default_rank_command())
    args = sys.argv[1:]
    expect(command[0] == sys.executable and command[len(command) - len(args):] == args, symbol,
           f"no longer re-runs this process's command ({command}, argv {sys.argv})")


def test_configure_launcher_and_launcher_attribute(monkeypatch):
    symbol = "lightning.pytorch.strategies.DDPStrategy._configure_launcher"
    parameters(symbol, private("lightning.pytorch.strategies", "DDPStrategy._configure_launcher"), [])
    from training.ddp import DDPStrategy, JobLauncher

    for var in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "GROUP_RANK", "SLURM_NTASKS", "SLURM_JOB_NAME"):
        monkeypatch.delenv(var, raising=False)
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy=DDPStrategy(timeout_s=10), logger=False,
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    launcher = trainer.strategy.launcher
    expect(isinstance(launcher, JobLauncher), f"{symbol} / Strategy._launcher",
           f"no longer lets the strategy replace its launcher (got {type(launcher).__name__})")
    expect(launcher.num_processes == 2 and launcher.strategy is trainer.strategy, symbol,
           "configures the launcher for another number of processes")


# ---------------------------------------------------------------------------------------- the fit loop
def test_should_accumulate(tmp_path):
    """3 batches, accumulating 2: the first only accumulates, the second steps, the last (final) steps."""
    symbol = "lightning.pytorch.loops.training_epoch_loop._TrainingEpochLoop._should_accumulate"
    parameters(symbol, private("lightning.pytorch.loops.training_epoch_loop", "_TrainingEpochLoop._should_accumulate"), [])
    from training.lightning_private import accumulating

    record = AtBatchEnd(lambda t: (accumulating(t), t.global_step))
    fit(tmp_path, accumulate_grad_batches=2, callbacks=[record])
    expect(record.seen == [(True, 0), (False, 1), (False, 2)], symbol,
           f"no longer says which batches end with an optimizer step ((accumulating, global_step): {record.seen})")


def test_fit_loop_setup_data(tmp_path):
    """A max_steps run (max_epochs=-1): the training data is not loaded in configure_optimizers,
    and setup_train_data loads it there (the steps per epoch for warmup_epochs)."""
    symbol = "lightning.pytorch.loops.fit_loop._FitLoop.setup_data"
    parameters(symbol, private("lightning.pytorch.loops.fit_loop", "_FitLoop.setup_data"), [])
    from training.lightning_private import setup_train_data

    seen = {}

    class Module(Linear):
        def configure_optimizers(self):
            seen["before"] = self.trainer.train_dataloader is None
            setup_train_data(self.trainer)
            seen["batches"] = self.trainer.num_training_batches
            return super().configure_optimizers()

    trainer = fit(tmp_path, Module(), max_epochs=None, max_steps=4)
    expect(seen["before"], symbol, "is no longer needed (the data is loaded before configure_optimizers)")
    expect(seen["batches"] == 3, symbol, f"no longer tells num_training_batches (got {seen['batches']})")
    expect(trainer.global_step == 4, symbol, "loading the data early breaks the fit")


def test_batch_progress_processed(tmp_path):
    """datamodules.datamodule.batches_done: the batches done in this epoch, the one being finished
    included; continued after a mid-epoch resume (what makes the data resume exact)."""
    symbol = "trainer.fit_loop.epoch_loop.batch_progress.current.processed"
    private("lightning.pytorch.loops.progress", "_BatchProgress")
    from lightning.pytorch.callbacks import ModelCheckpoint

    from datamodules.datamodule import batches_done

    record = AtBatchEnd(batches_done)
    saver = ModelCheckpoint(dirpath=tmp_path, filename="{step}", every_n_train_steps=2, save_top_k=-1)
    fit(tmp_path, max_epochs=2, callbacks=[record, saver], enable_checkpointing=True)
    where = "datamodules/datamodule.py (batches_done)"
    expect(record.seen == [1, 2, 3, 1, 2, 3], symbol, f"no longer counts an epoch's batches ({record.seen})", where)

    resumed = AtBatchEnd(batches_done)
    fit(tmp_path, max_epochs=2, callbacks=[resumed], ckpt_path=str(tmp_path / "step=2.ckpt"))
    expect(resumed.seen == [3, 1, 2, 3], symbol, f"does not continue after a mid-epoch resume ({resumed.seen})", where)


# ---------------------------------------------------------------------------------------- checkpoints
def test_model_checkpoint_save_now(tmp_path):
    """RunCheckpoint writes the final state at the end of a step-interval run, with the callback's
    own bookkeeping, and never twice at one step."""
    base = "lightning.pytorch.callbacks.ModelCheckpoint"
    parameters(f"{base}._should_skip_saving_checkpoint", private("lightning.pytorch.callbacks",
               "ModelCheckpoint._should_skip_saving_checkpoint"), ["trainer"])
    parameters(f"{base}._monitor_candidates", private("lightning.pytorch.callbacks",
               "ModelCheckpoint._monitor_candidates"), ["trainer"])
    parameters(f"{base}._save_topk_checkpoint", private("lightning.pytorch.callbacks",
               "ModelCheckpoint._save_topk_checkpoint"), ["trainer", "monitor_candidates"])
    from training import RunCheckpoint
    from training.lightning_private import save_checkpoint_now

    saves = []

    class Count(pl.Callback):
        def on_save_checkpoint(self, trainer, pl_module, checkpoint):
            saves.append(trainer.global_step)

    last = RunCheckpoint(dirpath=tmp_path, filename="last", monitor=None, save_top_k=1, every_n_train_steps=2,
                         enable_version_counter=False)
    trainer = fit(tmp_path, callbacks=[last, Count()], enable_checkpointing=True)  # 3 steps
    symbol = f"{base}._save_topk_checkpoint / _monitor_candidates"
    expect(saves == [2, 3], symbol, f"did not save the final step once (saves at steps {saves})")
    expect(torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == 3, symbol,
           "wrote another file than the callback's own")
    expect(last.best_model_path == str(tmp_path / "last.ckpt"), symbol, "skipped the callback's bookkeeping")
    save_checkpoint_now(last, trainer)
    expect(saves == [2, 3], f"{base}._should_skip_saving_checkpoint", "no longer refuses a second save at one step")


# ---------------------------------------------------------------------------------------- progress bars
def test_tqdm_progress_bars_close(tmp_path):
    from lightning.pytorch.callbacks import TQDMProgressBar

    from training.lightning_private import close_progress_bars

    symbol = "lightning.pytorch.callbacks.TQDMProgressBar.train_progress_bar"
    fresh = TQDMProgressBar()
    for name in ("train_progress_bar", "val_progress_bar", "test_progress_bar", "predict_progress_bar"):
        expect(isinstance(inspect.getattr_static(TQDMProgressBar, name, None), property),
               f"lightning.pytorch.callbacks.TQDMProgressBar.{name}", "is no longer a property")
        try:
            getattr(fresh, name)
        except TypeError:
            pass
        else:
            broken(f"lightning.pytorch.callbacks.TQDMProgressBar.{name}", "no longer raises TypeError while unset")

    class Stop(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            raise RuntimeError("stop mid-epoch")

    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,  # tqdm's bar even
                         enable_model_summary=False, default_root_dir=tmp_path, callbacks=[Stop(), TQDMProgressBar()])  # with rich
    with pytest.raises(RuntimeError, match="stop mid-epoch"):
        trainer.fit(Linear())
    bar = trainer.progress_bar_callback.train_progress_bar
    expect(not bar.disable, symbol, "is closed after an error already (close_progress_bars is not needed)")
    close_progress_bars(trainer)
    expect(bar.disable, symbol, "was not closed by close_progress_bars")
    close_progress_bars(trainer)  # twice: nothing happens
    close_progress_bars(pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False))
