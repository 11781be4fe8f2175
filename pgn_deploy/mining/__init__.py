"""Fleet-scale OoD mining: rank many frames by PGN uncertainty, on one machine or on Ray.

>>> from pgn_deploy.mining import MineOptions, mine
>>> report = mine("model.pgn.onnx", ["drives/"], "mined/", MineOptions(threshold=2.0, top=50))
>>> report.processed, report.skipped, report.failed

Torch-free. The local engine needs pyarrow (the ``mine`` extra); ``engine="ray"`` imports Ray
(also the ``mine`` extra) only when used. See ``docs/mining.md``.
"""
from __future__ import annotations

from pgn_deploy.mining.job import ENGINES, MineOptions, MineReport, mine

__all__ = ["ENGINES", "MineOptions", "MineReport", "mine"]
