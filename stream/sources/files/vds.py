"""The frames of a virtual dataset (a Bliss master over Lima files) that cannot be read:
a source file gone or cut short. Found before reading, so each such frame becomes a
bad point whose reason names the file, not HDF5's "insufficient elements"."""
from __future__ import annotations

import os

import h5py


def lost_sources(ds: h5py.Dataset, master: str) -> tuple[tuple[int, int, str], ...]:
    """Frame ranges of a virtual dataset whose source files do not exist or hold fewer
    frames than it maps (a Lima file cut short), with the reason naming the file."""
    lost = []
    here = os.path.dirname(os.path.abspath(master))
    for vs in ds.virtual_sources():
        name = vs.file_name
        if name == ".":
            continue
        lo, hi = (int(x[0]) for x in vs.vspace.get_select_bounds())
        path = next((p for p in (name, os.path.join(here, name)) if os.path.exists(p)), None)
        if path is None:
            lost.append((lo, hi, f"source file {name} of the virtual dataset is missing"))
            continue
        held = _source_frames(path, vs.dset_name)
        first = _first_frame(vs.src_space)
        if held is not None and first + hi - lo >= held:
            lost.append((lo + max(held - first, 0), hi,
                         f"source file {name} of the virtual dataset holds {held} frame(s); "
                         f"it is mapped to hold {first + hi - lo + 1}"))
    return tuple(lost)


def _first_frame(space: h5py.h5s.SpaceID) -> int:
    """The first source frame a virtual mapping reads (0 for a whole-dataset mapping)."""
    return 0 if space.get_select_type() == h5py.h5s.SEL_ALL else \
        int(space.get_select_bounds()[0][0])


def _source_frames(path: str, dataset: str) -> int | None:
    """Frames a virtual dataset's source holds; None if unreadable (the reads say why)."""
    try:
        with h5py.File(path, "r") as f:
            return int(f[dataset].shape[0])
    except (OSError, KeyError, IndexError, TypeError):
        return None
