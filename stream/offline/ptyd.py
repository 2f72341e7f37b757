"""`peakstream export --format ptyd`: a finished run's ptypy file, from its recording.

A run whose chain has a `ptyd` node keeps, per point, the frame (`ptyd_data`)
and [y, x] position (`ptyd_position`) in its scan file, and once the weights
with the meta (`ptyd_weights`, attribute `ptyd`). This writes them, the points
with status ok in point order, as `stream.store.ptyd` does live.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from stream.store.ptyd import PtydWriter
from stream.store.reader import load


def export_ptyd(path: Path, output: Path) -> dict[str, Any]:
    """Write `output` (.ptyd) from the scan file `path`; ValueError if it has no
    ptyd outputs."""
    data = load(path)
    det = data["detector"]
    ok = np.flatnonzero(data["points"]["status"] == 0)
    with h5py.File(path, "r", locking=False) as f:
        group = f[f"entry/{det}"]
        if "ptyd_data" not in group or "ptyd_weights" not in group:
            raise ValueError(f"{path}: no ptyd outputs: the run's chain had no "
                             f"[[node]] kind = \"ptyd\"")
        spec = json.loads(group["ptyd_weights"].attrs["ptyd"])
        weights = group["ptyd_weights"][()]
        meta = {k: np.asarray(v) if isinstance(v, list) else v
                for k, v in spec["meta"].items()}
        npoints = len(data["points"]["point_id"])
        writer = PtydWriter(output, meta, int(spec["min_frames"]), len(ok),
                            {"source": str(path), "points": npoints})
        frames, positions = group["ptyd_data"], group["ptyd_position"]
        step = max(int(spec["min_frames"]), 1)
        for lo in range(0, len(ok), step):
            rows = ok[lo:lo + step]
            block, pos = frames[rows[0]:rows[-1] + 1], positions[rows[0]:rows[-1] + 1]
            for r in rows:
                writer.add(int(data["points"]["point_id"][r]), block[r - rows[0]],
                           pos[r - rows[0]], weights)
        writer.close()
    return {"format": "ptyd", "file": str(output), "rows": writer.written}
