"""The arrays a config names (dark, flat, mask, cut_map, ...): `file.npy`,
`file.h5::/dataset` or a single-frame `file.edf` / `file.cbf` (read with fabio, as
replay reads EDF / CBF series and `peakstream stats` writes its EDF images), read
when the nodes are built."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stream.config.base import ConfigError

IMAGE_SUFFIXES = (".edf", ".cbf")  # single-image files, read with fabio


def load_array(spec: str, base: Path, where: str) -> np.ndarray:
    """Load `file.npy`, `file.h5::/path` or a one-frame `file.edf` / `file.cbf` (relative
    to `base`): an array of numbers (or booleans), else a ConfigError naming `where` and
    the file."""
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
        if path.suffix.lower() in IMAGE_SUFFIXES and not inner:
            return _image(path, where)
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
    raise ConfigError(f"{where}: {spec!r} is neither a .npy, .edf or .cbf file nor "
                      f"FILE.h5::/dataset")


def _image(path: Path, where: str) -> np.ndarray:
    """The one frame of an EDF / CBF file (fabio raises OSError on one it cannot read)."""
    import fabio

    with fabio.open(str(path)) as img:
        if img.nframes != 1:
            raise ConfigError(f"{where}: {path} holds {img.nframes} frames, not one image "
                              f"(make one, e.g. their median: peakstream stats {path.name} "
                              f"--stat median --output {path.stem}_median{path.suffix})")
        if img.data is None:
            raise ConfigError(f"{where}: {path} holds no image")
        return _numbers(np.asarray(img.data), f"{where}: {path}")


def _numbers(array: np.ndarray, where: str) -> np.ndarray:
    if array.dtype.kind not in "biuf":
        raise ConfigError(f"{where} holds {array.dtype} values, not numbers")
    return array
