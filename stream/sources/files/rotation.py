"""What a recording replayed without a rotation motor likely holds: a scan read with no
`--motor` has no positions (the default sweep, a 360-degree scan not wrapped), which
only the trajectory's "(default)" tag told. `unread_rotation` names the dataset of a
rotation-like counter beside the frames (Bliss `measurement/rot`, `diffrz`, ...), for a
warning that gives the --motor to read it."""

from __future__ import annotations

import h5py

from stream.core.trajectory import ROTATION_NAMES


def unread_rotation(file: str, scan_group: str) -> str:
    """`measurement/NAME` of the first rotation-like 1D dataset under the scan group of
    `file`, or "" (none, or the file cannot tell)."""
    try:
        with h5py.File(file, "r") as f:
            group = f.get(f"{scan_group}/measurement")
            if not isinstance(group, h5py.Group):
                return ""
            for name in ROTATION_NAMES:
                ds = group.get(name)
                if isinstance(ds, h5py.Dataset) and ds.ndim == 1 and ds.shape[0] > 1:
                    return f"measurement/{name}"
    except (OSError, KeyError, ValueError):
        return ""
    return ""
