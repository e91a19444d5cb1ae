"""The one error of checkpoint loading, so that callers (the CLIs, ``launch``) catch a single
class whose message is always one line naming the file."""

from __future__ import annotations

from pathlib import Path


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or fitted to the model. The message is one line
    that names the file and the problem."""

    @classmethod
    def about(cls, path: str | Path, problem: str) -> CheckpointError:
        """``checkpoint PATH: PROBLEM``, to be raised (``from None``: no chained traceback)."""
        return cls(f"checkpoint {path}: {problem}")
