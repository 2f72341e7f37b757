"""Recorded scans of every kind, replayed as the Start + Point stream of a live scan.

`detect_format(path)` tells a file's format from its content; `default_images(inputs)`
finds the frames of Bliss master and Lima files given without --images (`bliss`), and
`frame_inputs(inputs)` gives them as FILE::/path stacks (stats, diffmap);
`recordings(inputs)` groups the command line's inputs into scans (image files and
`FILE::/path` stacks continue one scan, every other file is a scan of its own);
`open_recording(inputs)` gives the start message and an iterator over the points of
one scan. Readers:

| format | reader | frames |
|---|---|---|
| simulate   | `..simfile.read_scan`            | dense (the simulator's files) |
| peakstream | `ours.read_peakstream`           | sparse (our own output) |
| imaged11   | `imaged11.read_imaged11_sparse`  | sparse (ImageD11 sparse HDF5) |
| framecache | `framecache.read_framecache`     | sparse (hexrd .npz) |
| hdf5       | `hdf5.read_hdf5_stack`           | dense (Bliss / Lima / NeXus stacks, --images) |
| fabio      | `fabio_series.read_fabio_series` | dense (EDF / CBF / TIFF series) |

A frame that cannot be read becomes a point with `extra["error"]` naming the file
and the frame (recorded bad, the replay goes on); an input that cannot be used at
all raises OSError or ValueError with the reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import h5py

from stream.core.messages import Point, Start
from stream.sources.files.common import (
    ValueSpec,
    all_specs,
    check_counts,
    parse_spec,
    parse_specs,
    point_values,
)

FORMATS = ("simulate", "peakstream", "imaged11", "hdf5", "fabio", "framecache")
IMAGE_FORMATS = ("hdf5", "fabio")  # several inputs of these continue one scan
SPARSE_FORMATS = ("peakstream", "imaged11", "framecache")  # frames already thresholded
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"

__all__ = ["FORMATS", "default_images", "detect_format", "frame_inputs", "open_recording",
           "recordings"]


def detect_format(path: str | os.PathLike) -> str:
    """The format of one input, from the file's content (see FORMATS).

    `FILE::/path` is an HDF5 image stack; a pattern (`data_%04d.edf`, `*.cbf`) is
    judged by its first file. OSError if there is no such file, ValueError if the
    content is no format peakstream reads.
    """
    text = os.fspath(path)
    if "::" in text:
        return "hdf5"
    from stream.sources.files.fabio_series import expand, is_pattern

    if is_pattern(text):  # judged by its first file, or the next ones if that is damaged
        files = [s for s in expand([text], warn=False)[0] if s is not None]
        try:
            return detect_format(files[0])
        except ValueError:
            for f in files[1:4]:
                with contextlib.suppress(ValueError, OSError):
                    return detect_format(f)
            raise
    if not os.path.exists(text):
        raise FileNotFoundError(f"{text}: no such file")
    if os.path.isdir(text):
        raise ValueError(f"{text}: is a directory, not a recording")
    with open(text, "rb") as fh:
        head = fh.read(4096)
    if _is_hdf5(text, head):
        return _hdf5_kind(text)
    from stream.sources.files.framecache import is_framecache

    if head.startswith(b"PK") and is_framecache(text):
        return "framecache"
    if _is_image_file(text, head):
        return "fabio"
    raise ValueError(f"{text}: not a recognised recording (simulator or peakstream HDF5, "
                     f"ImageD11 sparse, HDF5 image stack, hexrd frame-cache, EDF, CBF, TIFF "
                     f"or another format fabio reads)")


def _is_hdf5(path: str, head: bytes) -> bool:
    if head.startswith(HDF5_MAGIC):
        return True
    try:  # a user block moves the signature to 512, 1024, ...
        return bool(h5py.is_hdf5(path))
    except OSError:
        return False


def _hdf5_kind(path: str) -> str:
    from stream.sources.files.hdf5 import open_file
    from stream.sources.files.ours import is_ours

    with open_file(path) as f:
        entry = f.get("entry")
        if isinstance(entry, h5py.Group) and entry.attrs.get("creator") == "peakstream.simulate":
            return "simulate"
        if is_ours(f):
            return "peakstream"
        if _imaged11_group(f) is not None:
            return "imaged11"
    return "hdf5"


def _imaged11_group(f: h5py.Group, depth: int = 2) -> str | None:
    """A group with row / col / intensity / nnz datasets and shape0 / shape1 attrs."""
    for g in f.values():
        if not isinstance(g, h5py.Group):
            continue
        if {"row", "col", "intensity", "nnz"} <= set(g) and \
                {"shape0", "shape1"} <= set(g.attrs):
            return g.name
        if depth > 1:
            inner = _imaged11_group(g, depth - 1)
            if inner is not None:
                return inner
    return None


def _is_image_file(path: str, head: bytes) -> bool:
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return True  # TIFF, BigTIFF
    if head.lstrip()[:1] == b"{" and b"}" in head and (b"Dim_1" in head or b"EDF_" in head):
        return True  # EDF
    if head.startswith(b"###CBF") or b"_array_data" in head:
        return True  # CBF
    import fabio

    try:  # any other format fabio knows (mar345, MarCCD, ADSC, Bruker ...)
        with fabio.open(path) as img:
            return img.data is not None
    except Exception:
        return False


def default_images(inputs: Iterable[str], format: str = "auto",
                   images: Iterable[str] = ()) -> tuple[list[str], str]:
    """The --images of a replay and a line saying what was taken ('' if nothing was).

    `images` when given. Without, when every input is an HDF5 file of no other
    layout (no FILE::/path, no pattern) whose scan entries hold one detector's
    frames (a Bliss master file, `bliss.master_images`): that path relative to
    the entries, `measurement/eiger`, so that each entry is a scan as with
    `--images measurement/eiger`; or that holds no scan entry but one stack of
    frames (a Lima file, `bliss.file_images`): its path, `/entry_0000/measurement/data`,
    the inputs' frames one scan as with `--images /entry_0000/measurement/data`.
    ValueError (naming the candidates) when the entries hold the frames of more
    than one detector, or a file several stacks. Otherwise none: such inputs then
    fail in `recordings`, which asks for --images.
    """
    images, inputs = list(images), [os.fspath(x) for x in inputs]
    if images or not inputs or format not in ("auto", "hdf5"):
        return images, ""
    from stream.sources.files.bliss import frames_path
    from stream.sources.files.hdf5 import open_file

    found: dict[str, list[str]] = {}
    for text in inputs:
        if "::" in text or not os.path.isfile(text) or \
                (format == "auto" and detect_format(text) != "hdf5"):
            return [], ""
        with open_file(text) as f:
            path = frames_path(f)
        if path is None:
            return [], ""
        found.setdefault(path, []).append(text)
    if len(found) > 1:
        raise ValueError("the inputs hold the frames of different detectors: "
                         + "; ".join(f"{path} in {', '.join(files)}"
                                     for path, files in found.items())
                         + ": replay them one by one, or name the frames with --images")
    path = next(iter(found))
    where = "" if path.startswith("/") else " of each scan entry"
    return [path], (f"{', '.join(inputs)}: no --images given: replaying {path}{where} "
                    f"(as --images {path})")


def frame_inputs(inputs: Iterable[str], format: str = "auto",
                 readable: Callable[[str], bool] | None = None) -> tuple[list[str], list[str]]:
    """The inputs with each HDF5 file of no other layout (`detect_format` "hdf5", given
    without FILE::/path) replaced by the FILE::/path stacks of the frames a replay takes
    from it (`bliss.frame_stacks`: a Lima file's, each scan entry's of a Bliss master
    file), for the commands that take inputs as one run of frames (stats, diffmap); and
    a line per file saying which it took. A file of several stacks is a ValueError naming
    them, unless `readable(name)` (another reader takes it as it is)."""
    from stream.sources.files.bliss import frame_stacks
    from stream.sources.files.hdf5 import open_file

    out, said = [], []
    for name in map(os.fspath, inputs):
        if format not in ("auto", "hdf5") or "::" in name or not os.path.isfile(name) or \
                (format == "auto" and detect_format(name) != "hdf5"):
            out.append(name)
            continue
        try:
            with open_file(name) as f:
                stacks = frame_stacks(f)
        except ValueError:
            if readable is None or not readable(name):
                raise
            stacks = []
        if stacks:
            said.append(f"{name}: no FILE::/path given: taking {', '.join(stacks)}")
        out += [f"{name}::{path}" for path in stacks] or [name]
    return out, said


def recordings(inputs: Iterable[str], format: str = "auto",
               images: Iterable[str] = ()) -> list[list[str]]:
    """The inputs grouped into scans: consecutive image inputs (EDF / CBF / TIFF files
    and patterns, FILE::/path stacks, HDF5 files the --images paths refer to) are one
    scan; every other file is a scan of its own."""
    from stream.sources.files.fabio_series import expand, is_pattern

    groups: list[list[str]] = []
    inputs = list(inputs)
    if list(images):
        return [inputs]  # the HDF5 files that bare --images paths refer to: one scan
    for text in inputs:
        kind = format if format != "auto" else detect_format(text)
        if kind == "hdf5" and "::" not in text:
            _need_images(text)
        if kind not in IMAGE_FORMATS and is_pattern(text):  # a glob of whole scans
            groups.extend([kind, f] for f in expand([text], warn=False)[0] if f is not None)
            continue
        if kind in IMAGE_FORMATS and groups and groups[-1][0] in IMAGE_FORMATS \
                and groups[-1][0] == kind:
            groups[-1].append(text)
        else:
            groups.append([kind, text])
    return [g[1:] for g in groups]


def _need_images(path: str) -> None:
    from stream.sources.files.hdf5 import image_stacks, open_file

    with open_file(path) as f:
        stacks = image_stacks(f)
    hint = (f"; its 3D datasets: {', '.join(stacks)}" if stacks
            else "; it holds no 3D dataset")
    raise ValueError(f"{path}: an HDF5 file of no known recording layout: name the frames "
                     f"with --images FILE::/path/to/dataset (or --images /path){hint}")


def open_recording(inputs: list[str], *, format: str = "auto", images: Iterable[str] = (),
                   motors: Mapping[str, Any] | Iterable[str] | None = None,
                   counters: Mapping[str, Any] | Iterable[str] | None = None,
                   time: Any = None, scan_id: str | None = None, detector: str | None = None,
                   first: int | None = None, last: int | None = None,
                   trajectory: dict | None = None) -> tuple[Start, Iterator[Point]]:
    """Start message and points of one recorded scan.

    `images`: FILE::/path specs of HDF5 frames (a bare /path is looked for in the
    HDF5 `inputs`). `motors`, `counters`: {name: spec} or ["name=spec"] (see
    `common.parse_spec`); `time`: a spec for the point time. `first`, `last`: the
    file numbers of a `%d` pattern, otherwise the first and last frame (0-based) to
    replay; point ids count from `first`. `trajectory`: replaces the recorded one.
    """
    inputs, images = [os.fspath(x) for x in inputs], list(images)
    if not inputs and not images:
        raise ValueError("nothing to replay: give input files or --images FILE::/path")
    kind = recording_format(inputs, format, images)
    mspecs, cspecs = parse_specs(motors), parse_specs(counters)
    tspec = parse_spec("time", time) if time is not None else None
    common = dict(scan_id=scan_id, detector=detector, first=first, last=last,
                  trajectory=trajectory)
    if kind in ("hdf5", "fabio", "framecache"):
        values = dict(motors=mspecs, counters=cspecs, time=tspec, **common)
        if kind == "hdf5":
            from stream.sources.files.hdf5 import read_hdf5_stack

            stacks = [x for x in inputs if "::" in x] + images
            return read_hdf5_stack(stacks, files=[x for x in inputs if "::" not in x],
                                   **values)
        if kind == "fabio":
            from stream.sources.files.fabio_series import read_fabio_series

            return read_fabio_series(inputs, **values)
        from stream.sources.files.framecache import read_framecache

        return read_framecache(_one(inputs, kind), **values)
    path = _one(inputs, kind)
    if kind == "peakstream":
        from stream.sources.files.ours import read_peakstream

        start, points = read_peakstream(path, **common)
    elif kind == "imaged11":
        from stream.sources.files.imaged11 import read_imaged11_sparse

        omega = mspecs.get("omega")
        if omega is not None and omega.kind == "hdf5" and len(omega.sources) == 1 \
                and omega.sources[0][0] is None:  # a dataset of the sparse file's scan group
            del mspecs["omega"]
            omega = omega.sources[0][1]
        else:
            omega = None
        start, points = read_imaged11_sparse(path, scan_id=scan_id, omega=omega)
        start, points = _rest(start, points, common)
    else:
        from stream.sources.simulate.file import read_scan

        start, points = read_scan(path)
        start, points = _rest(start, points, common)
    return _override(start, points, mspecs, cspecs, tspec)


def recording_format(inputs: list[str], format: str = "auto", images: Iterable[str] = ()
                     ) -> str:
    """The format of one scan's inputs (`open_recording`'s arguments); ValueError if it
    is not one we read or the inputs are of several."""
    if format != "auto" and format not in FORMATS:
        raise ValueError(f"format {format!r} is not one of auto, {', '.join(FORMATS)}")
    if list(images) or any("::" in x for x in inputs):
        if format not in ("auto", "hdf5"):
            raise ValueError(f"--images names HDF5 image stacks, not {format} frames")
        return "hdf5"  # plain inputs are the files that bare --images paths refer to
    kinds = {format if format != "auto" else detect_format(x) for x in inputs}
    if len(kinds) != 1:
        raise ValueError(f"the inputs are of several formats ({', '.join(sorted(kinds))}); "
                         f"replay them one by one")
    return kinds.pop()


def _one(inputs: list[str], kind: str) -> str:
    if len(inputs) != 1:
        raise ValueError(f"a {kind} file is a scan of its own; give one at a time "
                         f"(got {len(inputs)})")
    return inputs[0]


def _rest(start: Start, points: Iterator[Point], opts: dict) -> tuple[Start, Iterator[Point]]:
    """scan_id, trajectory and the first..last selection for readers that have no options."""
    from stream.sources.files.common import select

    lo, hi = 0, None
    if opts["first"] is not None or opts["last"] is not None:
        if start.npoints is None:
            raise ValueError(f"{start.scan_id}: --first/--last need a known number of points")
        lo, hi = select(start.npoints, opts["first"], opts["last"], start.scan_id)
    sid = opts["scan_id"] or start.scan_id
    npoints = start.npoints if hi is None else hi - lo + 1
    start = dataclasses.replace(start, scan_id=sid, npoints=npoints,
                                trajectory=dict(opts["trajectory"] or start.trajectory))

    def gen() -> Iterator[Point]:
        for p in points:
            if p.point_id < lo or (hi is not None and p.point_id > hi):
                continue
            yield dataclasses.replace(p, scan_id=sid, point_id=p.point_id - lo)

    return start, gen()


def _override(start: Start, points: Iterator[Point], motors: dict[str, ValueSpec],
              counters: dict[str, ValueSpec], time: ValueSpec | None
              ) -> tuple[Start, Iterator[Point]]:
    """Motor / counter / time values given on the command line replace the recorded ones."""
    every = all_specs(motors, counters, time)
    if not every:
        return start, points
    for spec in every:
        if spec.kind in ("hdf5", "header"):
            raise ValueError(f"{spec.name}={spec.text}: for a {start.meta.get('source', '')} "
                             f"recording give a range, a list, a file or a number")
    if start.npoints is not None:
        check_counts(every, start.npoints)
    start = dataclasses.replace(
        start, motors=start.motors + [m for m in motors if m not in start.motors],
        counters=start.counters + [c for c in counters if c not in start.counters])

    def gen() -> Iterator[Point]:
        for p in points:
            if "error" not in p.extra:
                p.motors.update(point_values(motors, p.point_id))
                p.counters.update(point_values(counters, p.point_id))
                if time is not None:
                    p.time = time.at(p.point_id)
            yield p

    return start, gen()
