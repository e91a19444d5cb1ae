"""TEMPORARY: moved to :mod:`training.callbacks.preemption`; this module goes once
training/run_directory.py and training/failures.py import from there."""

from .callbacks.preemption import Preempted, PreemptionCheckpoint, requeue_slurm_job, scheduler_job_id  # noqa: F401
