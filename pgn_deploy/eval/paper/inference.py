"""Per-frame score maps for an evaluation: runtime, test-time augmentation, baselines, cache.

:func:`frame_maps` turns a dataset frame into every requested map (H x W float32 at the
image's size), reading them from a :class:`MapCache` when a previous run saved them, so a
second evaluation with other metrics does not re-infer. The work comes in *groups*, each
cached and recomputed on its own: the grafted model's maps with ``pred`` (one forward pass, or
one per TTA view), and each baseline scorer's maps (MC dropout, ensemble). Adding a baseline to
a finished evaluation therefore runs only that baseline.

The softmax (C x H x W, needed by the in-distribution metrics) is never cached: at 19 x 2
megapixels a frame it would take tens of gigabytes for Cityscapes val. With ``with_probs`` the
model group is therefore always inferred (and its maps cached again).
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from pgn_deploy.contract import BadInputError, atomic_write_text, file_sha256, process_umask
from pgn_deploy.eval.paper.baselines import softmax
from pgn_deploy.eval.paper.datasets import Frame
from pgn_deploy.runtime import Runtime
from pgn_deploy.runtime.result import resize_score

DEFAULT_TTA_SCALES = (0.5, 1.0, 2.0)
PRED = "pred"
FINGERPRINTS = "fingerprints.json"
STAMP_SUFFIX = ".json"


@dataclasses.dataclass(frozen=True)
class TTA:
    """Test-time augmentation as the paper's published inference: mean over ``scales`` and,
    with ``flip``, over horizontally flipped copies. ``TTA()`` is plain inference.

    Every view's maps and softmax are resized (bilinear) to the image's size, flipped back and
    averaged; ``pred`` is the argmax of the averaged softmax.
    """

    scales: tuple[float, ...] = (1.0,)
    flip: bool = False

    @property
    def active(self) -> bool:
        """True unless this is plain inference (one scale 1.0, no flip)."""
        return self.flip or self.scales != (1.0,)

    @property
    def views(self) -> list[tuple[float, bool]]:
        """Every (scale, flipped) view, in the order they run."""
        return [(s, f) for s in self.scales for f in ((False, True) if self.flip else (False,))]

    def to_json(self) -> dict[str, Any]:
        """``{"scales": [...], "flip": bool}``: the TTA part of a map's fingerprint."""
        return {"scales": list(self.scales), "flip": self.flip}

    @classmethod
    def parse(cls, text: str | None) -> TTA:
        """``None`` -> off; ``""`` -> scales 0.5, 1, 2 and flip; ``"0.75,1,flip"`` -> as given."""
        if text is None:
            return cls()
        parts = [part.strip() for part in text.split(",") if part.strip()]
        if not parts:
            return cls(DEFAULT_TTA_SCALES, True)
        flip = "flip" in parts
        try:
            scales = tuple(float(part) for part in parts if part != "flip") or (1.0,)
        except ValueError:
            raise BadInputError(f"--tta {text!r}: expected scales and/or 'flip', e.g. 0.5,1,2,flip") from None
        if any(not (np.isfinite(s) and s > 0) for s in scales):
            raise BadInputError(f"--tta {text!r}: scales must be finite numbers > 0")
        return cls(tuple(dict.fromkeys(scales)), flip)


class Scorer(Protocol):
    """A baseline: ``method`` (its name in timings), ``names`` of the maps it returns and
    ``scorer(image_bgr) -> {name: H x W float32}``."""

    method: str
    names: tuple[str, ...]

    def __call__(self, image: np.ndarray, color: str = "BGR") -> dict[str, np.ndarray]:
        """The maps ``names`` of one uint8 H x W x 3 image in ``color`` order: ``{name: H x W float32}``."""


@dataclasses.dataclass
class FrameMaps:
    """What the metrics need of one frame: ``maps`` (name -> H x W float32), ``pred`` (H x W
    int32), ``probs`` (C x H x W float32 softmax, only when asked for) and ``seconds`` (wall
    time of each group computed now, ``{"model": s, <scorer.method>: s}``; empty when
    everything came from the cache)."""

    frame_id: str
    maps: dict[str, np.ndarray]
    pred: np.ndarray
    probs: np.ndarray | None = None
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)




class MapCache:
    """Arrays on disk under ``root/<name>/<frame id>.npy``, each with its proof beside it.

    ``root=None`` caches nothing. :meth:`claim` records what produced each name (a
    *fingerprint*: model digest, TTA, baseline settings) in ``root/fingerprints.json`` and
    refuses to mix arrays of different producers (without ``force``). That index only guards
    against mistakes: what makes a cached map trusted is its *stamp*
    ``<frame id>.npy.json``, written with it, naming the producer's fingerprint, the map, the
    frame (id and the sha256 of its image file) and the sha256 of the ``.npy`` bytes. A map
    whose stamp is missing, names another producer or frame, or does not match its bytes, and
    a truncated or unreadable ``.npy``, is not loaded: :func:`frame_maps` recomputes it.
    Files get the modes the umask gives (0644 by default).
    """

    def __init__(self, root: str | os.PathLike[str] | None) -> None:
        self.root = Path(root) if root is not None else None
        self._prints: dict[str, dict[str, Any]] = {}

    def path(self, name: str, frame_id: str) -> Path:
        """Where array ``name`` of frame ``frame_id`` is cached (its stamp: this path + ``.json``);
        raises BadInputError when there is no cache."""
        if self.root is None:
            raise BadInputError("this evaluation has no map cache")
        return self.root / name / f"{frame_id}.npy"

    def _stamp(self, name: str, frame_id: str, image_digest: str, npy_digest: str) -> dict[str, Any]:
        return {"name": name, "frame": frame_id, "image_sha256": image_digest, "npy_sha256": npy_digest,
                "producer": json.loads(json.dumps(self._prints.get(name, {})))}

    def _read(self, name: str, frame_id: str, image_digest: str) -> np.ndarray | None:
        """The array when its stamp proves it (producer, frame, bytes); otherwise None."""
        target = self.path(name, frame_id)
        try:
            data = target.read_bytes()
            stamp = json.loads(target.with_name(target.name + STAMP_SUFFIX).read_text())
            if stamp != self._stamp(name, frame_id, image_digest, hashlib.sha256(data).hexdigest()):
                return None
            return np.load(io.BytesIO(data), allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None

    def load(self, names: Sequence[str], frame_id: str, image_digest: str = "") -> dict[str, np.ndarray] | None:
        """Every named array of the frame, or ``None`` if any is missing, unproven or unreadable
        (or there is no cache). ``image_digest``: the sha256 of the frame's image file."""
        if self.root is None:
            return None
        arrays = {}
        for name in names:
            array = self._read(name, frame_id, image_digest)
            if array is None:
                return None
            arrays[name] = array
        return arrays

    def save(self, arrays: Mapping[str, np.ndarray], frame_id: str, image_digest: str = "") -> None:
        """Write each array and then its stamp, each atomically (a crash leaves an unproven map)."""
        if self.root is None:
            return
        for name, array in arrays.items():
            target = self.path(name, frame_id)
            target.parent.mkdir(parents=True, exist_ok=True)
            buffer = io.BytesIO()
            np.save(buffer, array, allow_pickle=False)
            data = buffer.getvalue()
            stamp = self._stamp(name, frame_id, image_digest, hashlib.sha256(data).hexdigest())
            _replace_file(target, data)
            _replace_file(target.with_name(target.name + STAMP_SUFFIX), json.dumps(stamp, sort_keys=True).encode())

    def conflicts(self, fingerprints: Mapping[str, Mapping[str, Any]]) -> list[str]:
        """Names whose cached arrays were made by another producer than ``fingerprints`` says."""
        recorded = self._recorded()
        return [name for name, print_ in fingerprints.items()
                if name in recorded and recorded[name] != json.loads(json.dumps(print_))]

    def check(self, fingerprints: Mapping[str, Mapping[str, Any]], force: bool = False) -> None:
        """Without ``force``, a name cached by another producer than ``fingerprints`` says is an error."""
        stale = self.conflicts(fingerprints)
        if stale and not force:
            raise BadInputError(
                f"{self.root}: the cached {', '.join(stale)} were made by another model or other "
                "settings; use another --out or pass --force to recompute them")

    def claim(self, fingerprints: Mapping[str, Mapping[str, Any]], force: bool = False) -> None:
        """Record the producers of ``fingerprints``' names (after :meth:`check`); with ``force``
        the arrays of a name cached by another producer are deleted first. From now on only
        maps stamped with these producers are loaded."""
        self._prints.update({k: dict(v) for k, v in fingerprints.items()})
        if self.root is None:
            return
        self.check(fingerprints, force)
        for name in self.conflicts(fingerprints):
            shutil.rmtree(self.root / name, ignore_errors=True)
        recorded = self._recorded() | {k: dict(v) for k, v in fingerprints.items()}
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.root / FINGERPRINTS, json.dumps(recorded, indent=2, sort_keys=True) + "\n",
                          force=True)

    def _recorded(self) -> dict[str, Any]:
        if self.root is None or not (self.root / FINGERPRINTS).is_file():
            return {}
        try:
            return json.loads((self.root / FINGERPRINTS).read_text())
        except ValueError:
            raise BadInputError(f"{self.root / FINGERPRINTS}: not readable JSON; delete the cache folder") from None


def _replace_file(target: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``target`` (umask modes), then rename it over."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o666 & ~process_umask())
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


def image_digest(frame: Frame) -> str:
    """The sha256 of the frame's image file (what a cached map of this frame is stamped with)."""
    try:
        return file_sha256(frame.image)
    except OSError as exc:
        raise BadInputError(f"{frame.image}: cannot read the image ({exc.strerror or exc})") from None


def _model_run(runtime: Runtime, image: np.ndarray, tta: TTA, names: Sequence[str],
               need_probs: bool) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray | None]:
    """Maps, pred and (when needed or with TTA) softmax of one BGR image, averaged over views."""
    height, width = image.shape[:2]
    need_logits = need_probs or tta.active
    views = tta.views
    sums = {name: np.zeros((height, width), np.float64) for name in names}
    prob_sum = None
    pred = None
    for scale, flip in views:
        view = image[:, ::-1] if flip else image
        if scale != 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            view = cv2.resize(np.ascontiguousarray(view), size, interpolation=cv2.INTER_LINEAR)
        result = runtime.run(np.ascontiguousarray(view), color="BGR", logits=need_logits)
        for name in names:
            score = resize_score(result.scores[name], (height, width))
            sums[name] += score[:, ::-1] if flip else score
        if need_logits:
            probs = softmax(result.logits[None])[0]
            probs = np.stack([resize_score(c, (height, width)) for c in probs])
            view_probs = probs[:, :, ::-1] if flip else probs
            prob_sum = view_probs if prob_sum is None else prob_sum + view_probs
        else:
            pred = result.pred
    maps = {name: (total / len(views)).astype(np.float32) for name, total in sums.items()}
    probs = None if prob_sum is None else (prob_sum / len(views)).astype(np.float32)
    if tta.active:
        pred = probs.argmax(axis=0)
    elif pred is None:
        pred = result.pred
    return maps, np.ascontiguousarray(pred, dtype=np.int32), probs


def frame_maps(runtime: Runtime, frame: Frame, names: Sequence[str], *, cache: MapCache,
               tta: TTA = TTA(), scorers: Sequence[Scorer] = (), with_probs: bool = False) -> FrameMaps:
    """Every map of ``names`` (graph outputs) and of the ``scorers`` (baselines) for ``frame``.

    Groups found complete in ``cache`` are loaded; the others are computed and cached. The
    model group holds ``names`` and ``pred``; ``with_probs`` always infers it, to return the
    softmax too. Baselines run on the plain image (no TTA). The image is read only when
    something is computed.
    """
    model_group = [*names, PRED]
    image = None
    seconds: dict[str, float] = {}
    probs = None
    digest = image_digest(frame) if cache.root is not None else ""
    loaded = None if with_probs else cache.load(model_group, frame.id, digest)
    if loaded is None:
        image = frame.load_image()
        start = time.perf_counter()
        maps, pred, probs = _model_run(runtime, image, tta, names, with_probs)
        seconds["model"] = time.perf_counter() - start
        cache.save({**maps, PRED: pred}, frame.id, digest)
    else:
        pred = loaded.pop(PRED)
        maps = loaded
    for scorer in scorers:
        cached = cache.load(scorer.names, frame.id, digest)
        if cached is None:
            image = frame.load_image() if image is None else image
            start = time.perf_counter()
            cached = scorer(image, "BGR")
            seconds[scorer.method] = time.perf_counter() - start
            cache.save(cached, frame.id, digest)
        maps.update(cached)
    return FrameMaps(frame.id, maps, pred, probs if with_probs else None, seconds)
