"""Write the inputs of the C++ tests (ctest) into a folder: small grafted models and an image.

    python make_test_inputs.py OUT_DIR

* ``model.pgn.onnx``: the runtime tests' tiny network (tests/support/runtime_models.py), grafted with
  PGN maps p = 0.5, 2, the baselines and ``pred``; dynamic batch and size;
* ``nopred.pgn.onnx``: the same without ``pred`` (the class map is the logits' argmax), BGR
  input resized to 24 x 32 by the runtime;
* ``plain.onnx``: the network without metadata; ``corrupt.onnx``: not an ONNX file;
  ``nosidecar.plan``: a "TensorRT plan" without its sidecar JSON;
* ``image.png``: a 40 x 52 RGB test picture (stored as PNG, i.e. BGR on disk via OpenCV).
"""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # for tests.support and pgn_deploy

from pgn_deploy.contract import InputInfo  # noqa: E402
from tests.support.runtime_models import build_model  # noqa: E402  (the Python runtime tests' models)


def test_image(height: int = 40, width: int = 52, seed: int = 0) -> np.ndarray:
    """A uint8 H x W x 3 picture: smooth gradients plus noise and a bright square."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 255 // width, y * 255 // height, (x + y) * 127 // (width + height)], axis=-1)
    image = image + rng.integers(0, 40, image.shape)
    image[height // 3: height // 2, width // 2: width // 2 + 8] = 250
    return np.clip(image, 0, 255).astype(np.uint8)


def main(out: Path) -> None:
    """Write the files listed in the module docstring into ``out`` (created if missing), replacing old copies."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("model.pgn.onnx", "nopred.pgn.onnx", "plain.onnx"):
        (out / name).unlink(missing_ok=True)
    build_model(out / "model.pgn.onnx", pred=True)
    resized = InputInfo(channel_order="BGR", size=(24, 32), resize=True)
    build_model(out / "nopred.pgn.onnx", pred=False, input_info=resized, seed=1)
    build_model(out / "plain.onnx", metadata=False)
    (out / "corrupt.onnx").write_bytes(b"this is not an ONNX model")
    (out / "nosidecar.plan").write_bytes(b"not a plan either")
    cv2.imwrite(str(out / "image.png"), test_image()[..., ::-1])


if __name__ == "__main__":
    main(Path(sys.argv[1]))
