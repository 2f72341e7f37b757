"""What every file reader shares: value specs for motors and counters, scan ids,
frame checks and the point that carries a read error.

A value spec says where the value of a motor or counter (or the point time)
comes from, for each frame of a recording:

    0.5                     a constant
    range:START,STEP        START + STEP * point_id
    list:V0,V1,...          one value per point, in point_id order
    file:PATH               a text file (one value a line) or a .npy array, per point
    header:KEY              the frame's own header (EDF, CBF mini-header, TIFF tags)
    /path or FILE::/path    an HDF5 dataset, one value per frame (a scalar: a constant);
    rel/path                the same path under each images scan group (/1.1/ + rel/path)

Several HDF5 sources separated by commas are concatenated, in order.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stream.core.derive import derive_trajectory
from stream.core.messages import DTYPES, DetectorInfo, Point, Start

SAFE_ID = re.compile(r"[^A-Za-z0-9._-]+")
log = logging.getLogger(__name__)
DEFAULT_TRAJECTORY = {"kind": "sweep", "fast": "omega"}
SPEC_PREFIXES = ("range:", "list:", "file:", "header:")


@dataclass
class ValueSpec:
    """Where one motor's (or counter's) values come from (see the module docstring)."""

    name: str
    text: str
    kind: str  # const | range | values (per point) | header | hdf5 | frames (per frame)
    const: float = math.nan
    start: float = 0.0
    step: float = 0.0
    values: np.ndarray | None = None
    key: str = ""
    sources: list[tuple[str | None, str]] = field(default_factory=list)
    # frames the recording holds no value for (a scan interrupted before its counters
    # were written): their points are bad with `gap_reason`
    gaps: np.ndarray | None = None
    gap_reason: str = ""

    def at(self, point_id: int, header: Mapping[str, Any] | None = None,
           frame: int | None = None) -> float:
        """The value at a point; `frame` indexes resolved HDF5 values (default point_id)."""
        if self.kind == "const":
            return self.const
        if self.kind == "range":
            return self.start + self.step * point_id
        if self.kind == "header":
            return header_value(header or {}, self.key)
        index = point_id if frame is None or self.kind == "values" else frame
        if self.values is None:
            raise ValueError(f"{self.name}={self.text}: values were not read")
        if not 0 <= index < len(self.values):
            raise ValueError(f"{self.name}={self.text}: no value for point {point_id} "
                             f"({len(self.values)} values)")
        if self.gaps is not None and self.gaps[index]:
            raise ValueError(f"{self.name}={self.text}: the recording has no value for this "
                             f"frame ({self.gap_reason})")
        return float(self.values[index])


def parse_spec(name: str, spec: Any) -> ValueSpec:
    """A ValueSpec from its text (or, from Python, a number or a sequence of numbers)."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"motor or counter name {name!r} must be an identifier")
    if isinstance(spec, int | float) and not isinstance(spec, bool):
        return ValueSpec(name, repr(spec), "const", const=float(spec))
    if not isinstance(spec, str):
        values = np.asarray(spec, dtype=np.float64)
        if values.ndim != 1:
            raise ValueError(f"{name}: values must be one number per point")
        return ValueSpec(name, f"<{len(values)} values>", "values", values=values)
    text = spec.strip()
    where = f"{name}={text}"
    try:
        return ValueSpec(name, text, "const", const=float(text))
    except ValueError:
        pass
    if text.startswith("range:"):
        parts = text[6:].split(",")
        try:
            start, step = (float(p) for p in parts)
        except ValueError:
            raise ValueError(f"{where}: a range is range:START,STEP") from None
        return ValueSpec(name, text, "range", start=start, step=step)
    if text.startswith("list:"):
        try:
            values = np.array([float(v) for v in text[5:].split(",") if v.strip()])
        except ValueError as exc:
            raise ValueError(f"{where}: a list is list:V0,V1,... of numbers ({exc})") from None
        return ValueSpec(name, text, "values", values=values)
    if text.startswith("file:"):
        return ValueSpec(name, text, "values", values=_values_file(text[5:], where))
    if text.startswith("header:"):
        if not text[7:]:
            raise ValueError(f"{where}: give the header key, e.g. header:omega")
        return ValueSpec(name, text, "header", key=text[7:])
    if not text:
        raise ValueError(f"{name}: empty value spec")
    sources: list[tuple[str | None, str]] = []
    for part in text.split(","):
        file, sep, path = part.strip().rpartition("::")
        sources.append((file if sep else None, path))
    return ValueSpec(name, text, "hdf5", sources=sources)


def parse_specs(specs: Mapping[str, Any] | Iterable[str] | None) -> dict[str, ValueSpec]:
    """{name: spec} or ["name=spec", ...] (the command line's form) into ValueSpecs."""
    if specs is None:
        return {}
    if isinstance(specs, Mapping):
        items = list(specs.items())
    else:
        items = []
        for s in specs:
            name, sep, spec = str(s).partition("=")
            if not sep:
                raise ValueError(f"{s!r}: give NAME=SPEC, e.g. omega=range:0,0.25")
            items.append((name.strip(), spec))
    out: dict[str, ValueSpec] = {}
    for name, spec in items:
        if name in out:
            raise ValueError(f"{name}: given twice")
        out[name] = parse_spec(name, spec)
    return out


def all_specs(motors: Mapping[str, ValueSpec], counters: Mapping[str, ValueSpec],
              time: ValueSpec | None) -> list[ValueSpec]:
    """Every spec of a replay (a motor and a counter may share a name)."""
    return [*motors.values(), *counters.values(), *([time] if time else [])]


def check_counts(specs: Iterable[ValueSpec], npoints: int) -> None:
    """Lists and files must hold a value for every point."""
    for spec in specs:
        if spec.kind == "values" and len(spec.values) < npoints:
            raise ValueError(f"{spec.name}={spec.text}: {len(spec.values)} values for "
                             f"{npoints} points")


def _values_file(path: str, where: str) -> np.ndarray:
    try:
        if path.endswith(".npy"):
            values = np.load(path, allow_pickle=False)
        else:
            values = np.loadtxt(path, dtype=np.float64, ndmin=1)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{where}: cannot read {path}: {exc}") from None
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"{where}: {path} must hold one value per point, "
                         f"has shape {values.shape}")
    return values


_MINI_CBF = re.compile(r"^#\s*([A-Za-z_][\w.-]*)[\s:=]+([-+0-9.eE]+)", re.M)


# ESRF EDF headers (SPEC, Bliss's EDF saver) list motors and counters as pairs of
# keys: names in one, values in the other, in the same order
SPEC_PAIRS = (("motor_mne", "motor_pos"), ("counter_mne", "counter_pos"))
# an EDF header's keys that describe the file, not the point
EDF_LAYOUT = {"EDF_DataBlockID", "EDF_BinarySize", "EDF_HeaderSize", "ByteOrder", "DataType",
              "Dim_1", "Dim_2", "Dim_3", "Image", "HeaderID", "Size"}


def header_value(header: Mapping[str, Any], key: str) -> float:
    """A number from a frame header: the key itself, a name of the SPEC-style
    `motor_mne` / `motor_pos` (or `counter_mne` / `counter_pos`) pairs of an ESRF
    EDF header, or a line '# key value [unit]' of a CBF mini-header (Pilatus /
    Eiger: Start_angle, Flux, ...)."""
    value = header.get(key)
    if value is None:
        for names, values in SPEC_PAIRS:
            mne, pos = str(header.get(names, "")).split(), str(header.get(values, "")).split()
            if key in mne and mne.index(key) < len(pos):
                value = pos[mne.index(key)]
                break
    if value is None:
        contents = header.get("_array_data.header_contents", "")
        for k, v in _MINI_CBF.findall(str(contents)):
            if k == key:
                value = v
                break
    if value is None:
        raise ValueError(f"header has no key {key!r}{header_names(header)}")
    tokens = str(value).split()
    numbers = [t for t in tokens if _is_number(t)]
    if len(numbers) > 1:  # a list (SPEC's motor_pos): its first number would be read
        pair = next((mne for mne, pos in SPEC_PAIRS if pos == key), None)
        hint = (f"; name one of {pair} instead, e.g. header:"
                f"{str(header.get(pair, '')).split()[0]}" if pair and header.get(pair) else "")
        raise ValueError(f"header key {key!r} holds {len(numbers)} numbers, not one{hint}")
    try:
        return float(tokens[0])
    except (ValueError, IndexError):
        raise ValueError(f"header key {key!r} is {value!r}, not a number") from None


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def header_names(header: Mapping[str, Any], most: int = 24) -> str:
    """' (it has: ...)': the names a header:KEY could take in this header."""
    names = [k for k in header if k not in {n for pair in SPEC_PAIRS for n in pair}
             and k not in EDF_LAYOUT and not str(k).startswith("_array_data")]
    for mne, _ in SPEC_PAIRS:
        names += str(header.get(mne, "")).split()
    names += [k for k, _ in _MINI_CBF.findall(str(header.get("_array_data.header_contents",
                                                              "")))]
    return f" (it has: {listed(names, most)})" if names else ""


def listed(names: list, most: int) -> str:
    """'a, b, c' or 'a, b, ... (12 in all)': names for a message, at most `most`."""
    more = f", ... ({len(names)} in all)" if len(names) > most else ""
    return ", ".join(map(str, names[:most])) + more


# ------------------------------------------------------------------ start / points


def scan_id_from(path: str | os.PathLike, suffix: str = "") -> str:
    """A safe scan_id from a file name (pattern characters and the extension dropped)."""
    name = Path(os.fspath(path).split("::")[0]).name
    name = re.split(r"[%*?\[]", name)[0] if re.search(r"[%*?\[]", name) else name
    stem = name.split(".")[0] if "." in name else name
    sid = SAFE_ID.sub("_", stem + suffix).strip("._-") or "replay"
    return sid[:200]


def detector_name(name: str) -> str:
    """An identifier for a detector group (eiger, frelon3, ...)."""
    ident = re.sub(r"\W", "_", name)
    return ident if ident.isidentifier() else f"det_{ident}"


def native(arr: np.ndarray) -> np.ndarray:
    """A C-contiguous array in native byte order (the wire carries dtype names only)."""
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("="))


def check_dtype(dtype: np.dtype, where: str) -> str:
    name = np.dtype(dtype).name
    if name not in DTYPES:
        raise ValueError(f"{where}: frames of {name} are not supported "
                         f"(supported: {', '.join(DTYPES)})")
    return name


def select(nframes: int, first: int | None, last: int | None, what: str) -> tuple[int, int]:
    """The [first, last] frame range to replay (inclusive), checked."""
    lo = 0 if first is None else first
    hi = nframes - 1 if last is None else last
    if not 0 <= lo <= hi < nframes:
        raise ValueError(f"{what}: frames --first {lo} --last {hi} are outside "
                         f"0..{nframes - 1}")
    return lo, hi


def make_start(scan_id: str, detector: str, shape: tuple[int, int], dtype: str,
               motors: Iterable[str], counters: Iterable[str], npoints: int | None,
               trajectory: Mapping[str, Any] | None, meta: Mapping[str, Any],
               first: int = 0, headers: Mapping[str, np.ndarray] | None = None) -> Start:
    """The start message of a recording. Without a `trajectory` the one its motor
    positions show (`scan_trajectory`); meta["trajectory_from"] says which."""
    specs = motors if isinstance(motors, Mapping) else {}
    traj, how = scan_trajectory(specs, npoints, trajectory, first, headers, scan_id)
    return Start(scan_id, {detector: DetectorInfo((int(shape[0]), int(shape[1])), dtype)},
                 list(motors), list(counters), npoints, traj,
                 {**meta, "trajectory_from": how})


def scan_trajectory(motors: Mapping[str, ValueSpec], npoints: int | None,
                    given: Mapping[str, Any] | None, first: int = 0,
                    headers: Mapping[str, np.ndarray] | None = None, what: str = "scan"
                    ) -> tuple[dict[str, Any], str]:
    """The trajectory map of a recording and where it comes from: `given` (the command
    line or the config), else derived from the motor positions of its points (`first`:
    the first frame replayed; `headers`: the values of header:KEY motors), else a sweep.
    A guess that fits no regular kind (free) is logged as a warning with the override."""
    if given and given.get("kind") != "interlaced":
        return dict(given), "given"
    values: dict[str, np.ndarray] = {}
    if npoints:
        for name, spec in motors.items():
            if spec.kind == "header":
                if headers is None or name not in headers:
                    continue
                values[name] = np.asarray(headers[name], float)
            else:
                values[name] = np.array([math.nan if spec.gaps is not None and spec.gaps[
                    first + p] else spec.at(p, None, first + p) for p in range(npoints)])
    if given:
        _interlace_as_recorded(dict(given), values, what)
        return dict(given), "given"
    if not values or npoints is None or npoints < 3:
        return dict(DEFAULT_TRAJECTORY), "default"
    if not any(np.ptp(v[np.isfinite(v)]) > 0 for v in values.values() if np.isfinite(v).any()):
        log.warning("%s: the motor(s) %s do not move (%s over the %d points): nothing places "
                    "the points but their order; is that the motor that turns?", what,
                    ", ".join(values), ", ".join(f"{k} {v[np.isfinite(v)][0]:g}" if
                                                 np.isfinite(v).any() else f"{k} none"
                                                 for k, v in values.items()), npoints)
    traj = derive_trajectory(values)
    if traj["kind"] == "free" or not np.all([np.isfinite(v).any() for v in values.values()]):
        log.warning("%s: the motor positions fit no regular scan; linking by position "
                    "(%s). If that is wrong, give --trajectory KIND [--iflip] [--nfast N] "
                    "[--wrap] (or [replay] trajectory in the config)", what, traj)
    return traj, "derived from the motors"


def _interlace_as_recorded(given: dict[str, Any], values: Mapping[str, np.ndarray],
                          what: str) -> None:
    """Warn when an interlaced map given for a recording says another direction of
    the second pass (iflip) or another side (offset) than its motor positions: the
    links would join points 1.5 steps apart and split every 3D peak."""
    fast = given.get("fast", "omega")
    if fast not in values or len(values[fast]) < 4:
        return
    found = derive_trajectory({fast: values[fast]})
    keys = {"iflip": False, "offset": 0.5}
    if found["kind"] != "interlaced" or all(
            given.get(k, v) == found.get(k, v) for k, v in keys.items()):
        return
    log.warning("%s: the trajectory given says iflip %s, offset %s, the positions of %s "
                "say iflip %s, offset %s; the links follow the trajectory given (give "
                "[replay] trajectory = {kind = \"interlaced\", iflip = %s, offset = %s} "
                "or no --trajectory to follow the positions)", what,
                *(str(given.get(k, v)).lower() for k, v in keys.items()), fast,
                *(str(found.get(k, v)).lower() for k, v in keys.items()),
                *(str(found.get(k, v)).lower() for k, v in keys.items()))


def error_point(scan_id: str, point_id: int, where: str, reason: Any) -> Point:
    """A point whose frame could not be read: the runner records it bad, with the reason."""
    if isinstance(reason, BaseException):
        reason = f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__
    return Point(scan_id, point_id, math.nan, extra={"error": f"{where}: {reason}"})


def point_values(specs: Mapping[str, ValueSpec], point_id: int,
                 header: Mapping[str, Any] | None = None,
                 frame: int | None = None) -> dict[str, float]:
    return {name: spec.at(point_id, header, frame) for name, spec in specs.items()}
