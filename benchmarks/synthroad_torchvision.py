"""torchvision's deeplabv3_mobilenet_v3_large trained briefly on SynthRoad on the CPU, cached.

The INT8 fidelity study needs a second *trained* network (random weights predict one class
everywhere and measure nothing), and nothing may be downloaded: so the network is built with
``weights=None, weights_backbone=None, num_classes=19`` and trained here, reproducibly
(seeded weights, crops and frames), with the demo network's training loop
(:mod:`pgn_deploy.models.demo_training`: SynthRoad ``train`` frames generated on the fly,
class-weighted cross-entropy, Adam, bfloat16 autocast) at a small size for :data:`STEPS` steps.
torchvision's MobileNetV3 BatchNorms average their running statistics with momentum 0.01, too
slowly for so short a run (eval-mode mIoU 3 % against 44 % with batch statistics, measured), so
the running statistics are then recomputed as plain averages over the first ``bn_frames`` frames
of the ``train`` split (:func:`recalibrate_batch_norm`).
The result is "clearly non-trivial" rather than good; its in-distribution mIoU on SynthRoad
``val`` frames is measured and reported.

:func:`trained_deeplabv3` keeps the state dict and the validation in ``WORK/``; a later call
with the same settings reuses them.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

NAME = "deeplabv3_mobilenet_v3_large"
STEPS = 400
SETTINGS: dict[str, Any] = {"seed": 0, "steps": STEPS, "batch": 8, "crop": [128, 256], "lr": 2e-3, "pool": 48,
                            "val_frames": 24, "frame_size": [256, 512], "bn_frames": 32}


class LogitsOnly(torch.nn.Module):
    """torchvision's segmentation model returning only its ``out`` logits (N x 19 x H x W float32)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N x 3 x H x W normalised RGB -> logits."""
        return self.model(x)["out"]


def build() -> torch.nn.Module:
    """deeplabv3_mobilenet_v3_large, no pretrained weights, 19 classes, seeded initialisation."""
    import torchvision.models.segmentation as seg

    torch.manual_seed(SETTINGS["seed"])
    return getattr(seg, NAME)(weights=None, weights_backbone=None, num_classes=19, aux_loss=False)


def train(log: Any = print) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train from scratch with :data:`SETTINGS`; returns (model in eval mode, record with the val mIoU)."""
    from pgn_deploy.models.demo_training import FramePool, TrainConfig, train_step, validate, validation_frames

    start = time.perf_counter()
    model = build()
    wrapped = LogitsOnly(model).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=SETTINGS["lr"])
    rng = np.random.default_rng(SETTINGS["seed"])
    size = tuple(SETTINGS["frame_size"])
    defaults = TrainConfig()
    with FramePool(SETTINGS["seed"], SETTINGS["pool"], size) as pool:
        weights = pool.class_weights(defaults.class_weight_power)
        for step in range(1, STEPS + 1):
            lr = SETTINGS["lr"] * 0.5 * (1 + np.cos(np.pi * step / STEPS))
            for group in optimizer.param_groups:
                group["lr"] = lr
            x, y = pool.batch(rng, SETTINGS["batch"], tuple(SETTINGS["crop"]), defaults.scale)
            loss = train_step(wrapped, optimizer, x, y, weights)
            pool.refresh(1)
            if step % 50 == 0 or step == 1:
                log(f"{NAME}: step {step}/{STEPS} loss {loss:.3f} {time.perf_counter() - start:.0f} s")
    recalibrate_batch_norm(wrapped, SETTINGS["bn_frames"])
    wrapped.eval()
    result = validate(wrapped, validation_frames(defaults.val_seed, SETTINGS["val_frames"], size))
    record = {"settings": SETTINGS, "val_mIoU": result.miou, "val_pixel_accuracy": result.pixel_accuracy,
              "val_iou": result.iou, "train_s": round(time.perf_counter() - start, 1)}
    return model.eval(), record


@torch.no_grad()
def recalibrate_batch_norm(model: torch.nn.Module, frames: int, batch: int = 8) -> None:
    """Replace every BatchNorm's running mean/variance by their plain average over the first
    ``frames`` SynthRoad ``train`` frames (whole frames, batches of ``batch``); leaves ``model`` in eval mode."""
    from pgn_deploy.models.demo_training import FramePool, normalize

    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative moving average
    model.train()
    with FramePool(SETTINGS["seed"], frames, tuple(SETTINGS["frame_size"])) as pool:
        for start in range(0, frames, batch):
            model(normalize(np.stack([image for image, _ in pool.frames[start:start + batch]])))
    model.eval()


def trained_deeplabv3(work: Path, log: Any = print) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The trained network (eval mode) and its record, from ``work`` when cached with the same settings."""
    weights, record_path = work / f"{NAME}_synthroad.pt", work / f"{NAME}_synthroad.json"
    if weights.is_file() and record_path.is_file():
        record = json.loads(record_path.read_text())
        if record.get("settings") == SETTINGS:
            model = build()
            model.load_state_dict(torch.load(weights, weights_only=True))
            log(f"{NAME}: reusing {weights} (val mIoU {record['val_mIoU']:.3f})")
            return model.eval(), record
    model, record = train(log)
    torch.save(model.state_dict(), weights)
    record_path.write_text(json.dumps(record, indent=1) + "\n")
    log(f"{NAME}: trained in {record['train_s']} s, val mIoU {record['val_mIoU']:.3f}")
    return model, record
