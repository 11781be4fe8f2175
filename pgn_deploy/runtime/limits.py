"""Image size limits checked before inference allocates anything (``--max-pixels``).

A frame of ``H x W`` pixels costs the runtime about ``H * W * bytes_per_pixel`` bytes: the float32
input tensor (3 channels), every float32 output plane and the network's own activations, which
:data:`WORKSPACE_FACTOR` estimates as 16 times the input and output planes together. The default
limit lets one frame use at most a quarter of this host's physical memory, clamped to
:data:`MAX_PIXELS_CAP` (64 Mpx); callers pass an explicit ``max_pixels`` to choose another.
"""
from __future__ import annotations

import os

from pgn_deploy.contract import BadInputError

WORKSPACE_FACTOR = 16
MAX_PIXELS_CAP = 8192 * 8192
MEMORY_SHARE = 4
FALLBACK_MEMORY_BYTES = 8 << 30


def physical_memory_bytes() -> int:
    """This host's physical memory in bytes (8 GiB when the OS does not say)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return FALLBACK_MEMORY_BYTES


def default_max_pixels(n_outputs: int, memory_bytes: int | None = None) -> int:
    """The default pixel limit of one frame of a model with ``n_outputs`` float32 output planes."""
    memory = physical_memory_bytes() if memory_bytes is None else memory_bytes
    bytes_per_pixel = 4 * (3 + max(n_outputs, 1)) * WORKSPACE_FACTOR
    return max(1, min(MAX_PIXELS_CAP, memory // MEMORY_SHARE // bytes_per_pixel))


def check_max_pixels(max_pixels: int) -> int:
    """``max_pixels`` when it is a whole number >= 1; :class:`BadInputError` otherwise."""
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise BadInputError(f"max_pixels must be a whole number >= 1, got {max_pixels!r}")
    return max_pixels


def frame_refusal(height: int, width: int, max_pixels: int) -> str | None:
    """Why a frame of ``height x width`` pixels is refused (None when it is accepted)."""
    if height < 1 or width < 1:
        return f"an image of {height} x {width} pixels is empty: height and width must be >= 1"
    if height * width > max_pixels:
        return (f"an image of {height} x {width} = {height * width} pixels is above the limit of "
                f"{max_pixels} pixels (--max-pixels)")
    return None


def check_frame(height: int, width: int, max_pixels: int) -> None:
    """Raise :class:`BadInputError` for a frame :func:`frame_refusal` refuses."""
    reason = frame_refusal(height, width, max_pixels)
    if reason:
        raise BadInputError(reason)


def check_allocation(shape: tuple[int, ...], itemsize: int, what: str) -> None:
    """:class:`BadInputError` when an array of ``shape`` x ``itemsize`` bytes would need more
    than half of this host's physical memory (``numpy`` would fail or the host would swap)."""
    count = 1
    for dim in shape:
        count *= int(dim)
    needed, memory = count * itemsize, physical_memory_bytes()
    if needed > memory // 2:
        raise BadInputError(
            f"{what} of shape {'x'.join(str(int(d)) for d in shape)} needs {needed / 2**30:.1f} GiB, more than "
            f"half of this host's {memory / 2**30:.1f} GiB of memory; choose a smaller shape")
