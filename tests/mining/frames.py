"""A small generated frame set for the mining tests: images (some in a sub-folder), a short
video, and corrupt files among them; plus the tiny grafted model and a threshold that finds
instances on it."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from pgn_deploy.runtime.runner import Runtime
from tests.support.runtime_models import build_model

SIZE = (48, 64)  # H, W
VIDEO_FRAMES = 6


def scene(rng: np.random.Generator) -> np.ndarray:
    """A BGR frame: a smooth gradient with a few bright rectangles (instances for the model)."""
    h, w = SIZE
    image = np.zeros((h, w, 3), np.float32)
    image += np.linspace(0, 120, w, dtype=np.float32)[None, :, None]
    for _ in range(rng.integers(0, 4)):
        y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
        image[y:y + rng.integers(4, 12), x:x + rng.integers(4, 16)] = rng.integers(0, 256, 3)
    return np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)


def write_frame_set(root: Path, images: int = 10, seed: int = 0) -> dict[str, list[Path]]:
    """``root/imgs`` with ``images`` PNGs (a third of them in ``imgs/sub``), two corrupt files,
    and ``root/video.avi`` (MJPG, :data:`VIDEO_FRAMES` frames). Returns the paths by kind."""
    rng = np.random.default_rng(seed)
    folder = root / "imgs"
    (folder / "sub").mkdir(parents=True, exist_ok=True)
    good = []
    for index in range(images):
        path = folder / ("sub" if index % 3 == 2 else "") / f"frame{index:03d}.png"
        cv2.imwrite(str(path), scene(rng))
        good.append(path)
    corrupt = [folder / "broken.png", folder / "sub" / "empty.jpg"]
    corrupt[0].write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    corrupt[1].write_bytes(b"")
    video = root / "video.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (SIZE[1], SIZE[0]))
    for _ in range(VIDEO_FRAMES):
        writer.write(scene(rng))
    writer.release()
    return {"good": good, "corrupt": corrupt, "video": [video]}


def tiny_model(path: Path, seed: int = 0) -> Path:
    """The runtime tests' tiny grafted model (dynamic batch, uncalibrated)."""
    return build_model(path, seed=seed)


def threshold_for(model: Path, images: list[Path], quantile: float = 0.97) -> float:
    """A threshold of the default map at ``quantile`` of its pixels over ``images``."""
    runtime = Runtime(model, "ort-cpu")
    values = [runtime.run(cv2.imread(str(p)), color="BGR").score().ravel() for p in images]
    return float(np.quantile(np.concatenate(values), quantile))
