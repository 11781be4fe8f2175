"""Peak resident memory (RSS) of this process, resettable where Linux allows it.

Where ``/proc/self/clear_refs`` accepts ``5`` (Linux >= 4.0), :meth:`PeakMemory.reset` resets
the kernel's RSS high-water mark (``VmHWM``) to the current RSS, so a later :meth:`peak_mb`
covers only what ran in between. Elsewhere the high-water mark of the whole process life comes
from ``resource.getrusage`` (``ru_maxrss``) and cannot be reset: :attr:`source` says which.
psutil is not used: it reports no peak RSS on Linux.
"""
from __future__ import annotations

import resource
import sys
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
SOURCE_PROC = "VmHWM of /proc/self/status, reset through /proc/self/clear_refs before the run"
SOURCE_RUSAGE = "resource.getrusage ru_maxrss: high-water mark of the whole process life (not resettable here)"


def _status_kb(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_mb() -> float | None:
    """Current resident memory of this process in MiB (``None`` where /proc is missing)."""
    kb = _status_kb("VmRSS")
    return None if kb is None else kb / 1024.0


class PeakMemory:
    """The process's peak RSS since :meth:`reset` (or since start, see :attr:`source`)."""

    def __init__(self) -> None:
        self.resettable = False
        self.source = SOURCE_RUSAGE
        self.baseline_mb: float | None = None

    def reset(self) -> None:
        """Start a new measurement: reset the high-water mark if possible, note the current RSS."""
        try:
            _CLEAR_REFS.write_text("5")
            self.resettable = _status_kb("VmHWM") is not None
        except OSError:
            self.resettable = False
        self.source = SOURCE_PROC if self.resettable else SOURCE_RUSAGE
        self.baseline_mb = rss_mb()

    def peak_mb(self) -> float:
        """Peak RSS in MiB since :meth:`reset` (or of the whole process, see :attr:`source`)."""
        if self.resettable:
            kb = _status_kb("VmHWM")
            if kb is not None:
                return kb / 1024.0
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return maxrss / (1024.0 * 1024.0) if sys.platform == "darwin" else maxrss / 1024.0
