"""Write an output file's results in the formats other programs read.

* `flt`: ImageD11's columnfile of 3D peaks, one row per clique, with the
  column names of ImageD11's peaksearch output (`sc fc omega Number_of_pixels
  avg_intensity s_raw f_raw sigs sigf covsf ... spot3d_id`), so ImageD11's
  `columnfile` and its indexing read it. sc, fc are s_raw, f_raw (no spatial
  distortion correction); dety, detz = -f_raw, s_raw (ImageD11's default
  flip); sigo, covso, covfo, IMax_s, IMax_f are not kept by peakstream and
  are written as 0; IMax_o is the omega of the point with the brightest
  member; Min_o, Max_o the least and largest omega of its members (2D
  peaks), in any scan order (interlaced passes, a scan run downwards); when
  the scan wraps, these three lie within half a turn of the clique's omega
  (a 3D peak across 360 -> 0 at 358, 362 or -2, 2, as its omega), so
  Min_o <= omega <= Max_o. onfirst, onlast: a member lies on the scan's first
  or last omega (the end of its omega range where the scan's first pass or row
  starts, and the other end: the 3D peak may be cut there), 0 for a scan that
  wraps (no end in omega);
  without a rotation motor, a member on the first or last point. A clique's
  members are its rows of the shares table, so a 2D peak split between
  cliques (linker split "pixels") counts in each (bounding box, IMax);
  the clique's sums are its shares of the pixels already. With split
  "pixels" a last column, fit_intensity, holds each clique's fitted 3D
  Gaussian integral (nan where none was fitted). The scan's other motors
  follow spot3d_id as columns of their own, each clique's centroid (a dty x
  omega scan's `dty`, which ImageD11's scanning 3DXRD tools key on).
* `sparse`: ImageD11's sparse HDF5 (the layout of shared/data's silicon file):
  group `1.1` with row, col, intensity (float32), frame, nnz, attrs itype
  (float32, the intensity's dtype; older exports wrote the detector's, uint16
  say: both replay alike), nframes, shape0, shape1, and per-frame motors under
  measurement/ (omega as rot_center); attr peakstream_trajectory, the scan's
  trajectory (JSON), which a replay of the file follows (without it, a sweep
  in omega); attr peakstream_normalised, when the pixels are normalised (the
  run's chain had a normalise node): {"counter", "reference"} as JSON, so that
  a replay with a normalise node does not scale them again (ImageD11 ignores
  it); peakstream_status,
  each frame's point status (0 ok, 1 missing, 2 bad: a replay finds the points
  that were not ok missing, not empty); attr peakstream_detector, the
  detector's name (a config's [source] detector names it). The kept
  pixels of every point; when 2D peaks were split between cliques, also
  `shares/` (peak_id, clique_id, share: the part of the 2D peak's intensity
  that is the clique's; peak_id is the row of peaks2d, in point order and
  label order within a point).
* `framecache`: hexrd's frame-cache .npz: `{i}_row`, `{i}_col`, `{i}_data`,
  `shape`, `nframes`, `dtype`, and `omega` (nframes, 2): the start and end
  angle of each frame (its omega -+ half the step to its neighbours with an
  omega: NaN only for the points without one), and
  `peakstream_status`, `peakstream_detector`, `peakstream_normalised` as in
  `sparse`.
* `ptyd`: ptypy's prepared data (`stream.offline.ptyd`), from a run whose chain
  had a `ptyd` node.

"omega" above is the scan's rotation motor (`rotation_motor`): the one named,
else `omega` or another usual name (a Bliss scan's `diffrz`), else the motor the
trajectory declares periodic or the fast motor of a sweep; without one the
export says so (omega columns NaN, no frame-cache omega) instead of a silent NaN.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from stream.core.derive import TURN
from stream.core.trajectory import ROTATION_NAMES
from stream.sources.files.ours import NORMALISED_KEY, pixels_normalised
from stream.store.reader import load

FORMATS = ("flt", "sparse", "framecache", "ptyd")
FLT_COLUMNS = ("sc", "fc", "omega", "Number_of_pixels", "avg_intensity", "s_raw", "f_raw",
               "sigs", "sigf", "covsf", "sigo", "covso", "covfo", "sum_intensity",
               "sum_intensity^2", "IMax_int", "IMax_s", "IMax_f", "IMax_o", "Min_s", "Max_s",
               "Min_f", "Max_f", "Min_o", "Max_o", "dety", "detz", "onfirst", "onlast",
               "spot3d_id")
_INTS = {"Number_of_pixels", "IMax_s", "IMax_f", "Min_s", "Max_s", "Min_f", "Max_f",
         "onfirst", "onlast", "spot3d_id"}


def export(path: str | Path, fmt: str, output: str | Path,
           omega: str | None = None) -> dict[str, Any]:
    """Write `output` in format `fmt` from the output file `path`; return what was written
    (and a `warning` when the scan has no rotation motor). `omega`: the rotation
    motor's name (default: `rotation_motor`'s choice)."""
    if fmt not in FORMATS:
        raise ValueError(f"export format {fmt!r} is not one of {', '.join(FORMATS)}")
    if fmt == "ptyd":
        from stream.offline.ptyd import export_ptyd

        return export_ptyd(Path(path), Path(output))
    data = load(path)
    with h5py.File(path, "r", locking=False) as f:
        sparse = f[f"entry/{data['detector']}/sparse"]
        shape = (int(sparse.attrs["shape0"]), int(sparse.attrs["shape1"]))
        itype = str(sparse.attrs["itype"])
        data["trajectory"] = str(f["entry/points"].attrs.get("trajectory", ""))
        data["normalised"] = pixels_normalised(f, str(path))  # (sparse, framecache record it)
    motors = [k[len("motors/"):] for k in data["points"] if k.startswith("motors/")]
    data["omega"] = rotation_motor(motors, data["trajectory"], omega)
    writer = {"flt": _flt, "sparse": _sparse, "framecache": _framecache}[fmt]
    n = writer(data, shape, itype, Path(output))
    done = {"format": fmt, "file": str(output), "rows": n, "omega": data["omega"]}
    if data["omega"] is None:
        done["warning"] = (f"no rotation motor among the scan's motors "
                           f"({', '.join(motors) or 'none'}): "
                           + ("the omega columns are NaN" if fmt == "flt" else
                              "the frames have no omega") + "; give --omega NAME")
    return done


def rotation_motor(motors: list[str], trajectory: str, given: str | None = None) -> str | None:
    """The scan's rotation motor: `given` (ValueError if the scan lacks it), else the
    first of ROTATION_NAMES among `motors`, else one the trajectory (JSON) declares
    periodic, else the fast motor of a sweep or interlaced scan; None if none."""
    if given:
        if given not in motors:
            raise ValueError(f"omega motor {given!r}: the scan has no such motor (its "
                             f"motors: {', '.join(motors) or 'none'})")
        return given
    for name in ROTATION_NAMES:
        if name in motors:
            return name
    try:
        traj = json.loads(trajectory) if trajectory else {}
    except ValueError:
        traj = {}
    traj = traj if isinstance(traj, dict) else {}
    periodic = [m for m in traj.get("period") or {} if m in motors]
    if periodic:
        return periodic[0]
    fast = traj.get("fast")
    return fast if traj.get("kind") in ("sweep", "interlaced") and fast in motors else None


def flt_columns(data: dict[str, Any]) -> dict[str, np.ndarray]:
    """The columnfile's columns, one row per clique (see the module docstring)."""
    cl, pk = data["cliques"], data["peaks2d"]
    n = cl["clique_id"].shape[0]
    rot = data.get("omega", "omega")  # the rotation motor's name (None: none)
    nan = np.full(len(data["points"]["point_id"]), np.nan)
    omega_of = data["points"].get(f"motors/{rot}", nan) if rot else nan
    with np.errstate(invalid="ignore", divide="ignore"):
        s, f = cl["s_raw"], cl["f_raw"]
        var_s = np.maximum(cl["s_ssI"] / cl["s_I"] - s * s, 0.0)
        var_f = np.maximum(cl["s_ffI"] / cl["s_I"] - f * f, 0.0)
        sigs, sigf = np.sqrt(var_s), np.sqrt(var_f)
        covsf = np.where(sigs * sigf > 0, (cl["s_sfI"] / cl["s_I"] - s * f) / (sigs * sigf), 0.0)
        avg = cl["sum_intensity"] / cl["npx"]
    sh = data.get("shares") or {}
    if len(sh.get("peak_id", ())):  # every (2D peak, clique) pair, split peaks included
        rows, member = np.asarray(sh["peak_id"], np.int64), np.asarray(sh["clique_id"])
    else:
        rows, member = np.arange(len(pk["clique_id"])), pk["clique_id"]
    order = np.lexsort((-pk["max_intensity"][rows], member))  # brightest member first
    first = order[np.r_[True, member[order][1:] != member[order][:-1]]] \
        if order.shape[0] else order
    first = first[member[first] >= 0]
    brightest = np.full(n, -1, np.int64)
    brightest[member[first]] = rows[first]
    imax = np.where(brightest >= 0, pk["max_intensity"][brightest], 0.0)
    omega = cl.get(rot, np.full(n, np.nan)) if rot else np.full(n, np.nan)
    period = _period(data.get("trajectory", ""), rot)
    near = (lambda o, c: o) if period is None else (  # o within half a turn of c
        lambda o, c: c + np.mod(o - c + period / 2, period) - period / 2)
    imax_o = np.where(brightest >= 0, near(omega_of[pk["point_id"][brightest]], omega),
                      np.nan)
    ok = member >= 0
    bbox = {}
    for name, key, fn, fill in (("Min_s", "bb_s0", np.minimum, np.iinfo(np.int64).max),
                                ("Max_s", "bb_s1", np.maximum, -1),
                                ("Min_f", "bb_f0", np.minimum, np.iinfo(np.int64).max),
                                ("Max_f", "bb_f1", np.maximum, -1)):
        out = np.full(n, fill, np.int64)
        fn.at(out, member[ok], pk[key][rows[ok]].astype(np.int64))
        bbox[name] = out
    member_o = near(omega_of[pk["point_id"][rows[ok]]], omega[member[ok]])
    lo, hi = np.full(n, np.inf), np.full(n, -np.inf)
    np.fmin.at(lo, member[ok], member_o)
    np.fmax.at(hi, member[ok], member_o)
    lo[~np.isfinite(lo)], hi[~np.isfinite(hi)] = np.nan, np.nan
    onfirst, onlast = _on_ends(omega_of, lo, hi, period, cl, rot is not None)
    return {
        "sc": s, "fc": f, "omega": omega, "Number_of_pixels": cl["npx"],
        "avg_intensity": avg, "s_raw": s, "f_raw": f, "sigs": sigs, "sigf": sigf,
        "covsf": covsf, "sigo": np.zeros(n), "covso": np.zeros(n), "covfo": np.zeros(n),
        "sum_intensity": cl["sum_intensity"], "sum_intensity^2": cl["sum_intensity"] ** 2,
        "IMax_int": imax, "IMax_s": np.zeros(n), "IMax_f": np.zeros(n), "IMax_o": imax_o,
        **bbox, "Min_o": lo, "Max_o": hi, "dety": -f, "detz": s,
        "onfirst": onfirst, "onlast": onlast, "spot3d_id": cl["clique_id"],
        **{m: cl[m] for m in other_motors(data)},
    }


def other_motors(data: dict[str, Any]) -> list[str]:
    """The scan's motors besides the rotation whose clique centroids the flt carries
    (a dty x omega scan's `dty`: ImageD11's scanning 3DXRD keys on it), in the
    points table's order."""
    names = [k[len("motors/"):] for k in data["points"] if k.startswith("motors/")]
    return [m for m in names if m != data.get("omega", "omega") and m in data["cliques"]
            and m not in FLT_COLUMNS and m != "fit_intensity"]


def _period(trajectory: str, rot: str | None) -> float | None:
    """The rotation motor's period if the trajectory (JSON) wraps it, else None."""
    try:
        traj = json.loads(trajectory) if trajectory and rot else {}
    except ValueError:
        traj = {}
    traj = traj if isinstance(traj, dict) else {}
    period = (traj.get("period") or {}).get(rot)
    if period is None and traj.get("wrap") and traj.get("fast", "omega") == rot:
        period = TURN
    return float(period) if period else None


def _on_ends(omega_of: np.ndarray, lo: np.ndarray, hi: np.ndarray, period: float | None,
             cl: dict[str, np.ndarray], has_omega: bool) -> tuple[np.ndarray, np.ndarray]:
    """onfirst, onlast (0 / 1): a clique's least or largest member omega (lo, hi) is the
    scan's omega where it starts or ends (the high end first for a scan whose first
    pass or row runs downwards);
    0 where the scan wraps; by point without a rotation motor."""
    n = lo.shape[0]
    if not has_omega:
        npoints = omega_of.shape[0]
        return ((cl["first_point"] == 0).astype(np.int64),
                (cl["last_point"] == npoints - 1).astype(np.int64))
    known = omega_of[np.isfinite(omega_of)]
    if period is not None or not known.shape[0]:
        return np.zeros(n, np.int64), np.zeros(n, np.int64)
    with np.errstate(invalid="ignore"):
        at_lo, at_hi = lo <= known.min(), hi >= known.max()
    steps = np.diff(known)
    down = bool(steps[steps != 0][:1].sum() < 0)  # as the first move runs (pass, row)
    return ((at_hi if down else at_lo).astype(np.int64),
            (at_lo if down else at_hi).astype(np.int64))


def _flt(data: dict[str, Any], shape, itype, output: Path) -> int:
    cols = flt_columns(data)
    fit = data["cliques"].get("fit_intensity")
    names = FLT_COLUMNS + tuple(other_motors(data)) \
        + ("fit_intensity",) * bool(fit is not None and np.isfinite(fit).any())
    cols["fit_intensity"] = fit
    fmt = "  ".join("%.0f" if c in _INTS else "%.6f" for c in names)
    table = np.column_stack([np.asarray(cols[c], np.float64) for c in names]) \
        if len(cols["sc"]) else np.empty((0, len(names)))
    with open(output, "w") as out:
        out.write(f"# peakstream_detector = {data['detector']}\n")
        out.write("#  " + "  ".join(names) + "\n")
        np.savetxt(out, table, fmt=fmt)
    return table.shape[0]


def _frames(data: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    nnz = np.asarray(data["sparse"]["nnz"], np.int64)
    return nnz, np.r_[0, np.cumsum(nnz)]


def _status(data: dict[str, Any]) -> np.ndarray:
    """Each frame's point status (0 ok, 1 missing, 2 bad): a replay of the export leaves
    the points that were not ok out (missing again), not empty frames that are ok."""
    return np.asarray(data["points"]["status"], np.uint8)


def _half_steps(omega: np.ndarray) -> np.ndarray:
    """Half a frame's rotation step, per point: half the smaller step to its neighbours
    (per point index, over the points whose omega is known; a missing point's NaN stays
    its own). The smaller one, because a neighbour across a break is not a step: the
    end of an interlaced pass and the start of the next, a snake's turn (the same omega
    twice), a grid row's return, a 360 -> 0 wrap (np.gradient averaged those in)."""
    half = np.full(omega.shape, np.nan)
    known = np.flatnonzero(np.isfinite(omega))
    if known.shape[0] > 1:
        step = np.abs(np.diff(omega[known])) / np.diff(known)
        step[step == 0] = np.nan  # a snake's turn: no step
        left, right = np.r_[np.nan, step], np.r_[step, np.nan]
        half[known] = np.nan_to_num(np.fmin(left, right), nan=0.0) / 2
    elif known.shape[0] == 1:
        half[known] = 0.0
    return half


def _sparse(data: dict[str, Any], shape, itype, output: Path) -> int:
    sp, pts = data["sparse"], data["points"]
    nnz, _ = _frames(data)
    with h5py.File(output, "w-") as f:
        g = f.create_group("1.1")
        opts = {"chunks": True, "compression": "gzip"} if sp["row"].shape[0] else {}
        g.create_dataset("row", data=sp["row"].astype(np.uint16), **opts)
        g.create_dataset("col", data=sp["col"].astype(np.uint16), **opts)
        intensity = g.create_dataset("intensity", data=sp["intensity"].astype(np.float32),
                                     **opts)
        # itype: the intensity's dtype as written (float32: corrected, normalised values),
        # not the detector's (ImageD11 makes dense frames of itype from it)
        g.attrs.update(itype=intensity.dtype.name, nframes=nnz.shape[0], shape0=shape[0],
                       shape1=shape[1])
        if data.get("trajectory"):  # replayed with it (a 360 wrap, a snake: not a sweep)
            g.attrs["peakstream_trajectory"] = data["trajectory"]
        g.create_dataset("frame", data=np.repeat(np.arange(nnz.shape[0], dtype=np.uint32),
                                                 nnz), **opts)
        g.create_dataset("nnz", data=nnz)
        g.create_dataset("peakstream_status", data=_status(data))
        g.attrs["peakstream_detector"] = data["detector"]  # a config may name it
        if data.get("normalised"):  # a replay's normalise node must not scale them again
            g.attrs[NORMALISED_KEY] = json.dumps(data["normalised"])
        shares = data.get("shares") or {}
        if len(shares.get("peak_id", ())) and (np.asarray(shares["share"]) < 1).any():
            for key in ("peak_id", "clique_id", "share"):  # 2D peaks split between cliques
                g.create_dataset(f"shares/{key}", data=np.asarray(shares[key]))
        for key, values in pts.items():
            if key.startswith("motors/"):
                name = key[len("motors/"):]
                rot = name == data["omega"]  # ImageD11's omega
                g.create_dataset(f"measurement/{'rot_center' if rot else name}",
                                 data=np.asarray(values, np.float64))
    return int(nnz.shape[0])


def _framecache(data: dict[str, Any], shape, itype, output: Path) -> int:
    sp, pts = data["sparse"], data["points"]
    nnz, ptr = _frames(data)
    arrays: dict[str, np.ndarray] = {"shape": np.array(shape, np.int64),
                                     "nframes": np.array(nnz.shape[0]),
                                     "dtype": np.array("float32"),
                                     "peakstream_status": _status(data),
                                     "peakstream_detector": np.array(data["detector"])}
    if data.get("normalised"):  # as in `sparse`
        arrays[NORMALISED_KEY] = np.array(json.dumps(data["normalised"]))
    for i in range(nnz.shape[0]):
        s = slice(int(ptr[i]), int(ptr[i + 1]))
        arrays[f"{i}_row"] = sp["row"][s].astype(np.uint16)
        arrays[f"{i}_col"] = sp["col"][s].astype(np.uint16)
        arrays[f"{i}_data"] = sp["intensity"][s].astype(np.float32)
    omega = pts.get(f"motors/{data['omega']}") if data["omega"] else None
    if omega is not None and len(omega):
        omega = np.asarray(omega, np.float64)
        half = _half_steps(omega)
        arrays["omega"] = np.column_stack([omega - half, omega + half])
    with open(output, "xb") as out:
        np.savez_compressed(out, **arrays)
    return int(nnz.shape[0])
