"""The calibration files a config's chain loads, and the sha256 of each.

A config's TOML text names its dark, flat, mask, cut_map, image, sigma_image
and PONI files (`dark = "dark.npy"`, `mask = "cal.h5::/entry/mask"`), not
their contents: two runs of the same text with a dark taken again in between
made different data from one config. `calibration(config)` is what each file
held as the chain is built: the base directory relative names are taken
from, and per file the node, key, name as written, resolved path and sha256 of
the content. A scan file records it (`/entry/process/calibration`); a resume
or a fill of that file with another content is another config
(`stream.store.identity.calibration_changes`).

The sha256 is of the file's bytes for a `.npy` or PONI file (`sha256sum` gives
the same), and of the image for `FILE.h5::/path` and an EDF / CBF file (its
dtype, shape and values: the rest of that HDF5 file, or the header of that
EDF / CBF file, may change without changing the image).
A file that cannot be read has sha256 "" and `error` saying why.
"""

from __future__ import annotations

import hashlib
import typing
from pathlib import Path
from typing import Any

import numpy as np

from stream.config.arrays import IMAGE_SUFFIXES, load_array
from stream.config.base import ConfigError, wants_array


def calibration(config: Any) -> dict[str, Any]:
    """{"base": the config's directory, "files": [{"node", "kind", "key", "file", "path",
    "sha256"}, ...]} of the files the config's [[node]] chain loads, in chain order."""
    from nodes import NODES

    files = []
    for i, table in enumerate(config["node"]):
        hints = typing.get_type_hints(NODES[table["kind"]].__init__)
        for key, value in table.items():
            if key == "poni" or (key != "kind" and isinstance(value, str)
                                 and wants_array(hints.get(key))):
                files.append({"node": i + 1, "kind": table["kind"], "key": key, "file": value,
                              **content_hash(value, config.base, whole=key == "poni")})
    return {"base": str(config.base), "files": files}


def content_hash(spec: str, base: Path, whole: bool = False) -> dict[str, str]:
    """{"path": resolved, "sha256": of the content} of `file.npy`, `file.h5::/path` (the
    dataset), `file.edf` / `file.cbf` (the image) or, `whole`, any file; with "error" (and
    sha256 "") when it cannot be read."""
    name, _, inner = spec.partition("::")
    path = (base / name).expanduser()
    out = {"path": str(path) + (f"::{inner}" if inner and not whole else "")}
    try:
        if whole or not (inner or path.suffix.lower() in IMAGE_SUFFIXES):
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            return {**out, "sha256": digest.hexdigest()}
        array = np.ascontiguousarray(load_array(spec, base, spec))
        head = f"{array.dtype.str} {array.shape}".encode()
        return {**out, "sha256": hashlib.sha256(head + array.tobytes()).hexdigest()}
    except (OSError, ConfigError) as exc:
        return {**out, "sha256": "", "error": str(exc)}
