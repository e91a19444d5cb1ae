"""Lightning training: MAE pretraining and finetuning modules, callbacks, checkpoint IO, W&B.

Modules know models and batches (``(images, labels)``), never files or configs; every number
is a constructor argument, so Hydra can instantiate them with ``_target_``. What happens around
the steps is a callback (:mod:`training.callbacks`), selected in ``conf/callbacks/``.
"""

from .callbacks import (
    ExactResume,
    LearningRateLogger,
    MAEReconstructionLogger,
    NonFiniteError,
    NonFiniteGuard,
    PosEmbedImageLogger,
    Preempted,
    PreemptionCheckpoint,
    RunCheckpoint,
    ThroughputLogger,
    WindowSimilarityLogger,
)
from .atomic_save import AtomicCheckpointIO
from .ddp import DDPStrategy, DistributedFailure
from .classifier_module import FinetuneModule
from .mae_module import MAEPretrainModule
from .schedule import WarmupCosine, build_lr_scheduler, schedule_steps
from .wandb_logger import (
    configure_wandb_env,
    get_or_create_run_id,
    make_wandb_logger,
    read_run_id,
    write_run_id,
)

__all__ = [
    "AtomicCheckpointIO",
    "DDPStrategy",
    "DistributedFailure",
    "ExactResume",
    "FinetuneModule",
    "LearningRateLogger",
    "MAEPretrainModule",
    "MAEReconstructionLogger",
    "NonFiniteError",
    "NonFiniteGuard",
    "PosEmbedImageLogger",
    "Preempted",
    "PreemptionCheckpoint",
    "RunCheckpoint",
    "ThroughputLogger",
    "WarmupCosine",
    "WindowSimilarityLogger",
    "build_lr_scheduler",
    "configure_wandb_env",
    "get_or_create_run_id",
    "make_wandb_logger",
    "read_run_id",
    "schedule_steps",
    "write_run_id",
]
