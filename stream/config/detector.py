"""The invalid pixels of the detector a pyFAI PONI names: its mask and its dummy value.

pyFAI integrates a frame without the pixels of its detector's mask (module
gaps, `detector.mask`, made by `calc_mask`) and without those equal to the
detector's `dummy` within `delta_dummy` (a Pilatus / Eiger writes -1 in its
gaps and -2 for bad pixels: dummy -2, delta_dummy 1.5). A geometry read from
the same PONI without them puts those pixels in its bins (or, for the
background node, in its statistics), so the integrate and background nodes
(those whose keywords include `detector`) and `diffmap` take them from here,
unless their config gives `mask` / `dummy` itself.

`detector_masking(source)` builds the detector as pyFAI does for that PONI
(a file path, or pyFAI's PONI dict) and returns those nodes' keyword
arguments: `mask` (bool, True = invalid; left out when the detector has no
mask), `dummy` and `delta_dummy` (left out when it has no dummy), and
`detector` (its name, for the record). A plain `Detector` gives nothing; so
does any detector when pyFAI is not installed (`MISSING_PYFAI` says why).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

MISSING_PYFAI = ("pyFAI is not installed: the mask and dummy of detector {name!r} are not "
                 "applied (install pyFAI, or give mask / dummy in the node's table)")
KEYS = ("mask", "dummy", "delta_dummy")
log = logging.getLogger(__name__)


def detector_masking(source: str | Path | dict[str, Any], name: str) -> dict[str, Any]:
    """The node keywords of the named detector's invalid pixels (see the module docstring);
    {} for a plain `Detector`; ImportError (with `MISSING_PYFAI`) without pyFAI."""
    if name.lower() == "detector":
        return {}
    # pyFAI's import warns that pyopencl is missing, which it does not need here
    logging.getLogger("silx.opencl.common").setLevel(logging.ERROR)
    try:
        from pyFAI.io.ponifile import PoniFile
    except ImportError:
        raise ImportError(MISSING_PYFAI.format(name=name)) from None
    det = PoniFile(str(source) if isinstance(source, str | Path) else dict(source)).detector
    out: dict[str, Any] = {"detector": det.name}
    mask = det.mask
    if mask is not None and np.any(mask):
        out["mask"] = np.ascontiguousarray(mask, dtype=bool)
    if det.dummy is not None:
        out["dummy"] = float(det.dummy)
        out["delta_dummy"] = float(det.delta_dummy or 0.0)
    return out


def merged(masking: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """`masking` under the keywords the config `given` sets: its own mask replaces the
    detector's (as a mask given to pyFAI's integrate1d does), its dummy the detector's
    dummy and delta_dummy together. `detector` then says what was taken from it
    ("Pilatus300k: mask, dummy, delta_dummy"), for the node's stored config."""
    out = dict(masking)
    if "mask" in given:
        out.pop("mask", None)
    if "dummy" in given:
        out.pop("dummy", None)
        out.pop("delta_dummy", None)
    used = [k for k in KEYS if k in out]
    out = {k: v for k, v in out.items() if k in KEYS}
    if used:
        out["detector"] = f"{masking['detector']}: {', '.join(used)}"
    return {**out, **given}


def poni_node_values(path: Path, where: str, given: dict[str, Any],
                     masking: bool) -> dict[str, Any]:
    """A geometry node's values from a pyFAI PONI file (`poni = "file.poni"`) under the
    ones the table gives; with `masking` (integrate, background) also the mask / dummy of the
    detector the PONI names, unless the table gives them (this module)."""
    from stream.config.base import ConfigError
    from stream.config.poni import PoniError, geometry_values, read_poni

    path = path.expanduser()
    try:
        poni = read_poni(path)
    except (PoniError, OSError) as exc:
        raise ConfigError(f"{where}: poni: {exc}") from None
    values = {**geometry_values(poni), **given}
    if not masking:
        return values
    try:
        return with_masking(path, poni["detector"], values, where)
    except ValueError as exc:
        raise ConfigError(f"{where}: poni: {exc}") from None


def with_masking(source: str | Path | dict[str, Any], name: str, given: dict[str, Any],
                 where: str) -> dict[str, Any]:
    """`merged(detector_masking(source, name), given)`; without pyFAI a warning (naming
    `where`) and `given`; ValueError when pyFAI cannot build the detector."""
    if {"mask", "dummy"} <= set(given):
        return given
    try:
        return merged(detector_masking(source, name), given)
    except ImportError as exc:
        log.warning("%s: %s", where, exc)
        return given
    except Exception as exc:  # pyFAI refusing the PONI: its message says why
        raise ValueError(f"pyFAI cannot build detector {name!r}: {exc}") from None


def poni_masking(source: str | dict[str, Any], given: dict[str, Any],
                 where: str) -> dict[str, Any]:
    """`with_masking` for a PONI file (path) or pyFAI's PONI dict (diffmap's -p or
    --config), the detector named by its `Detector` line or `detector` key."""
    from stream.config.poni import read_poni

    name = read_poni(source)["detector"] if isinstance(source, str) else \
        str(source.get("detector") or "Detector")
    return with_masking(source, name, given, where)
