"""The console and the run's log file: each message once, in one format, and no advertising.

Lightning (and torchmetrics) give their loggers handlers of their own, so their messages either
print a second time in another format or never reach the run's log file. :func:`one_format` routes
them through the root logger's handlers (Hydra's console handler, then the run's file), and
:class:`NoAdvertising` drops Lightning's "try installing ..." tips, and a Lightning warning that is
false for our loaders (a mid-epoch resume, which they continue exactly) is not shown. Records logged before the run
directory is accepted (the data checks) are held in memory and written first once it is.
"""

from __future__ import annotations

import logging
import logging.handlers
import warnings
from pathlib import Path

FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # as Hydra's console handler


class NoAdvertising(logging.Filter):
    """Drops Lightning's tips that advertise other products (litlogger, litmodels)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "💡 Tip:" not in record.getMessage()


def one_format() -> None:
    """Lightning's messages through the root logger's handlers only, once each."""
    # Lightning cannot see that datamodules.loading continues a mid-epoch checkpoint's epoch exactly
    warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "torchmetrics"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, NoAdvertising) for f in handler.filters):
            handler.addFilter(NoAdvertising())


def hold_log() -> logging.handlers.MemoryHandler:
    """Hold this run's records until its directory is accepted (:func:`log_to_file` writes them)."""
    held = logging.handlers.MemoryHandler(capacity=100_000, flushLevel=logging.CRITICAL + 1, flushOnClose=False)
    logging.getLogger().addHandler(held)
    return held


def log_to_file(run_dir: Path, held: logging.handlers.MemoryHandler) -> logging.Handler:
    """Log into ``<run_dir>/<job name>.log`` from here on, after the ``held`` records (only once the
    run is accepted: a refused start must leave the directory as it was)."""
    from hydra.core.hydra_config import HydraConfig

    name = HydraConfig.get().job.name if HydraConfig.initialized() else "run"
    handler = logging.FileHandler(run_dir / f"{name}.log")
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(NoAdvertising())
    held.setTarget(handler)
    held.flush()
    logging.getLogger().removeHandler(held)
    logging.getLogger().addHandler(handler)
    return handler


def remove_handlers(*handlers: logging.Handler) -> None:
    for handler in handlers:
        logging.getLogger().removeHandler(handler)
        handler.close()
