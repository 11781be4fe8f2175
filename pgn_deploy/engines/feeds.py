"""Model inputs for the checks that run a model on the CPU (``pgn-lint --calib``, comparisons).

Images are read and preprocessed exactly as the runtime does
(:func:`pgn_deploy.runtime.preprocess.preprocess_image`, BGR files from
:func:`pgn_deploy.runtime.sources.read_image`); each becomes one ``1 x 3 x H x W`` batch.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from pgn_deploy.contract import BadInputError, InputInfo

DEFAULT_SYNTHETIC_SIZE = (256, 256)


def image_batches(info: InputInfo, dtype: np.dtype, paths: Sequence[str | os.PathLike[str]],
                  max_images: int | None = None) -> list[np.ndarray]:
    """The images in ``paths`` (files or folders; videos are skipped) as model inputs."""
    from pgn_deploy.runtime.preprocess import check_size, preprocess_image
    from pgn_deploy.runtime.sources import collect_inputs, read_image

    if max_images is not None and max_images < 1:
        raise BadInputError(f"max_images must be >= 1, got {max_images}")
    files = [item.path for item in collect_inputs(paths) if item.kind == "image"][:max_images]
    if not files:
        raise BadInputError("no images found among the given paths (videos are not read here)")
    batches = []
    for path in files:
        tensor = preprocess_image(read_image(path), "BGR", info, dtype)
        check_size(info, tensor.shape[1:], str(path))
        batches.append(tensor[None])
    return batches


def synthetic_batches(info: InputInfo, dtype: np.dtype, count: int = 2,
                      size: tuple[int, int] | None = None, seed: int = 0) -> list[np.ndarray]:
    """``count`` seeded uniform-noise uint8 images at ``size`` (default: the export size in the
    metadata, else 256 x 256), preprocessed like real images."""
    from pgn_deploy.runtime.preprocess import preprocess_image

    if count < 1:
        raise BadInputError(f"count must be >= 1, got {count}")
    height, width = size or info.size or DEFAULT_SYNTHETIC_SIZE
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]
    return [preprocess_image(image, info.channel_order, info, dtype)[None] for image in images]


def input_dtype(model: object, name: str) -> np.dtype:
    """numpy dtype of the graph input ``name`` of an ``onnx.ModelProto``."""
    import onnx

    for value in model.graph.input:  # type: ignore[attr-defined]
        if value.name == name:
            return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type))
    raise BadInputError(f"the model has no input {name!r}")
