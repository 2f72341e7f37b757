"""A nested dict of arrays and scalars stored in one HDF5 group (the checkpoint's state)."""

from __future__ import annotations

import json
from typing import Any

import h5py
import numpy as np


def write_state(group: h5py.Group, state: dict[str, Any]) -> None:
    """Store a nested dict of numeric arrays and int / float / bool / str values in
    `group`: the arrays' bytes one after the other in the uint8 dataset "state" (resized
    in place from one checkpoint to the next: one write however many arrays), the rest
    and where each array lies in its JSON attribute "manifest"."""
    blobs: list[bytes] = []
    at = 0

    def encode(value: Any, key: str) -> Any:
        nonlocal at
        if isinstance(value, dict):
            bad = [k for k in value if not isinstance(k, str)]
            if bad:
                raise TypeError(f"state key {key}: keys must be str, not {bad[0]!r}")
            return {k: encode(v, f"{key}/{k}") for k, v in value.items()}
        if isinstance(value, np.ndarray):
            if value.dtype.kind not in "biuf":
                raise TypeError(f"state key {key}: arrays must be numeric, not {value.dtype}")
            raw = np.ascontiguousarray(value).tobytes()
            pad = -len(raw) % 8
            blobs.append(raw + bytes(pad))
            spec = {"__array__": [at, value.dtype.str, list(value.shape)]}
            at += len(raw) + pad
            return spec
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, bool | int | float | str):
            return value
        raise TypeError(f"state key {key}: cannot store a {type(value).__name__}")

    manifest = json.dumps(encode(state, ""))
    data = np.frombuffer(b"".join(blobs), np.uint8)
    ds = group.get("state")
    if ds is None:
        ds = group.create_dataset("state", shape=(0,), maxshape=(None,), dtype=np.uint8,
                                  chunks=(1 << 18,))
    ds.resize((data.shape[0],))
    if data.shape[0]:
        ds[:] = data
    ds.attrs["manifest"] = manifest


def read_state(group: h5py.Group) -> dict[str, Any]:
    """The dict `write_state` stored (arrays as numpy arrays, scalars as Python values)."""
    ds = group["state"]
    raw = ds[()].tobytes()

    def decode(value: Any) -> Any:
        if isinstance(value, dict):
            if "__array__" in value:
                at, dtype, shape = value["__array__"]
                dt = np.dtype(dtype)
                n = int(np.prod(shape, dtype=np.int64))
                return np.frombuffer(raw, dt, n, at).reshape(shape).copy()
            return {k: decode(v) for k, v in value.items()}
        return value

    return decode(json.loads(ds.attrs["manifest"]))
