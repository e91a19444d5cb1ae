"""What happens around the training steps, one module per concern; ``conf/callbacks/`` selects them.

* :mod:`.save_intervals`: :class:`RunCheckpoint`, when ``last.ckpt`` / ``best.ckpt`` are written.
* :mod:`.preemption`: :class:`PreemptionCheckpoint`, save and requeue on a scheduler's signal.
* :mod:`.exact_resume`: :class:`ExactResume`, per-step reseeding and RNG states in checkpoints.
* :mod:`.nonfinite`: :class:`NonFiniteGuard`, stop or skip on NaN gradients, never save NaN weights.
* :mod:`.learning_rate`: :class:`LearningRateLogger` (Lightning's ``LearningRateMonitor``).
* :mod:`.throughput`: :class:`ThroughputLogger`, ``train/throughput`` in samples per second.
* :mod:`.pictures`: the position-embedding and MAE-reconstruction numbers and pictures.
* :mod:`.knn_monitor`: :class:`KNNMonitor`, k-NN top-1 of the MAE encoder's features during pretraining.
"""

from .save_intervals import RunCheckpoint
from .exact_resume import ExactResume
from .knn_monitor import KNNMonitor
from .learning_rate import LearningRateLogger
from .nonfinite import NonFiniteError, NonFiniteGuard
from .pictures import MAEReconstructionLogger, PosEmbedImageLogger, WindowSimilarityLogger
from .preemption import Preempted, PreemptionCheckpoint
from .throughput import ThroughputLogger

__all__ = [
    "ExactResume",
    "KNNMonitor",
    "LearningRateLogger",
    "MAEReconstructionLogger",
    "NonFiniteError",
    "NonFiniteGuard",
    "PosEmbedImageLogger",
    "Preempted",
    "PreemptionCheckpoint",
    "RunCheckpoint",
    "ThroughputLogger",
    "WindowSimilarityLogger",
]
