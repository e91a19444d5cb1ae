"""Data modules for tests that build them directly: the shipped data config's arguments
(``conf/data/<name>.yaml``, composed with ``train`` or ``finetune`` as a run composes it, then
resolved to plain Python without the descriptive keys ``name`` and ``input``, as ``training.config``
builds it) with a test's own changes, never a copy of the numbers."""

from __future__ import annotations

import functools

from hydra.utils import get_class

from training.config import config_arguments


@functools.cache
def _config(data: str, mode: str) -> dict:
    return config_arguments("train" if mode == "pretrain" else "finetune", "data", [f"data={data}"])


def data_arguments(data: str, **changes) -> dict:
    """The arguments of data config ``data`` (``mode`` in ``changes`` picks the task's composition:
    ``pretrain`` or ``finetune``, the default), ``_target_`` included, with ``changes`` applied."""
    args = dict(_config(data, changes.get("mode", "finetune")))
    args.update(changes)
    return args


def data_module(data: str, root, **changes):
    """The data module of config ``data`` on the files in ``root``, with ``changes`` (the class
    called directly with the plain arguments, so that its errors reach the test unwrapped)."""
    args = data_arguments(data, root=str(root), **changes)
    return get_class(args.pop("_target_"))(**args)
