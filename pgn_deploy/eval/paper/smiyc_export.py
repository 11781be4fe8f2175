"""Score maps in the SegmentMeIfYouCan (SMIYC) submission layout, for the public benchmark code.

Layout (facts of the benchmark code, ``road_anomaly_benchmark``): one HDF5 file per frame,
``<root>/anomaly_p/<method>/<dataset>/<frame id>.hdf5``, holding the dataset ``value`` as
float16, gzip-compressed (level 9); ``<root>`` is the benchmark's ``DIR_OUTPUTS``. ``<dataset>``
is the name the benchmark stores a split's frames under (``AnomalyTrack-all``,
``ObstacleTrack-all``, ``LostAndFound-test``; Fishyscapes LostAndFound frames go to the
``LostAndFound-<split>`` of their image), see :meth:`Dataset.smiyc_name`. ``<method>`` is the
map name (``pgn_uni_p0.5``, ``msp``, ...).

**Scaling.** float16 holds values up to 65504. Each map of a split is multiplied by
``2**e`` with ``e = floor(log2(65504 / m))``, ``m`` the largest absolute value of that map over
the split (``e = 0`` when ``m = 0``), so the largest value lands in [32752, 65504]. A power of
two leaves every float32 mantissa unchanged: the float16 file holds the map rounded to 11
significant bits, in the same order, so every rank-based benchmark metric (AuPRC, FPR95, the
best-F1 threshold and the components at it) is unchanged up to that rounding. Values below
``m * 2**-30`` become float16 subnormals or 0. The exponent of every map is in the report.
"""
from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from pgn_deploy.contract import ArtifactExistsError, BadInputError, require
from pgn_deploy.eval.paper.datasets import Dataset, Frame

FLOAT16_MAX = 65504.0
HDF5_DATASET = "value"
GZIP_LEVEL = 9


def float16_exponent(max_abs: float) -> int:
    """The ``e`` of the module doc: the largest ``e`` with ``max_abs * 2**e <= 65504``."""
    if not math.isfinite(max_abs) or max_abs < 0:
        raise BadInputError(f"cannot scale a map whose largest absolute value is {max_abs}")
    if max_abs == 0:
        return 0
    exponent = math.floor(math.log2(FLOAT16_MAX / max_abs))
    while math.ldexp(max_abs, exponent) > FLOAT16_MAX:  # log2 rounding at the boundary
        exponent -= 1
    return exponent


class SmiycWriter:
    """Writes the maps ``names`` of ``dataset`` under ``root`` (module doc).

    Pass 1: :meth:`observe` every frame's maps (largest absolute value per map); pass 2:
    :meth:`write` each frame. Files are written to a temporary name and renamed; existing files
    are replaced only with ``force`` (:meth:`check_targets` tells before any work).
    """

    def __init__(self, root: str | os.PathLike[str], dataset: Dataset, names: Sequence[str],
                 force: bool = False) -> None:
        self.h5py = require("h5py", "writing SegmentMeIfYouCan (hdf5) score files")
        self.root, self.dataset, self.names, self.force = Path(root), dataset, list(names), force
        self._max_abs = dict.fromkeys(self.names, 0.0)

    def path(self, name: str, frame: Frame) -> Path:
        """The HDF5 file of map ``name`` for ``frame``: ``root/anomaly_p/<name>/<SMIYC dataset>/<frame id>.hdf5``."""
        return self.root / "anomaly_p" / name / self.dataset.smiyc_name(frame) / f"{frame.id}.hdf5"

    def check_targets(self) -> None:
        """Refuse (before any work) to overwrite existing files without ``force``."""
        if self.root.exists() and not self.root.is_dir():
            raise BadInputError(f"--smiyc-out {self.root}: exists and is not a folder")
        if self.force:
            return
        for name in self.names:
            for frame in self.dataset:
                if self.path(name, frame).exists():
                    raise ArtifactExistsError(f"{self.path(name, frame)} exists; pass --force to overwrite it")

    def observe(self, maps: Mapping[str, np.ndarray]) -> None:
        """Pass 1: note the largest absolute value of each map."""
        for name in self.names:
            self._max_abs[name] = max(self._max_abs[name], float(np.abs(maps[name]).max(initial=0.0)))

    @property
    def exponents(self) -> dict[str, int]:
        """``e`` per map (the maps are multiplied by ``2**e``)."""
        return {name: float16_exponent(value) for name, value in self._max_abs.items()}

    def write(self, frame: Frame, maps: Mapping[str, np.ndarray]) -> None:
        """Pass 2: write the frame's maps, scaled, as float16 HDF5 files."""
        exponents = self.exponents
        for name in self.names:
            value = np.ldexp(maps[name].astype(np.float32), exponents[name]).astype(np.float16)
            self._write_file(self.path(name, frame), value)

    def _write_file(self, target: Path, value: np.ndarray) -> None:
        if target.exists() and not self.force:
            raise ArtifactExistsError(f"{target} exists; pass --force to overwrite it")
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".hdf5.tmp", dir=target.parent)
        os.close(fd)
        try:
            with self.h5py.File(tmp, "w") as handle:
                handle.create_dataset(HDF5_DATASET, data=value, compression="gzip",
                                      compression_opts=GZIP_LEVEL)
            os.replace(tmp, target)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def to_json(self) -> dict[str, object]:
        """Root, file layout, dtype, HDF5 dataset name and the per-map scale (``2**e``) and exponents."""
        return {"root": str(self.root), "layout": "anomaly_p/<method>/<dataset>/<frame id>.hdf5",
                "dtype": "float16", "hdf5_dataset": HDF5_DATASET,
                "scale": {name: f"2**{e}" for name, e in self.exponents.items()},
                "exponents": self.exponents}
