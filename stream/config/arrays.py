"""The arrays a config names (dark, flat, mask, cut_map, ...): `file.npy` or
`file.h5::/dataset`, read when the nodes are built."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stream.config.base import ConfigError


def load_array(spec: str, base: Path, where: str) -> np.ndarray:
    """Load `file.npy` or `file.h5::/path` (relative to `base`): an array of numbers (or
    booleans), else a ConfigError naming `where` and the file."""
    name, _, inner = spec.partition("::")
    path = (base / name).expanduser()
    try:
        if path.suffix == ".npy":
            try:
                array = np.load(path, allow_pickle=False)
            except (ValueError, EOFError) as exc:  # not a .npy, or one of Python objects
                raise ConfigError(f"{where}: {path} is not a numpy .npy file of numbers "
                                  f"({exc})") from None
            return _numbers(array, f"{where}: {path}")
        if inner:
            import h5py

            with h5py.File(path, "r") as f:
                if inner not in f:
                    raise ConfigError(f"{where}: {path} has no dataset {inner!r}")
                if not isinstance(f[inner], h5py.Dataset):
                    raise ConfigError(f"{where}: {path}::{inner} is a group, not a dataset "
                                      f"(name the dataset in it: {path.name}::"
                                      f"{inner.rstrip('/')}/NAME)")
                return _numbers(np.asarray(f[inner][()]), f"{where}: {path}::{inner}")
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {path}: {exc}") from None
    raise ConfigError(f"{where}: {spec!r} is neither a .npy file nor FILE.h5::/dataset")


def _numbers(array: np.ndarray, where: str) -> np.ndarray:
    if array.dtype.kind not in "biuf":
        raise ConfigError(f"{where} holds {array.dtype} values, not numbers")
    return array
