"""DataLoader workers end with the training process, however it ends: workers come from a
forkserver, and without datamodules.loading.exit_with they outlived it forever, each holding
hundreds of MiB (a test suite or a sweep ran the machine out of memory). Tested on the real entry
point, its workers found by the environment variable every process of a launched run carries."""

from __future__ import annotations

import signal
import time

import pytest

from launching import COMMON, data_overrides, start, unique_name

pytestmark = pytest.mark.slow  # launched runs


@pytest.mark.parametrize("how", ["finishes", "SIGKILL"])
def test_workers_end_with_the_training_process(how, data_roots, tmp_path):
    overrides = [*data_overrides("images", data_roots["images"]), *COMMON, "logger=csv", "trainer.max_epochs=1"]
    job = start("single", "train.py", overrides, output_root=tmp_path, run_name=unique_name("workers"))
    job.wait_for_ranks(1)
    job.wait_for_step(2)
    workers = job.workers()
    assert len(workers) >= 2, f"expected the run's 2 loader workers (and their forkserver), found {workers}"
    if how == "SIGKILL":
        job.signal(signal.SIGKILL)  # no clean-up of ours runs
    started = time.monotonic()
    codes = job.wait_gone(30)
    assert codes == ([0] if how == "finishes" else [-signal.SIGKILL]), job.tails()
    assert time.monotonic() - started < 30
