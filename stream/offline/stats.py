"""Statistics over the frames of a recording: mean, min, max, median, percentile images.

For making dark, flat and background images (`peakstream stats`). Memory is bounded:

* mean, min and max are running images (float64 sum, min, max), one pass;
* median and percentiles need every value of a pixel. The frames are kept in
  memory while they fit in `max_bytes`, otherwise spilled to one temporary raw file
  (in `spill_dir`, deleted afterwards); the order statistics are then computed
  band by band of image rows, each band `(nframes, rows, width)` sized to a
  quarter of `max_bytes`. numpy's own `median` / `percentile` (linear) run on
  each band, so the result is exactly numpy's over the whole stack.

Output (`write_stats`): HDF5 `/entry/stats/<name>` (name = mean, min, max, median,
percentile_<q>), with the provenance in `/entry/process`; a config loads an image
as `dark = "dark.h5::/entry/stats/median"`. A `.npy` or `.edf` output holds one image
(loaded as `dark = "dark.edf"`).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

STATS = ("mean", "min", "max", "median", "percentile")
ORDER_STATS = ("median", "percentile")
DEFAULT_MAX_BYTES = 512 << 20
Progress = Callable[[str, int, "int | None"], None]  # (stage, done, total)


def stat_names(stats: Sequence[str], percentiles: Sequence[float] = ()) -> list[str]:
    """The image names a request makes: percentile becomes percentile_<q> per q."""
    names = []
    for s in stats:
        if s == "percentile":
            names += [f"percentile_{q:g}" for q in percentiles]
        else:
            names.append(s)
    return names


class FrameStats:
    """Accumulate frames (`add`), then `images()`; `close()` drops the spill file."""

    def __init__(self, stats: Sequence[str], percentiles: Sequence[float] = (), *,
                 max_bytes: int = DEFAULT_MAX_BYTES, spill_dir: str | os.PathLike | None = None
                 ) -> None:
        stats = list(dict.fromkeys(stats))
        if percentiles and "percentile" not in stats:
            stats.append("percentile")
        bad = [s for s in stats if s not in STATS]
        if bad or not stats:
            raise ValueError(f"stats {bad or stats} not known; choose from {', '.join(STATS)}")
        if "percentile" in stats and not percentiles:
            raise ValueError("stat percentile needs at least one percentile (0..100)")
        for q in percentiles:
            if not 0.0 <= float(q) <= 100.0:
                raise ValueError(f"percentile {q!r} is not in 0..100")
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be > 0, got {max_bytes}")
        self.stats, self.percentiles = stats, [float(q) for q in percentiles]
        self.max_bytes, self.spill_dir = int(max_bytes), spill_dir
        self.keep = any(s in ORDER_STATS for s in stats)
        self.nframes = 0
        self.rejected = 0
        self.shape: tuple[int, int] | None = None
        self.dtype: np.dtype | None = None
        self._sum = self._min = self._max = None
        self._frames: list[np.ndarray] = []
        self._spill: Any = None  # the open temporary file once spilled
        self._spill_path: str | None = None

    def add(self, frame: np.ndarray) -> bool:
        """Take one 2D frame; a frame of another shape is rejected (False, logged)."""
        frame = np.asarray(frame)
        if self.shape is None:
            if frame.ndim != 2:
                log.warning("stats: frame %d is %dD, not 2D: skipped", self.nframes, frame.ndim)
                self.rejected += 1
                return False
            self.shape, self.dtype = frame.shape, frame.dtype
            self._sum = np.zeros(frame.shape, np.float64)
            self._min, self._max = frame.copy(), frame.copy()
        elif frame.shape != self.shape:
            log.warning("stats: frame %d has shape %s, the others %s: skipped",
                        self.nframes + self.rejected, frame.shape, self.shape)
            self.rejected += 1
            return False
        frame = frame.astype(self.dtype, copy=False)
        self._sum += frame
        np.minimum(self._min, frame, out=self._min)
        np.maximum(self._max, frame, out=self._max)
        if self.keep:
            self._store(frame)
        self.nframes += 1
        return True

    def _store(self, frame: np.ndarray) -> None:
        if self._spill is None and (self.nframes + 1) * frame.nbytes <= self.max_bytes:
            self._frames.append(np.array(frame, copy=True))
            return
        if self._spill is None:
            fd, self._spill_path = tempfile.mkstemp(prefix="peakstream-stats-", suffix=".raw",
                                                    dir=self.spill_dir)
            self._spill = os.fdopen(fd, "wb")
            log.info("stats: %d frames exceed %d MiB: spilling to %s", self.nframes + 1,
                     self.max_bytes >> 20, self._spill_path)
            for f in self._frames:
                self._spill.write(np.ascontiguousarray(f).tobytes())
            self._frames.clear()
        self._spill.write(np.ascontiguousarray(frame).tobytes())

    def band_rows(self) -> int:
        """Rows per band of the order statistics: a band is at most max_bytes / 4."""
        assert self.shape is not None and self.dtype is not None
        per_row = max(self.nframes, 1) * self.shape[1] * self.dtype.itemsize
        return int(max(1, min(self.shape[0], (self.max_bytes // 4) // per_row)))

    def images(self, progress: Progress | None = None) -> dict[str, np.ndarray]:
        """The requested images: mean float32, min / max in the frames' dtype,
        median / percentile_<q> float32 (computed in float64 as numpy does)."""
        if self.nframes == 0:
            raise ValueError("no frames to make statistics of")
        out: dict[str, np.ndarray] = {}
        if "mean" in self.stats:
            out["mean"] = (self._sum / self.nframes).astype(np.float32)
        if "min" in self.stats:
            out["min"] = self._min.copy()
        if "max" in self.stats:
            out["max"] = self._max.copy()
        if self.keep:
            out.update(self._order_stats(progress))
        return {name: out[name] for name in stat_names(self.stats, self.percentiles)}

    def _order_stats(self, progress: Progress | None) -> dict[str, np.ndarray]:
        stack = self._stack()
        ny = self.shape[0]
        rows = self.band_rows()
        want_median = "median" in self.stats
        names = [f"percentile_{q:g}" for q in self.percentiles] if "percentile" in self.stats \
            else []
        out = {n: np.empty(self.shape, np.float32) for n in (["median"] * want_median + names)}
        nbands = -(-ny // rows)
        for b, r0 in enumerate(range(0, ny, rows)):
            r1 = min(ny, r0 + rows)
            band = stack(r0, r1)
            if want_median:
                out["median"][r0:r1] = np.median(band, axis=0)
            if names:
                values = np.percentile(band, self.percentiles, axis=0)
                for n, v in zip(names, values, strict=True):
                    out[n][r0:r1] = v
            del band
            if progress is not None:
                progress("bands", b + 1, nbands)
        return out

    def _stack(self) -> Callable[[int, int], np.ndarray]:
        """A function giving rows r0:r1 of every frame as one (nframes, rows, width) array."""
        if self._spill is None:
            return lambda r0, r1: np.stack([f[r0:r1] for f in self._frames])
        self._spill.flush()
        mm = np.memmap(self._spill_path, dtype=self.dtype, mode="r",
                       shape=(self.nframes, *self.shape))
        return lambda r0, r1: np.array(mm[:, r0:r1])

    def close(self) -> None:
        self._frames.clear()
        if self._spill is not None:
            self._spill.close()
            self._spill = None
        if self._spill_path is not None:
            try:
                os.unlink(self._spill_path)
            except OSError:
                pass
            self._spill_path = None

    def __enter__(self) -> FrameStats:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def frame_stats(frames: Iterable[np.ndarray], stats: Sequence[str],
                percentiles: Sequence[float] = (), *, max_bytes: int = DEFAULT_MAX_BYTES,
                spill_dir: str | os.PathLike | None = None, progress: Progress | None = None,
                total: int | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Images over an iterable of frames, and what was done (frames used, rejected, method)."""
    with FrameStats(stats, percentiles, max_bytes=max_bytes, spill_dir=spill_dir) as acc:
        for frame in frames:
            acc.add(frame)
            if progress is not None:
                progress("frames", acc.nframes, total)
        images = acc.images(progress)
        info = {"nframes": acc.nframes, "rejected": acc.rejected,
                "stats": stat_names(acc.stats, acc.percentiles),
                "method": ("running sum / min / max" +
                           (f"; numpy median / percentile (linear) in bands of "
                            f"{acc.band_rows()} rows, frames "
                            f"{'spilled to disk' if acc._spill_path else 'in memory'}"
                            if acc.keep else ""))}
    return images, info


# ------------------------------------------------------------------ recordings


def parse_points(text: str | None) -> tuple[int, int | None]:
    """`A:B` (point ids A..B-1), `A:` or `:B`; None or '' is every point."""
    if not text:
        return 0, None
    lo, sep, hi = text.partition(":")
    try:
        a = int(lo) if lo.strip() else 0
        b = int(hi) if hi.strip() else None
    except ValueError:
        raise ValueError(f"--points {text!r}: give A:B (point ids A to B-1), A: or :B") from None
    if not sep or a < 0 or (b is not None and b <= a):
        raise ValueError(f"--points {text!r}: give A:B with 0 <= A < B, A: or :B")
    return a, b


def recording_frames(inputs: Sequence[str], points: tuple[int, int | None] = (0, None), *,
                     format: str = "auto", images: Iterable[str] = (),
                     detector: str | None = None, counts: dict[str, int] | None = None
                     ) -> tuple[Iterator[np.ndarray], int | None]:
    """The dense frames of points lo..hi-1 of a recording (any stream.sources.files
    format; sparse frames are made dense) and how many there will be at most.
    Points that could not be read are counted in `counts["bad"]`, logged and skipped."""
    from stream.core.item import SparseFrame
    from stream.sources.files import open_recording

    start, stream = open_recording(list(inputs), format=format, images=images)
    det = detector or next(iter(start.detectors))
    if det not in start.detectors:
        raise ValueError(f"no detector {det!r} in the recording "
                         f"(it has {', '.join(start.detectors)})")
    lo, hi = points
    n = start.npoints
    total = None if n is None else max(0, (min(n, hi) if hi is not None else n) - lo)
    counts = counts if counts is not None else {}
    counts.setdefault("bad", 0)

    def gen() -> Iterator[np.ndarray]:
        for p in stream:
            if p.point_id < lo:
                continue
            if hi is not None and p.point_id >= hi:
                break
            frame = p.frames.get(det)
            if "error" in p.extra or frame is None:
                counts["bad"] += 1
                log.warning("stats: point %d skipped: %s", p.point_id,
                            p.extra.get("error", f"no frame of {det}"))
                continue
            if isinstance(frame, SparseFrame):
                dense = np.zeros(frame.shape, np.float32)
                dense[frame.row, frame.col] = frame.intensity
                frame = dense
            elif not isinstance(frame, np.ndarray):
                from nodes.decode import dense as decode

                frame = decode(frame)
            yield frame

    return gen(), total


def write_stats(path: str | os.PathLike, images: dict[str, np.ndarray],
                provenance: dict[str, Any]) -> list[str]:
    """Write the images (HDF5, or one image as .npy / .edf); the paths a config loads."""
    from stream import __version__
    from stream.store.layout import now_iso

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".npy", ".edf"):
        if len(images) != 1:
            raise ValueError(f"{path}: a {suffix} file holds one image; ask for one stat or "
                             f"write HDF5 (.h5)")
        (name, image), = images.items()
        if suffix == ".npy":
            np.save(path, image)
        else:
            import fabio.edfimage

            header = {"peakstream_stat": name, "peakstream_version": __version__,
                      "peakstream_provenance": json.dumps(provenance, default=str)}
            fabio.edfimage.EdfImage(data=image, header=header).write(str(path))
        return [str(path)]
    import h5py

    with h5py.File(path, "w") as f:
        f.attrs.update(NX_class="NXroot", default="entry", creator="peakstream")
        entry = f.create_group("entry")
        entry.attrs.update(NX_class="NXentry", default="stats", program="peakstream",
                           version=__version__)
        data = entry.create_group("stats")
        data.attrs.update(NX_class="NXdata", signal=next(iter(images)))
        for name, image in images.items():
            data.create_dataset(name, data=image, chunks=True, compression="gzip",
                                compression_opts=1)
            data[name].attrs["interpretation"] = "image"
        proc = entry.create_group("process")
        proc.attrs["NX_class"] = "NXprocess"
        proc["program"], proc["version"], proc["date"] = "peakstream stats", __version__, now_iso()
        proc["provenance"] = json.dumps(provenance, indent=1, default=str)
        for key in ("inputs", "points", "method", "nframes", "bad"):
            if key in provenance:
                value = provenance[key]
                proc[key] = [str(v) for v in value] if isinstance(value, list) else value
    return [f"{path}::/entry/stats/{name}" for name in images]
