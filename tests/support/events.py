"""The events a scan file recorded, by kind."""

from __future__ import annotations

import h5py


def warnings_of(path) -> list[str]:
    """The messages of the file's events of kind `warning`, in order."""
    with h5py.File(path, "r") as f:
        ev = f["entry/process/events"]
        return [m for k, m in zip(ev["kind"].asstr()[()], ev["message"].asstr()[()],
                                  strict=True) if k == "warning"]
