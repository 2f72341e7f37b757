"""Bliss master and Lima files: the frames a replay (diffmap, stats) takes when no
--images (no FILE::/path) names them.

A Bliss master file holds one group per scan entry (/1.1, /2.1, ...: `BLISS_SCAN`),
its detector's frames in /N.1/measurement/<det>, most often a soft link (or a
virtual dataset) to /N.1/instrument/<det>/data, itself a link or a virtual
dataset into the Lima files. `entry_frames(entry)` groups an entry's 3D datasets
by the frames they are: one object reached through links, or virtual datasets
that map the same sources alike. `master_images(f)` gives the path, relative to
the entries, of the one detector's frames that the entries hold (its path under
measurement/ when there is one); None when no scan entry holds frames; a
ValueError listing the candidates when the entries hold the frames of several
detectors (or of one under different paths): then --images must say which.

A file of no scan entry (a Lima file, /entry_0000/measurement/data) is one stack
of frames: `file_images(f)` groups the 3D datasets of the whole file alike and
gives the one's absolute path (its measurement/ path), None when there is none,
a ValueError naming each when they are several. `frames_path(f)` is the one or
the other; `frame_stacks(f)` the absolute paths of the frames it holds, one per
scan entry of a master file.
"""

from __future__ import annotations

import re

import h5py

from stream.sources.files.common import listed

BLISS_SCAN = re.compile(r"\d+\.\d+")


def scan_entries(f: h5py.File) -> list[str]:
    """The scan entries of a file (N.M), in numeric order."""
    return sorted((k for k in f if BLISS_SCAN.fullmatch(k)),
                  key=lambda k: tuple(int(x) for x in k.split(".")))


def _sources(ds: h5py.Dataset) -> tuple:
    """What a virtual dataset maps: each source's file, dataset and both selections."""
    return tuple((vs.file_name, vs.dset_name, vs.src_space.encode(), vs.vspace.encode())
                 for vs in ds.virtual_sources())


def same_frames(a: h5py.Dataset, b: h5py.Dataset) -> bool:
    """Are two datasets the same frames: one object (reached through soft or external
    links), or virtual datasets of one shape and dtype mapping the same sources."""
    if a == b:
        return True
    return (a.is_virtual and b.is_virtual and (a.shape, a.dtype) == (b.shape, b.dtype)
            and _sources(a) == _sources(b))


def entry_frames(entry: h5py.Group) -> list[list[str]]:
    """The 3D datasets of a scan entry (paths relative to it, links followed; a link to
    nothing is passed over), grouped by the frames they are."""
    groups: list[tuple[h5py.Dataset, list[str]]] = []

    def visit(name: str, link: object) -> None:
        try:
            obj = entry.get(name)
        except (KeyError, OSError, RuntimeError, ValueError):  # a dangling external link
            return
        if not isinstance(obj, h5py.Dataset) or obj.ndim != 3:
            return
        for ds, paths in groups:
            if same_frames(ds, obj):
                paths.append(name)
                return
        groups.append((obj, [name]))

    entry.visititems_links(visit)
    return [paths for _, paths in groups]


def _chosen(paths: list[str]) -> str:
    """The path that names a group of links to the same frames: measurement/<det>."""
    under = [p for p in paths if p.startswith("measurement/")]
    return min(under or paths, key=lambda p: (p.count("/"), p))


def master_images(f: h5py.File) -> str | None:
    """The path (relative to the scan entries) of the frames every scan entry holding
    frames holds, see the module docstring; None if no scan entry holds frames."""
    found: dict[str, list[str]] = {}  # the path -> the entries with those frames
    for name in scan_entries(f):
        entry = f.get(name)
        if isinstance(entry, h5py.Group):
            for paths in entry_frames(entry):
                found.setdefault(_chosen(paths), []).append(name)
    if len(found) > 1:
        options = "; ".join(f"{path} (scan entries {listed(names, 6)})"
                            for path, names in found.items())
        raise ValueError(f"{f.filename}: its scan entries hold the frames of more than one "
                         f"detector: {options}; name the one to replay with --images "
                         f"{next(iter(found))} (one scan per entry that holds it) or "
                         f"--images FILE::/N.1/path (that scan alone)")
    return next(iter(found), None)


def file_images(f: h5py.File) -> str | None:
    """The absolute path of the frames a file of no scan entry holds (a Lima file's
    /entry_0000/measurement/data, links to it the same frames); None if it holds no 3D
    dataset; a ValueError naming each when it holds several stacks of frames."""
    found = ["/" + _chosen(paths) for paths in entry_frames(f)]
    if len(found) > 1:
        raise ValueError(f"{f.filename}: holds {len(found)} stacks of frames ("
                         f"{listed(found, 6)}): name the one to take as FILE::/path, e.g. "
                         f"{f.filename}::{found[0]}")
    return next(iter(found), None)


def frames_path(f: h5py.File) -> str | None:
    """The frames a file given without a path holds: relative to the scan entries of a
    Bliss master file (`master_images`), absolute in a file of no scan entry
    (`file_images`); None if it holds none."""
    return master_images(f) if scan_entries(f) else file_images(f)


def entries_holding(f: h5py.File, rel: str) -> list[str]:
    """The scan entries (N.M, in numeric order) that hold `rel`."""
    return [k for k in scan_entries(f) if rel in f[k]]


def frame_stacks(f: h5py.File) -> list[str]:
    """The absolute paths of the frames `frames_path` finds: one per scan entry that
    holds them in a Bliss master file, the one in a Lima file; [] if none."""
    path = frames_path(f)
    if path is None or path.startswith("/"):
        return [path] if path else []
    return [f"/{entry}/{path}" for entry in entries_holding(f, path)]
