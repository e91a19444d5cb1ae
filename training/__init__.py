"""Lightning training: MAE pretraining, finetuning and linear-probe modules, callbacks, checkpoint IO, W&B.

Modules know models and batches (``(images, labels)``), never files or configs; every number
is a constructor argument, so Hydra can instantiate them with ``_target_``. What happens around
the steps is a callback (:mod:`training.callbacks`), selected in ``conf/callbacks/``.
"""

from . import callbacks
from .callbacks import *  # noqa: F403  what conf/callbacks/ targets
from .atomic_save import AtomicCheckpointIO
from .ddp import DDPStrategy, DistributedFailure
from .classifier_module import FinetuneModule
from .mae_module import MAEPretrainModule
from .probe_module import LinearProbeModule
from .schedule import WarmupCosine, build_lr_scheduler, schedule_steps
from .wandb_logger import (
    configure_wandb_env,
    get_or_create_run_id,
    make_wandb_logger,
    read_run_id,
    write_run_id,
)

__all__ = [
    *callbacks.__all__,
    "AtomicCheckpointIO",
    "DDPStrategy",
    "DistributedFailure",
    "FinetuneModule",
    "LinearProbeModule",
    "MAEPretrainModule",
    "WarmupCosine",
    "build_lr_scheduler",
    "configure_wandb_env",
    "get_or_create_run_id",
    "make_wandb_logger",
    "read_run_id",
    "schedule_steps",
    "write_run_id",
]
