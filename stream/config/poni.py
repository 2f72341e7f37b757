"""Read pyFAI PONI files (versions 1, 2, 2.1, 3) into plain values for the node constructors.

A PONI file is `key: value` lines (keys case-insensitive, `#` comments, the
last value of a key wins). Version 1 gives the pixel sizes as `PixelSize1`,
`PixelSize2` (or not at all for a detector pyFAI knows by name); versions 2
and later give `Detector_config`, a JSON object with `pixel1`, `pixel2` and
(2.1) `orientation`. `Distance`, `Poni1`, `Poni2` are in m, `Rot1..3` in rad,
`Wavelength` in m. Spline distortion and parallax correction are refused
(the per-frame geometry does not model them).

`read_poni(path)` returns a dict; `GEOMETRY_KEYS` are the ones the geometry
nodes (integrate, background) take as keyword arguments.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

GEOMETRY_KEYS = ("dist", "poni1", "poni2", "rot1", "rot2", "rot3", "pixel1", "pixel2",
                 "wavelength", "orientation")
# pixel sizes (m) of detector families, used for a version 1 file that names its
# detector without pixel sizes when pyFAI is not installed to look them up
KNOWN_PIXELS = {"eiger": 75e-6, "pilatus": 172e-6}
VERSIONS = (1.0, 2.0, 2.1, 3.0)


class PoniError(ValueError):
    """A PONI file that cannot be used; the text names the file and the key."""


def parse_poni(text: str, origin: str = "<poni>") -> dict[str, Any]:
    """The values of a PONI file's text (see the module docstring)."""
    raw: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("#") or ":" not in line:
            continue
        key, value = line.split(":", 1)
        raw[key.strip().lower()] = value.strip()
    try:
        version = float(raw.get("poni_version", "1"))
    except ValueError:
        raise PoniError(f"{origin}: poni_version {raw['poni_version']!r} is not a number") from None
    if version not in VERSIONS:
        raise PoniError(f"{origin}: poni_version {version:g} not supported "
                        f"(known: {', '.join(f'{v:g}' for v in VERSIONS)})")
    config = _detector_config(raw, origin)
    if version >= 2 and not config:
        raise PoniError(f"{origin}: poni_version {version:g} without Detector_config")
    if raw.get("parallax", "false").lower() == "true":
        raise PoniError(f"{origin}: Parallax: True is not supported")
    spline = raw.get("splinefile", config.get("splinefile") or "none")
    if str(spline).lower() != "none":
        raise PoniError(f"{origin}: spline distortion ({spline}) is not supported")
    detector = raw.get("detector", "Detector")
    out: dict[str, Any] = {"poni_version": version, "detector": detector}
    out["dist"] = _number(raw, ("distance", "dist"), origin)
    for key in ("poni1", "poni2"):
        out[key] = _number(raw, (key,), origin)
    for key in ("rot1", "rot2", "rot3"):
        out[key] = _number(raw, (key,), origin, default=0.0)
    wavelength = raw.get("wavelength")
    out["wavelength"] = 0.0 if wavelength in (None, "None") else _number(raw, ("wavelength",),
                                                                         origin)
    out["pixel1"], out["pixel2"] = _pixels(raw, config, detector, origin)
    orientation = config.get("orientation", 3)
    if orientation not in (0, 1, 2, 3, 4):
        raise PoniError(f"{origin}: Detector_config orientation {orientation!r} not in 0..4")
    out["orientation"] = int(orientation) or 3
    if "max_shape" in config and config["max_shape"] is not None:
        out["max_shape"] = tuple(int(n) for n in config["max_shape"])
    return out


def read_poni(path: str | Path) -> dict[str, Any]:
    """Read a PONI file; PoniError (a ValueError) names the file and what is wrong."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise PoniError(f"{path}: cannot read: {exc}") from None
    return parse_poni(text, str(path))


def geometry_values(poni: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of a geometry node (integrate, background) from `read_poni`;
    `detector_shape` too when the file gives its detector's max_shape, so the node
    refuses frames of another shape."""
    out = {k: poni[k] for k in GEOMETRY_KEYS}
    if poni.get("max_shape") is not None:
        out["detector_shape"] = list(poni["max_shape"])
    return out


def _detector_config(raw: dict[str, str], origin: str) -> dict[str, Any]:
    text = raw.get("detector_config")
    if text is None:
        return {}
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PoniError(f"{origin}: Detector_config is not JSON: {exc}") from None
    if not isinstance(config, dict):
        raise PoniError(f"{origin}: Detector_config must be a JSON object, got {text!r}")
    return config


def _number(raw: dict[str, str], keys: tuple[str, ...], origin: str,
            default: float | None = None) -> float:
    for key in keys:
        if key in raw:
            try:
                value = float(raw[key])
            except ValueError:
                raise PoniError(f"{origin}: {key} {raw[key]!r} is not a number") from None
            if not math.isfinite(value):
                raise PoniError(f"{origin}: {key} must be finite, got {raw[key]!r}")
            return value
    if default is None:
        raise PoniError(f"{origin}: no {keys[0]}")
    return default


def _pixels(raw: dict[str, str], config: dict[str, Any], detector: str,
            origin: str) -> tuple[float, float]:
    """Pixel sizes (m): Detector_config, PixelSize1/2, or the named detector's."""
    sizes = []
    for key, old in (("pixel1", "pixelsize1"), ("pixel2", "pixelsize2")):
        value = config.get(key)
        if value is None and old in raw:
            value = _number(raw, (old,), origin)
        sizes.append(value)
    if None in sizes:
        known = _detector_pixels(detector)
        if known is None:
            raise PoniError(f"{origin}: no pixel sizes (pixel1/pixel2 in Detector_config or "
                            f"PixelSize1/2) and detector {detector!r} is not known")
        sizes = [known[i] if s is None else s for i, s in enumerate(sizes)]
    try:
        p1, p2 = float(sizes[0]), float(sizes[1])
    except (TypeError, ValueError):
        raise PoniError(f"{origin}: pixel sizes must be numbers, got {sizes!r}") from None
    if not (p1 > 0 and p2 > 0 and math.isfinite(p1) and math.isfinite(p2)):
        raise PoniError(f"{origin}: pixel sizes must be > 0 m, got {sizes!r}")
    return p1, p2


def _detector_pixels(name: str) -> tuple[float, float] | None:
    """A named detector's pixel sizes: pyFAI's detector database if installed, else ours."""
    try:
        from pyFAI import detectors
    except ImportError:
        detectors = None
    if detectors is not None:
        try:
            det = detectors.detector_factory(name)
        except Exception:  # an unknown name: try our short list
            det = None
        if det is not None and det.pixel1 and det.pixel2:
            return float(det.pixel1), float(det.pixel2)
    for family, size in KNOWN_PIXELS.items():
        if name.lower().startswith(family):
            return size, size
    return None
