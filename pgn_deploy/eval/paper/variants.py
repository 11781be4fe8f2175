"""Other files of the same grafted model (an INT8 or fp16 copy) evaluated in the same report.

``pgn-eval MODEL --variant TAG=OTHER.pgn.onnx`` runs ``OTHER`` on every frame as one more scorer
and adds its PGN maps as rows named ``<map>@TAG`` (shown as ``PGN_oh p=0.5 [TAG]``), scored on
the same pixels and labels as the model's own rows, cached and fingerprinted (by the file's
sha256) like the baselines.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from pgn_deploy.contract import BadInputError

TAG = re.compile(r"^[A-Za-z0-9_]+$")


def parse_variant(text: str) -> tuple[str, Path]:
    """``TAG=MODEL`` -> (tag, path); a tag of letters, digits and ``_`` and an existing file, else a BadInputError."""
    tag, sep, path = text.partition("=")
    if not sep or not TAG.match(tag):
        raise BadInputError(f"--variant {text!r}: expected TAG=MODEL with a TAG of letters, digits and _ (e.g. "
                            "int8=model.int8.pgn.onnx)")
    if not Path(path).is_file():
        raise BadInputError(f"--variant {tag}: {path}: no such model file")
    return tag, Path(path)


def variant_map(name: str, tag: str) -> str:
    """The row name of map ``name`` of variant ``tag``: ``name@tag``."""
    return f"{name}@{tag}"


def variant_maps(path: str | os.PathLike[str], tag: str) -> list[str]:
    """The row names of the PGN maps of the grafted model at ``path``."""
    from pgn_deploy.runtime.model_file import load_model_metadata

    return [variant_map(name, tag) for name in load_model_metadata(path).pgn_outputs]


class VariantScorer:
    """The PGN maps of another grafted file for one image, named ``<map>@<tag>``."""

    def __init__(self, tag: str, path: str | os.PathLike[str], backend: str = "auto", threads: int = 0) -> None:
        from pgn_deploy.runtime import Runtime

        self.runtime = Runtime(path, backend, intra_op_threads=threads)
        self.tag = tag
        self.method = f"variant {tag}"
        self.maps = list(self.runtime.metadata.pgn_outputs)
        self.names = tuple(variant_map(name, tag) for name in self.maps)

    def __call__(self, image: np.ndarray, color: str = "BGR") -> dict[str, np.ndarray]:
        """``{<map>@<tag>: H x W float32}`` of one uint8 H x W x 3 image in ``color`` order (at its size)."""
        from pgn_deploy.runtime.result import resize_score

        result = self.runtime.run(np.ascontiguousarray(image), color=color)
        return {variant_map(name, self.tag): resize_score(result.scores[name], image.shape[:2]).astype(np.float32)
                for name in self.maps}
