"""The NeXus side of a map file (written by `stream.maps.grid.MapWriter`): the paths,
the pattern's axes, the virtual `map` view, the NXdata signal and axes, and motor
axes filled where no point came.

File layout (pyFAI diff_map's paths, so its users' scripts and viewers read ours):

    /                                NXroot; default entry_0000
    /entry_0000                      NXentry: title, program_name, start_time, end_time;
                                     default pyFAI/result
    /entry_0000/pyFAI                NXprocess: program, version, date, inputfiles,
                                     dim0 = nslow (attrs axis, range), dim1 = nfast,
                                     dim2 = npt, offset, PONIfile / maskfile / darkfiles /
                                     flatfiles when given, configuration (NXnote: type
                                     text/json, data: the integration config as JSON)
    /entry_0000/pyFAI/result         NXdata: intensity (nslow, nfast, npt) float32
                                     [(nslow, nfast, nazim, npt) when caked], errors (same),
                                     the radial axis named by its unit's space (2th, q, r)
                                     with attrs unit and long_name, [azimuthal], slow
                                     (nslow,) and fast (nfast,) motor positions, map_ptr
                                     (nslow, nfast) int32 point / frame index (-1: none),
                                     map: virtual (npt, nslow, nfast) view of intensity;
                                     signal map, axes [2th, slow, fast]
    /entry_0000/pyFAI/positions      NXcollection: <motor> (nslow, nfast) of every motor
    /entry_0000/maps/<name>          NXdata: data (nslow, nfast[, n]) float64 of a per-point
                                     output (ROI and annulus sums, peak and clique counts,
                                     ...); slow, fast (links to result's)
    /entry_0000/maps/composite_<n>   NXdata: data (nslow * th, nfast * tw) float32: tiles
                                     (th, tw) placed by mesh position (xrsmap's composite)
"""

from __future__ import annotations

import math

import h5py
import numpy as np

ENTRY, PROCESS, RESULT, MAPS = "entry_0000", "pyFAI", "result", "maps"
RESULT_PATH = f"/{ENTRY}/{PROCESS}/{RESULT}"
MAX_VIEW_MAPPINGS = 1 << 17  # the virtual `map` view has one mapping per pattern bin
LONG_NAMES = {"2th": "Scattering angle 2\u03b8", "q": "Scattering vector q",
              "r": "Radius r", "chi": "Azimuthal angle \u03c7", "d": "d-spacing"}


def split_unit(unit: str) -> tuple[str, str]:
    """pyFAI unit name -> (space, unit): 2th_deg -> (2th, deg), q_nm^-1 -> (q, nm^-1)."""
    space, _, rest = unit.partition("_")
    return (space or "radial"), rest


def pattern_axes(res: h5py.Group, shape: tuple[int, ...], radial: np.ndarray | None,
                 unit: str, azimuthal: np.ndarray | None) -> str:
    """The radial axis (and the azimuthal one of a caked pattern) of the result group;
    the radial space's name (2th, q, r)."""
    npt = shape[-1]
    if radial is None:
        radial, unit = np.arange(npt, dtype=np.float64), "bin_index"
    if len(radial) != npt:
        raise ValueError(f"map: the radial axis has {len(radial)} points, the pattern {npt}")
    space, u = split_unit(unit)
    ax = res.create_dataset(space, data=np.asarray(radial, np.float64))
    ax.attrs.update(unit=u, units=u, long_name=f"{LONG_NAMES.get(space, space)} ({u})",
                    interpretation="scalar", axes=len(shape))
    if len(shape) == 2:
        azim = azimuthal if azimuthal is not None else np.arange(shape[0])
        az = res.create_dataset("azimuthal", data=np.asarray(azim, np.float64))
        az.attrs.update(unit="deg", units="deg", interpretation="scalar", axes=1)
    return space


def virtual_map(res: h5py.Group, nrows: int, nfast: int) -> None:
    """`map`: a virtual transposed view (npt, nslow, nfast) of intensity, as pyFAI's.

    One mapping per pattern bin, `map[k] <- intensity[:, :, k]`, unlimited along
    slow: the view grows with the intensity dataset (open-ended scans). None when
    the pattern has more than MAX_VIEW_MAPPINGS bins."""
    src_ds = res["intensity"]
    lead = src_ds.shape[2:]
    if math.prod(lead) > MAX_VIEW_MAPPINGS:
        return
    unlimited = h5py.h5s.UNLIMITED
    layout = h5py.VirtualLayout(shape=(*lead, nrows, nfast), dtype=np.float32,
                                maxshape=(*lead, None, nfast))
    src = h5py.VirtualSource(".", src_ds.name, shape=src_ds.shape,  # ".": this file
                             maxshape=src_ds.maxshape)
    for k in np.ndindex(*lead):
        layout[(*k, slice(0, unlimited))] = src[(slice(0, unlimited), slice(None), *k)]
    res.create_virtual_dataset("map", layout, fillvalue=np.nan)
    res["map"].attrs["interpretation"] = "image"


def describe(res: h5py.Group, space: str, slowax: h5py.Dataset,
             fastax: h5py.Dataset) -> None:
    """The NXdata signal and axes: the map view if it exists, else intensity."""
    if "intensity" not in res:
        return
    lead = ["azimuthal"] if res["intensity"].ndim == 4 else []
    if "map" in res:
        res.attrs.update(signal="map", axes=[*lead, space, "slow", "fast"])
        slowax.attrs["axes"], fastax.attrs["axes"] = len(lead) + 2, len(lead) + 3
    else:
        res.attrs.update(signal="intensity", axes=["slow", "fast", *lead, space])
        slowax.attrs["axes"], fastax.attrs["axes"] = 1, 2


def fill_axis(values: np.ndarray) -> np.ndarray:
    """Positions never seen (NaN) from a straight line through the known ones (indices if
    fewer than two are known)."""
    values = np.asarray(values, np.float64).copy()
    known = np.isfinite(values)
    if known.all():
        return values
    idx = np.arange(len(values), dtype=np.float64)
    if known.sum() < 2:
        return idx if not known.any() else values[known][0] + idx - idx[known][0]
    slope, icpt = np.polyfit(idx[known], values[known], 1)
    values[~known] = icpt + slope * idx[~known]
    return values
