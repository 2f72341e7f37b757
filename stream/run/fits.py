"""The count of linker split "pixels"' fits that failed, for the file's counters.

A clique of at least 12 pixels on two points or more gets `fit_intensity`, the
integral of a 3D Gaussian fitted to its pixels; where the pixels make no
Gaussian (a spot seen on two points only, a flat or hollow top) the fit fails
and the column holds NaN. The linker counts them (`nodes.link.separate.
fit_failures`, carried in its state across a resume); the collector, the block
replay and relink copy the count into the scan's counter `fit_failed` and say
it at the end of the scan.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def fit_failed(linker: Any) -> int:
    """Cliques of linker split "pixels" whose Gaussian fit failed so far; 0 for other
    splits."""
    return int(getattr(getattr(linker, "separator", None), "nfit_failed", 0))


def log_fit_failed(path: Any, n: int) -> None:
    """The end of a scan's word on the fits that failed (none: nothing said)."""
    if n:
        log.warning("%s: %d clique(s) whose 3D Gaussian fit failed: fit_intensity NaN "
                    "(sum_intensity holds their pixel sum; counter fit_failed)", path, n)
