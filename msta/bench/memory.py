"""Peak resident memory of the current process, from /proc/self/status (Linux), with a reset between phases.

The benchmark runs each configuration in a fresh subprocess, so one configuration's peak never includes
another's. Inside the process the peak can be reset (``/proc/self/clear_refs`` with "5", Linux >= 4.0), which
separates the step's own peak from model building. Where /proc is missing, ``resource.getrusage`` gives the peak
without reset.
"""
from __future__ import annotations

import logging
import resource
import sys

__all__ = ["rss_bytes", "peak_rss_bytes", "reset_peak_rss"]

_logger = logging.getLogger(__name__)


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_bytes() -> int:
    """Current resident set size in bytes (0 where unknown)."""
    kib = _status_kib("VmRSS")
    return 1024 * kib if kib is not None else 0


def peak_rss_bytes() -> int:
    """Peak resident set size since process start or the last successful ``reset_peak_rss``, in bytes."""
    kib = _status_kib("VmHWM")
    if kib is not None:
        return 1024 * kib
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else 1024 * peak  # bytes on macOS, KiB on Linux


def reset_peak_rss() -> bool:
    """Resets the peak to the current RSS; returns False (and the peak keeps counting) where not supported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError as e:
        _logger.debug("cannot reset the peak RSS (%s); peaks include model building", e)
        return False
