"""Fixtures shared by the test modules."""

from __future__ import annotations

from pathlib import Path

import pytest

from launching import kill_started, write_image_folder, write_video_set


@pytest.fixture(scope="session")
def data_roots(tmp_path_factory) -> dict[str, Path]:
    """Tiny real data sets, written once per session: {"images": an ImageNet-style folder of JPEGs,
    "video": a Kinetics-style CSV set of H.264 clips}."""
    return {"images": write_image_folder(tmp_path_factory.mktemp("images")),
            "video": write_video_set(tmp_path_factory.mktemp("video"))}


@pytest.fixture(autouse=True)
def no_process_outlives_its_test():
    """Whatever a test launched (tests/launching.py) is killed when the test ends, pass or fail."""
    yield
    kill_started()
