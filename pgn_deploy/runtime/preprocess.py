"""From what the caller passes to the model's input tensor, exactly as the metadata says.

Per uint8 image (H x W x 3, channel order ``color``), in this order:

1. channel order: reversed (``img[..., ::-1]``) when ``color`` differs from
   ``InputInfo.channel_order``;
2. resize: when ``InputInfo.resize`` and ``InputInfo.size`` (h, w) differs from (H, W),
   ``cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)`` on the uint8 image;
3. normalization in float32, one operation at a time: ``x = float32(img)``, ``x = x / scale``,
   ``x = x - mean[c]``, ``x = x / std[c]`` (scale, mean and std rounded to float32);
4. HWC -> CHW, then cast to the model's input dtype (float32, or float16 for a half model).

A model whose ``InputInfo.format`` is ``uint8-nhwc-rgb``/``uint8-nhwc-bgr`` does steps 3 and 4
in its graph: the image is only reversed when ``color`` differs from the format's channel order,
resized as in step 2, and fed as uint8 h x w x 3.

A float N x 3 x h x w batch is taken as already preprocessed and only checked.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from pgn_deploy.contract import BadInputError, InputInfo

COLORS = ("RGB", "BGR")


def check_color(color: str) -> str:
    """Validate the caller's channel order name."""
    if color not in COLORS:
        raise BadInputError(f"color must be 'RGB' or 'BGR', got {color!r}")
    return color


def check_image(image: Any, what: str = "the image") -> np.ndarray:
    """An image must be a uint8 H x W x 3 array with H, W > 0."""
    if not isinstance(image, np.ndarray):
        raise BadInputError(f"{what} must be a numpy array, got {type(image).__name__}")
    if image.ndim != 3:
        raise BadInputError(
            f"{what} has rank {image.ndim} (shape {image.shape}); expected a uint8 H x W x 3 image "
            "(or a float32 N x 3 x H x W batch)"
        )
    if image.shape[2] != 3:
        raise BadInputError(
            f"{what} has {image.shape[2]} channels (shape {image.shape}); expected H x W x 3 "
            "(channels last; convert gray or RGBA images to 3 channels)"
        )
    if image.dtype != np.uint8:
        raise BadInputError(
            f"{what} has dtype {image.dtype}; images must be uint8 (a preprocessed float input "
            "must be an N x 3 x H x W batch)"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise BadInputError(f"{what} is empty (shape {image.shape})")
    return image


def check_batch(batch: np.ndarray) -> np.ndarray:
    """A preprocessed batch must be a finite float N x 3 x H x W array with N, H, W > 0."""
    if not np.issubdtype(batch.dtype, np.floating):
        raise BadInputError(
            f"a rank-4 input must be a preprocessed float N x 3 x H x W batch; got dtype "
            f"{batch.dtype} (pass uint8 images as a list of H x W x 3 arrays)"
        )
    if batch.shape[1] != 3:
        raise BadInputError(f"the batch has {batch.shape[1]} channels (shape {batch.shape}); expected N x 3 x H x W")
    if 0 in batch.shape:
        raise BadInputError(f"the batch is empty (shape {batch.shape})")
    bad = int(np.count_nonzero(~np.isfinite(batch)))
    if bad:
        raise BadInputError(f"the input batch contains {bad} NaN or infinite values")
    return batch


def split_inputs(inputs: Any) -> tuple[list[np.ndarray] | None, np.ndarray | None, bool]:
    """Classify the caller's input: ``(images, None, single)`` or ``(None, batch, False)``.

    Accepted: one uint8 H x W x 3 image (``single``), a non-empty sequence of such images (sizes
    may differ), or a float N x 3 x H x W batch.
    """
    if isinstance(inputs, np.ndarray):
        if inputs.ndim == 4:
            return None, check_batch(inputs), False
        return [check_image(inputs)], None, True
    if isinstance(inputs, Sequence) and not isinstance(inputs, (str, bytes)):
        if not inputs:
            raise BadInputError("the list of images is empty")
        return [check_image(image, f"image {i}") for i, image in enumerate(inputs)], None, False
    raise BadInputError(
        f"expected a uint8 H x W x 3 image, a list of images or a float N x 3 x H x W batch; got "
        f"{type(inputs).__name__}"
    )


def check_size(info: InputInfo, size: tuple[int, int], what: str) -> None:
    """Refuse a size a fixed-size model cannot take (after the optional resize)."""
    if info.size and not info.dynamic_size and tuple(size) != tuple(info.size):
        raise BadInputError(
            f"{what} is {size[0]} x {size[1]} but the model takes only {info.size[0]} x "
            f"{info.size[1]} images; resize it first"
        )


def preprocess_image(image: np.ndarray, color: str, info: InputInfo, dtype: np.dtype) -> np.ndarray:
    """One checked uint8 H x W x 3 image -> the model input ``3 x h x w`` in ``dtype`` (a uint8
    ``h x w x 3`` frame in the format's channel order for a model with a uint8 input format)."""
    if color != info.frame_order:
        image = image[..., ::-1]
    if info.resize and info.size and image.shape[:2] != tuple(info.size):
        height, width = info.size
        image = cv2.resize(np.ascontiguousarray(image), (width, height), interpolation=cv2.INTER_LINEAR)
    if info.uint8:
        return np.ascontiguousarray(image, dtype=np.uint8)
    x = image.astype(np.float32)
    x /= np.float32(info.scale)
    x -= np.asarray(info.mean, dtype=np.float32)
    x /= np.asarray(info.std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=dtype)


def timed_preprocess(images: list[np.ndarray], color: str, info: InputInfo,
                     dtype: np.dtype) -> list[tuple[np.ndarray, float]]:
    """:func:`preprocess_image` for each image, with its wall time in milliseconds."""
    prepared = []
    for i, image in enumerate(images):
        start = time.perf_counter()
        tensor = preprocess_image(image, color, info, dtype)
        check_size(info, tensor.shape[:2] if info.uint8 else tensor.shape[1:], f"image {i}")
        prepared.append((tensor, (time.perf_counter() - start) * 1e3))
    return prepared


def group_by_size(shapes: list[tuple[int, ...]], max_batch: int) -> list[list[int]]:
    """Indices grouped by equal shape (first-seen order), each group cut into runs of at most
    ``max_batch``: the calls a batched model needs."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, shape in enumerate(shapes):
        groups.setdefault(tuple(shape), []).append(index)
    return [members[i:i + max_batch] for members in groups.values() for i in range(0, len(members), max_batch)]
