"""`peakstream map FILE --png OUT.png`: a map (image against the motor axes) and a pattern
(1D plot) of a map file, as PNG.

FILE is a map file (`stream.maps` layout; pyFAI diff_map's output reads the same) or
a peakstream output file, whose maps are made first (`build_maps`, into --output or
a temporary file). Map names: `intensity` (each pattern summed over its bins),
`map_ptr`, and every `maps/<name>` (roi_*, annulus_*, peaks2d_count, clique_count,
composite_*). With matplotlib (the `plot` extra) the figure has axes, labels and a
colour bar; without it the map alone is written as a false-colour PNG by a small
numpy + zlib writer.
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import tempfile
import zlib
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

from stream.maps.build import build_maps
from stream.maps.grid import ENTRY, MAPS, PROCESS, RESULT, MapGrid

RESULT_GROUP = f"{ENTRY}/{PROCESS}/{RESULT}"


@dataclass
class MapImage:
    name: str
    data: np.ndarray  # 2D, NaN where no point
    slow: np.ndarray
    fast: np.ndarray
    slow_label: str
    fast_label: str
    composite: bool = False


@dataclass
class PatternPlot:
    point: int
    radial: np.ndarray
    intensity: np.ndarray
    error: np.ndarray | None
    label: str
    place: tuple[int, int]


def list_maps(path: str | os.PathLike) -> list[str]:
    """The names `read_map` knows in a map file."""
    with h5py.File(path, "r", locking=False) as f:
        res = f.get(RESULT_GROUP)
        if res is None:
            raise ValueError(f"{path}: not a map file (no /{RESULT_GROUP})")
        names = (["intensity"] if "intensity" in res else []) + ["map_ptr"]
        names += sorted(f[f"{ENTRY}/{MAPS}"]) if f"{ENTRY}/{MAPS}" in f else []
    return names


def read_map(path: str | os.PathLike, name: str | None = None) -> MapImage:
    """One map as a 2D image (default: intensity if there are patterns, else the first)."""
    names = list_maps(path)
    name = name or next((n for n in names if n != "map_ptr"), "map_ptr")
    if name not in names:
        raise ValueError(f"{path}: no map {name!r}; it has {', '.join(names)}")
    with h5py.File(path, "r", locking=False) as f:
        res = f[RESULT_GROUP]
        slow, fast = res["slow"][()], res["fast"][()]
        labels = [str(res[a].attrs.get("long_name", a)) for a in ("slow", "fast")]
        if name == "intensity":
            data = res["intensity"][()].astype(np.float64)
            axes = tuple(range(2, data.ndim))
            empty = np.isnan(data).all(axis=axes)
            data = np.where(empty, np.nan, np.nansum(data, axis=axes))
        elif name == "map_ptr":
            ptr = res["map_ptr"][()]
            data = np.where(ptr < 0, np.nan, ptr.astype(np.float64))
        else:
            data = f[f"{ENTRY}/{MAPS}/{name}/data"][()].astype(np.float64)
            if data.ndim > 2 and not name.startswith("composite_"):
                empty = np.isnan(data).all(axis=tuple(range(2, data.ndim)))
                data = np.where(empty, np.nan, np.nansum(data, axis=tuple(range(2, data.ndim))))
    return MapImage(name, data, slow, fast, labels[0], labels[1], name.startswith("composite_"))


def read_pattern(path: str | os.PathLike, point: int) -> PatternPlot:
    """The pattern of point (frame) `point`: where map_ptr holds it."""
    with h5py.File(path, "r", locking=False) as f:
        res = f[RESULT_GROUP]
        if "intensity" not in res:
            raise ValueError(f"{path}: the map holds no patterns")
        where = np.argwhere(res["map_ptr"][()] == point)
        if not len(where):
            raise ValueError(f"{path}: point {point} is not in the map")
        i, j = (int(v) for v in where[0])
        intensity = res["intensity"][i, j]
        error = res["errors"][i, j] if "errors" in res else None
        axis = next(n for n in res if n not in ("intensity", "errors", "map", "map_ptr", "slow",
                                                 "fast", "azimuthal"))
        label = str(res[axis].attrs.get("long_name", axis))
        radial = res[axis][()]
    if intensity.ndim == 2:  # caked: the azimuthal mean
        error = None
        intensity = np.nanmean(intensity, axis=0)
    return PatternPlot(point, radial, intensity, error, label, (i, j))


def edges(centres: np.ndarray) -> np.ndarray:
    """Cell edges around centres (uneven or descending); indices if they are unusable."""
    c = np.asarray(centres, np.float64)
    if len(c) < 2 or not np.isfinite(c).all() or np.ptp(c) == 0:
        c = (c[0] if len(c) and np.isfinite(c[0]) else 0.0) + np.arange(len(c) or 1, dtype=float)
        return np.concatenate([c - 0.5, c[-1:] + 0.5])
    mid = 0.5 * (c[1:] + c[:-1])
    return np.concatenate([[2 * c[0] - mid[0]], mid, [2 * c[-1] - mid[-1]]])


# ------------------------------------------------------------------ rendering


def render(out: str | os.PathLike, image: MapImage | None,
           pattern: PatternPlot | None = None) -> str:
    """Write the PNG (matplotlib if installed, else the map alone); which was used."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        if image is None:
            raise ValueError("plotting a pattern needs matplotlib: pip install -e "
                             "'.[plot]'") from None
        write_png(out, false_colour(image.data, scale=max(1, 400 // max(image.data.shape))))
        return "numpy"
    panels = [p for p in (image, pattern) if p is not None]
    fig = Figure(figsize=(5.5 * len(panels), 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    k = 0
    if image is not None:
        ax = axes[k]
        k += 1
        data = np.ma.masked_invalid(image.data)
        if image.composite:
            ys, xs = edges(image.slow), edges(image.fast)
            # tiles as detector images (row 0 at the top), so slow runs downwards
            mesh = ax.imshow(data, origin="upper", aspect="auto", interpolation="nearest",
                             extent=(xs[0], xs[-1], ys[-1], ys[0]))
        else:
            mesh = ax.pcolormesh(edges(image.fast), edges(image.slow), data, shading="flat")
        fig.colorbar(mesh, ax=ax, label=image.name)
        ax.set(xlabel=image.fast_label, ylabel=image.slow_label, title=image.name)
        if pattern is not None and not image.composite:
            i, j = pattern.place
            ax.plot([image.fast[j]], [image.slow[i]], "r+", ms=12, mew=2)
    if pattern is not None:
        ax = axes[k]
        ax.plot(pattern.radial, pattern.intensity, lw=1)
        if pattern.error is not None:
            ax.fill_between(pattern.radial, pattern.intensity - pattern.error,
                            pattern.intensity + pattern.error, alpha=0.3, lw=0)
        ax.set(xlabel=pattern.label, ylabel="intensity", title=f"point {pattern.point}")
    fig.savefig(out, dpi=100)
    return "matplotlib"


# a short viridis-like ramp: dark blue -> teal -> green -> yellow
RAMP = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]],
                np.float64)


def false_colour(data: np.ndarray, scale: int = 1) -> np.ndarray:
    """RGB uint8 of a 2D array (row 0 at the bottom, as the plots), NaN grey."""
    data = np.asarray(data, np.float64)[::-1]
    ok = np.isfinite(data)
    lo, hi = (data[ok].min(), data[ok].max()) if ok.any() else (0.0, 1.0)
    t = np.where(ok, (data - lo) / (hi - lo if hi > lo else 1.0), 0.0) * (len(RAMP) - 1)
    i = np.clip(t.astype(int), 0, len(RAMP) - 2)
    f = (t - i)[..., None]
    rgb = RAMP[i] * (1 - f) + RAMP[i + 1] * f
    rgb[~ok] = 128
    rgb = np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)
    return np.round(rgb).astype(np.uint8)


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """A minimal RGB8 PNG: IHDR, one zlib IDAT (filter 0 per row), IEND."""
    h, w, _ = rgb.shape

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    raw = np.concatenate([np.zeros((h, 1), np.uint8), rgb.reshape(h, 3 * w)], axis=1)
    with open(path, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                 + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)) + chunk(b"IEND", b""))


# ------------------------------------------------------------------ command line


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """`peakstream map`: register the subcommand (its function is `run`)."""
    p = subparsers.add_parser(
        "map", help="maps of a 2D scan: list, build, render as PNG",
        description="List the maps of a map file (or make them from a peakstream output "
                    "file: peak and clique counts, stored node outputs), and render one with "
                    "a point's pattern as PNG.")
    p.add_argument("file", metavar="FILE", help="a map file, or a peakstream output file")
    p.add_argument("--png", metavar="OUT.png", help="render the map (and --point's pattern)")
    p.add_argument("--map", dest="name", metavar="NAME",
                   help="the map to render (default: intensity, else the first)")
    p.add_argument("--point", type=int, metavar="N", help="also plot point N's pattern")
    p.add_argument("--output", metavar="MAPS.h5",
                   help="for a peakstream output file: write its maps here")
    p.add_argument("--nfast", type=int, help="points per row, if the scan's trajectory is "
                                             "not a grid or snake")
    p.add_argument("--snake", action="store_true", help="with --nfast: odd rows run backwards")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """0 done, 2 bad usage or input."""
    from stream.sources.files.ours import is_ours

    tmp = None
    if not os.path.isfile(args.file):
        print(f"peakstream map: {args.file}: no such file", file=sys.stderr)
        return 2
    try:
        with h5py.File(args.file, "r", locking=False) as f:
            ours = is_ours(f)
        path = args.file
        if ours:
            grid = MapGrid(args.nfast, snake=args.snake) if args.nfast else None
            if args.output:
                path = args.output
            else:
                fd, tmp = tempfile.mkstemp(suffix=".h5", prefix="peakstream-map-")
                os.close(fd)
                path = tmp
            counts = build_maps(args.file, path, grid=grid)
            if args.output:
                print(f"wrote {path}: {counts['placed']} points placed", file=sys.stderr)
        if not args.png:
            for name in list_maps(path):
                image = read_map(path, name)
                print(f"{name:24s} {image.data.shape[0]} x {image.data.shape[1]}")
            return 0
        image = read_map(path, args.name)
        pattern = read_pattern(path, args.point) if args.point is not None else None
        how = render(args.png, image, pattern)
        print(f"wrote {args.png} ({image.name}{f', point {args.point}' if pattern else ''}; "
              f"{how})", file=sys.stderr)
        return 0
    except (OSError, ValueError, KeyError) as exc:
        print(f"peakstream map: {exc}", file=sys.stderr)
        return 2
    finally:
        if tmp is not None:
            os.unlink(tmp)
