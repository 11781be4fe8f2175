"""Training and validation of the demo network on SynthRoad (used by ``export/train_demo.py``).

Training frames come from the SynthRoad ``train`` split, generated on the fly into a pool
that is partly refreshed every step (frame ``k`` of the split is generated once, in order), so
no dataset is stored. Batches are random crops with scale jitter and horizontal flips.
The loss weights rare classes ((median frequency / frequency) ** power) so that poles, signs
and pedestrians are learnt within the budget; after training, :func:`adjust_logits` folds
the weights' prior shift out of the classifier bias. Validation runs the whole frames of the
``val`` split and reports the IoU of every class that occurs in the ground truth and their
mean (mIoU).

The checkpoint follows the SDK convention: a dict with ``arch`` (``module:callable``),
``arch_kwargs`` (JSON-able), ``state_dict``, ``class_names`` and ``input`` (normalisation and
size), plus ``training`` (what produced it); it loads with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import collections
import dataclasses
import importlib
import inspect
import math
import multiprocessing
import pickle
import resource
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pgn_deploy.contract import ModelLoadError, atomic_write
from pgn_deploy.synthroad.generator import CLASS_NAMES, IGNORE, generate_frame

ARCH = "pgn_deploy.models.demo:DemoDeepLabV3Plus"
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
NUM_CLASSES = len(CLASS_NAMES)


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run depends on (``size`` and ``crop`` are (H, W) pixels).

    ``bf16``: forward and backward under ``torch.autocast("cpu", bfloat16)`` (weights, Adam
    state and the loss stay float32); about 1.5x faster per step than float32 on a CPU with
    AMX and AVX512-BF16 (measured), possibly slower on one without bfloat16 units.
    """

    seed: int = 0
    steps: int = 5200
    batch: int = 8
    crop: tuple[int, int] = (128, 256)
    scale: tuple[float, float] = (0.8, 1.25)
    lr: float = 2e-3
    warmup: int = 100
    pool: int = 96
    refresh: int = 1
    class_weight_power: float = 0.5
    size: tuple[int, int] = (256, 512)
    val_seed: int = 0
    val_frames: int = 100
    val_every: int = 1300
    bf16: bool = True
    workers: int = 1
    arch_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Validation:
    """IoU per class present in the ground truth (name -> IoU), their mean, pixel accuracy."""

    iou: dict[str, float]
    miou: float
    pixel_accuracy: float
    frames: int

    def lines(self) -> list[str]:
        """Human-readable report lines."""
        out = [f"val frames={self.frames} mIoU={self.miou:.4f} pixel_acc={self.pixel_accuracy:.4f}"]
        out += [f"  IoU {name:<14s} {value:.4f}" for name, value in self.iou.items()]
        return out


def normalize(images: np.ndarray) -> torch.Tensor:
    """N x H x W x 3 uint8 RGB -> N x 3 x H x W float32, ``(x / 255 - MEAN) / STD``."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


class FramePool:
    """A pool of SynthRoad training frames; :meth:`refresh` swaps the oldest for new ones.

    Frame ``k`` of the ``train`` split is generated once, in order, so the pool's contents
    after any number of refreshes depend only on ``seed``. With ``workers > 0`` the frames
    are generated ahead in that many spawned processes (up to ``4 * workers`` in flight), so
    generation overlaps the training step instead of adding to it; use the pool as a context
    manager (or call :meth:`close`) to stop them.
    """

    def __init__(self, seed: int, size: int, frame_size: tuple[int, int], workers: int = 0):
        self.seed, self.frame_size, self.next_index = seed, frame_size, 0
        self._executor = (ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
                          if workers > 0 else None)
        self._ahead: collections.deque[Future] = collections.deque()
        self._depth = 4 * workers
        self.frames = [self._next() for _ in range(size)]
        self.oldest = 0

    def __enter__(self) -> FramePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the generator processes (no-op without workers)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def _next(self) -> tuple[np.ndarray, np.ndarray]:
        if self._executor is None:
            frame = _train_frame(self.seed, self.next_index, self.frame_size)
        else:
            while len(self._ahead) < self._depth:
                index = self.next_index + len(self._ahead)
                self._ahead.append(self._executor.submit(_train_frame, self.seed, index, self.frame_size))
            frame = self._ahead.popleft().result()
        self.next_index += 1
        return frame

    def class_weights(self, power: float) -> torch.Tensor:
        """Loss weight per class, (median frequency / frequency) ** power over the pool's
        classes (clipped to 0.2..5); 1 for classes absent from the pool, all 1 for power 0."""
        counts = sum(np.bincount(label.ravel(), minlength=256)[:NUM_CLASSES] for _, label in self.frames)
        weights = np.ones(NUM_CLASSES)
        present = counts > 0
        freq = counts[present] / counts[present].sum()
        weights[present] = np.clip((np.median(freq) / freq) ** power, 0.2, 5.0)
        return torch.tensor(weights, dtype=torch.float32)

    def refresh(self, count: int) -> None:
        """Replace the ``count`` oldest frames with the next frames of the split, in generation order."""
        for _ in range(count):
            self.frames[self.oldest] = self._next()
            self.oldest = (self.oldest + 1) % len(self.frames)

    def batch(self, rng: np.random.Generator, count: int, crop: tuple[int, int],
              scale: tuple[float, float]) -> tuple[torch.Tensor, torch.Tensor]:
        """``count`` random crops (scale jitter, horizontal flip): (N x 3 x h x w, N x h x w int64)."""
        ch, cw = crop
        images, labels = [], []
        for k in rng.integers(len(self.frames), size=count):
            image, label = self.frames[k]
            s = max(rng.uniform(*scale), ch / image.shape[0], cw / image.shape[1])
            if abs(s - 1.0) > 1e-3:
                dsize = (math.ceil(image.shape[1] * s), math.ceil(image.shape[0] * s))
                image = cv2.resize(image, dsize, interpolation=cv2.INTER_LINEAR)
                label = cv2.resize(label, dsize, interpolation=cv2.INTER_NEAREST)
            top = int(rng.integers(image.shape[0] - ch + 1))
            left = int(rng.integers(image.shape[1] - cw + 1))
            image, label = image[top:top + ch, left:left + cw], label[top:top + ch, left:left + cw]
            if rng.uniform() < 0.5:
                image, label = image[:, ::-1], label[:, ::-1]
            images.append(image)
            labels.append(label)
        return normalize(np.stack(images)), torch.from_numpy(np.stack(labels).astype(np.int64))


def _train_frame(seed: int, index: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(image, train ids) of frame ``index`` of the SynthRoad ``train`` split."""
    frame = generate_frame(seed, index, "train", size)
    return frame.image, frame.train_ids


def confusion(pred: np.ndarray, gt: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """num_classes x num_classes counts (rows: ground truth, columns: prediction); 255 ignored."""
    keep = gt != IGNORE
    index = gt[keep].astype(np.int64) * num_classes + pred[keep].astype(np.int64)
    return np.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def summarize(conf: np.ndarray, frames: int) -> Validation:
    """IoU of every class with ground-truth pixels, their mean and the pixel accuracy."""
    tp = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - tp
    present = conf.sum(1) > 0
    iou = {CLASS_NAMES[c]: float(tp[c] / union[c]) for c in np.flatnonzero(present)}
    return Validation(iou, float(np.mean(list(iou.values()))), float(tp.sum() / max(conf.sum(), 1)), frames)


@torch.no_grad()
def validate(model: nn.Module, frames: list[tuple[np.ndarray, np.ndarray]], batch: int = 4) -> Validation:
    """Run ``model`` in eval mode on whole (image, train ids) frames; restores its mode."""
    was_training = model.training
    model.eval()
    conf = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    for start in range(0, len(frames), batch):
        chunk = frames[start:start + batch]
        logits = model(normalize(np.stack([image for image, _ in chunk])))
        pred = logits.argmax(1).numpy()
        for p, (_, gt) in zip(pred, chunk):
            conf += confusion(p, gt)
    model.train(was_training)
    return summarize(conf, len(frames))


def validation_frames(seed: int, count: int, size: tuple[int, int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, train ids) of frames 0 .. count-1 of the SynthRoad ``val`` split."""
    return [(f.image, f.train_ids) for f in (generate_frame(seed, i, "val", size) for i in range(count))]


def build_model(arch_kwargs: dict[str, Any]) -> nn.Module:
    """The demo network from its keyword arguments."""
    from pgn_deploy.models.demo import DemoDeepLabV3Plus

    return DemoDeepLabV3Plus(**arch_kwargs)


def full_arch_kwargs(arch_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Every constructor argument of the demo network (defaults filled in), JSON-able, so a
    checkpoint does not depend on the defaults of a later version."""
    from pgn_deploy.models.demo import DemoDeepLabV3Plus

    params = inspect.signature(DemoDeepLabV3Plus).parameters
    merged = {name: p.default for name, p in params.items()} | {"num_classes": NUM_CLASSES, **arch_kwargs}
    return _jsonable(merged)


def train(config: TrainConfig, log: Callable[[str], None] = print) -> tuple[nn.Module, Validation, float]:
    """Train the demo network; returns (model in eval mode, final validation, wall seconds).

    Deterministic for a config up to floating-point reduction order across threads. Logs
    wall time and the process's CPU time (all threads), which on a shared machine tells
    what the run costs on dedicated cores.
    """
    start, cpu_start = time.perf_counter(), time.process_time()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = build_model(config.arch_kwargs).to(memory_format=torch.channels_last)
    model.train()
    optimizer = make_optimizer(model, config.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, config))
    with FramePool(config.seed, config.pool, config.size, config.workers) as pool:
        val = validation_frames(config.val_seed, config.val_frames, config.size)
        weights = pool.class_weights(config.class_weight_power)
        log(f"model parameters={sum(p.numel() for p in model.parameters())} "
            f"setup={time.perf_counter() - start:.1f}s")
        log("class weights: " + " ".join(f"{CLASS_NAMES[c]}={w:.2f}" for c, w in enumerate(weights.tolist())
                                         if w != 1.0))
        running = None
        for step in range(1, config.steps + 1):
            x, y = pool.batch(rng, config.batch, config.crop, config.scale)
            loss = train_step(model, optimizer, x, y, weights, config.bf16)
            schedule.step()
            pool.refresh(config.refresh)
            running = loss if running is None else 0.95 * running + 0.05 * loss
            if step % 50 == 0 or step == 1:
                log(f"step {step}/{config.steps} loss={running:.4f} lr={schedule.get_last_lr()[0]:.2e} "
                    f"elapsed={time.perf_counter() - start:.0f}s cpu={time.process_time() - cpu_start:.0f}s")
            if config.val_every and step % config.val_every == 0 and step < config.steps:
                log(f"step {step}: " + validate(model, val).lines()[0])
    adjust_logits(model.classifier, weights)
    log("logit adjustment: classifier bias -= log(class weight)")
    model = model.to(memory_format=torch.contiguous_format).eval()
    result = validate(model, val)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    log(f"process CPU time: {time.process_time() - cpu_start:.0f} s "
        f"(+ {children.ru_utime + children.ru_stime:.0f} s in frame generator processes)")
    return model, result, time.perf_counter() - start


def make_optimizer(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """Adam with the fused CPU kernel (one pass over all parameters per step)."""
    return torch.optim.Adam(model.parameters(), lr=lr, fused=True)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               weights: torch.Tensor | None = None, bf16: bool = True) -> float:
    """One optimizer step on a batch (x: N x 3 x h x w float32, y: N x h x w int64 train ids,
    255 ignored); returns the (class-weighted) cross-entropy before the step. The forward and
    backward run channels-last, under bfloat16 autocast when ``bf16``; the loss is float32."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(x.contiguous(memory_format=torch.channels_last))
    loss = F.cross_entropy(logits.float(), y, weight=weights, ignore_index=IGNORE)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


@torch.no_grad()
def adjust_logits(classifier: nn.Conv2d, weights: torch.Tensor) -> None:
    """Undo the prior shift of a class-weighted loss: ``bias -= log(weights)``.

    Weighting class c by w_c in the cross-entropy is, to first order, training the logits
    plus log w_c; subtracting it afterwards (logit adjustment, Menon et al., 2021) restores
    the unweighted posterior, so thin classes are no longer over-predicted and the softmax
    is closer to calibrated.
    """
    classifier.bias -= torch.log(weights).to(classifier.bias)


def _lr_factor(step: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to 1% of the base rate."""
    if step < config.warmup:
        return (step + 1) / config.warmup
    t = (step - config.warmup) / max(1, config.steps - config.warmup)
    return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))


def make_checkpoint(model: nn.Module, config: TrainConfig, result: Validation, wall_s: float,
                    command: str) -> dict[str, Any]:
    """The SDK checkpoint dict of a trained demo network (plain types and tensors only)."""
    return {
        "arch": ARCH,
        "arch_kwargs": full_arch_kwargs(config.arch_kwargs),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "class_names": list(CLASS_NAMES),
        "input": {"mean": list(MEAN), "std": list(STD), "channel_order": "RGB", "scale": 255.0,
                  "size": list(config.size)},
        "training": {
            "dataset": "SynthRoad train split (generated on the fly)",
            "config": _jsonable(dataclasses.asdict(config)),
            "val_miou": result.miou,
            "val_iou": result.iou,
            "val_frames": result.frames,
            "wall_seconds": round(wall_s, 1),
            "threads": torch.get_num_threads(),
            "torch": str(torch.__version__),
            "command": command,
        },
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def save_checkpoint(checkpoint: dict[str, Any], path: str | Path, force: bool = False) -> Path:
    """Write ``checkpoint`` with ``torch.save`` atomically (never overwrites without ``force``)."""
    return atomic_write(path, lambda tmp: torch.save(checkpoint, tmp), force)


def load_demo(path: str | Path) -> nn.Module:
    """Load a demo checkpoint (``weights_only=True``) into its network, in eval mode."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        module, _, name = checkpoint["arch"].partition(":")
        model = getattr(importlib.import_module(module), name)(**checkpoint["arch_kwargs"])
        model.load_state_dict(checkpoint["state_dict"])
    except FileNotFoundError:
        raise ModelLoadError(f"{path}: no such file") from None
    except (KeyError, RuntimeError, ValueError, AttributeError, ImportError, pickle.UnpicklingError) as exc:
        raise ModelLoadError(f"{path}: not a demo checkpoint ({type(exc).__name__}: {exc})") from None
    return model.eval()
