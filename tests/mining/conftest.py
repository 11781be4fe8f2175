from __future__ import annotations

from pathlib import Path

import pytest

from tests.mining.frames import threshold_for, tiny_model, write_frame_set


@pytest.fixture(scope="session")
def frame_set(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The generated frames (good, corrupt, a video), the tiny model and a threshold for it."""
    root: Path = tmp_path_factory.mktemp("frames")
    paths = write_frame_set(root)
    model = tiny_model(root / "tiny.pgn.onnx")
    return {**paths, "root": root, "model": model, "threshold": threshold_for(model, paths["good"])}
