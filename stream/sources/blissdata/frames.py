"""Frames of a Bliss scan: read through Lima's file references (retried until the file
has them), or taken as they are from a stream that carries the data itself; and the
points they make with the motor and counter values of the same index."""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

OPEN_FILES = 4  # frame files kept open (Lima writes one after the other)


class FileFrames:
    """Reads `(format, file_path, data_path, index)` references; files stay open while
    they serve frames. A read that fails raises OSError (or KeyError, IndexError) and
    closes the file, so the next try opens it afresh (the writer may still be at it)."""

    def __init__(self) -> None:
        self.files: OrderedDict[str, Any] = OrderedDict()

    def read(self, ref: Any) -> np.ndarray:
        fmt = (ref.format or "hdf5").lower()
        if fmt in ("edf", "cbf", "edfgz", "edfconcat"):
            import fabio  # the files/ source's reader, for Lima's EDF and CBF savings

            with fabio.open(ref.file_path) as img:
                frame = img.getframe(ref.index) if img.nframes > 1 else img
                return np.asarray(frame.data)
        if fmt not in ("hdf5", "hdf5bs", "hdf5gz", "hdf5_bs", "h5"):
            raise OSError(f"Lima file format {ref.format!r} is not supported")
        f = self._open(ref.file_path)
        try:
            return np.asarray(f[ref.data_path or "/entry_0000/measurement/data"][ref.index])
        except Exception:
            self._drop(ref.file_path)
            raise

    def _open(self, path: str) -> Any:
        import h5py

        f = self.files.get(path)
        if f is None:
            f = h5py.File(path, "r")
            self.files[path] = f
            while len(self.files) > OPEN_FILES:
                self._drop(next(iter(self.files)))
        self.files.move_to_end(path)
        return f

    def _drop(self, path: str) -> None:
        f = self.files.pop(path, None)
        if f is not None:
            try:
                f.close()
            except Exception:  # a file that broke while open: nothing more to do
                pass

    def close(self) -> None:
        for path in list(self.files):
            self._drop(path)


class Assembler:
    """Points in index order: frame i with the value at index i of every channel.

    `frame(i, data)` gives frame i (an array, a reference to read, or an error
    text); `values(name, array)` appends a channel's values; `ready(now, final)`
    returns the points that are complete. A reference that cannot be read is
    retried; once its file is due (Lima has gone on to a later file, or every stream is
    sealed: blissdata's own rule for a closed file), for `frame_timeout` s, then its
    point carries the reason (recorded bad), and so does every other frame of that file
    at once: a lost Lima file costs one timeout, not one per frame. Before that the
    file may still be open for writing (Lima gives references for frames acquired, not
    saved): a pause, or a slow scan, longer than frame_timeout while Lima filled one
    file made its frames bad. `final`: every stream is sealed, so a point with a frame
    goes out with whatever values there are. `extra`: channels a point also waits for
    that are neither motors nor counters (the clock that dates it: `value`).
    """

    def __init__(self, motors: list[str], counters: list[str], frame_timeout: float,
                 reader: FileFrames | None = None, extra: tuple[str, ...] = ()):
        self.motors, self.counters = motors, counters
        self.columns: dict[str, list[np.ndarray]] = {n: [] for n in (*motors, *counters,
                                                                     *extra)}
        self.lengths: dict[str, int] = {n: 0 for n in self.columns}
        self.flat: dict[str, np.ndarray] = {}
        self.frames: dict[int, Any] = {}
        self.first_try: dict[str, float] = {}  # file -> its first failed read
        self.lost: dict[str, str] = {}  # file -> why its frames are bad (timed out)
        self.frame_timeout = frame_timeout
        self.reader = reader or FileFrames()
        self.next_id = 0
        self.retries = 0
        self.newest_file = ""  # the file of the newest reference given

    def frame(self, index: int, data: Any) -> None:
        self.frames[index] = data
        if not isinstance(data, (np.ndarray, str)) and index >= max(self.frames):
            self.newest_file = str(getattr(data, "file_path", data))

    def values(self, name: str, array: Any) -> None:
        a = np.asarray(array, dtype=float).ravel()
        self.columns[name].append(a)
        self.lengths[name] += len(a)
        self.flat.pop(name, None)

    def value(self, name: str, index: int) -> float | None:
        if index >= self.lengths[name]:
            return None
        if name not in self.flat:
            self.flat[name] = np.concatenate(self.columns[name]) if self.columns[name] \
                else np.zeros(0)
            self.columns[name] = [self.flat[name]]
        return float(self.flat[name][index])

    def ready(self, now: float, final: bool = False) -> list[tuple[int, Any, dict, dict]]:
        """(index, frame or error text, motors, counters) of the points now complete."""
        out = []
        if final and self.next_id not in self.frames and self.frames:
            self.next_id = min(self.frames)  # frames Bliss never published: missing points
        while self.next_id in self.frames:
            i = self.next_id
            if not final and any(self.lengths[n] <= i for n in self.columns):
                break
            data = self.frames[i]
            if not isinstance(data, (np.ndarray, str)):  # a reference: read it now
                path = str(getattr(data, "file_path", data))
                if path in self.lost:
                    data = f"frame {i}: {self.lost[path]}"
                else:
                    try:
                        data = self.reader.read(data)
                        self.first_try.pop(path, None)
                    except Exception as exc:  # h5py and fabio raise OSError, KeyError, ...
                        if not final and self.newest_file == path:  # Lima may still
                            self.retries += 1  # write it: no timeout yet
                            break
                        first = self.first_try.setdefault(path, now)
                        if now - first < self.frame_timeout:
                            self.retries += 1
                            break
                        self.lost[path] = (f"{path} not readable within "
                                           f"{self.frame_timeout:g} s: {type(exc).__name__}: "
                                           f"{exc}")
                        data = f"frame {i}: {self.lost[path]}"
                        log.warning("%s (its other frames are bad too)", data)
            del self.frames[i]
            motors = {n: v for n in self.motors if (v := self.value(n, i)) is not None}
            counters = {n: v for n in self.counters if (v := self.value(n, i)) is not None}
            out.append((i, data, motors, counters))
            self.next_id += 1
        return out

    def waiting(self) -> bool:
        """A reference is being retried (the caller should come back soon)."""
        ref = self.frames.get(self.next_id)
        return str(getattr(ref, "file_path", "")) in self.first_try

    def positions(self) -> dict[str, np.ndarray]:
        """Every motor's values so far (to derive a trajectory from)."""
        return {n: np.concatenate(self.columns[n]) if self.columns[n] else np.zeros(0)
                for n in self.motors}


def take(name: str, view: Any, wanted: dict[str, str | None], consumed: dict[str, int],
         asm: Assembler) -> None:
    """A blissdata view's new items into the assembler: the frames (`wanted[name]` None),
    or the values of our channel `wanted[name]`; items read before a reconnect
    (`consumed`: items taken per stream) are skipped."""
    skip = max(consumed[name] - view.index, 0)
    n = len(view) - skip
    if n <= 0:
        return
    first = view.index + skip
    column = wanted[name]
    if column is None:  # the frames
        plugin = getattr(view, "get_references", None)
        items = plugin(skip, None) if plugin is not None else view.get_data(skip, None)
        if not isinstance(items, list) and not isinstance(items, np.ndarray):
            items = [items]
        for k, item in enumerate(items):
            asm.frame(first + k, np.asarray(item) if isinstance(item, np.ndarray) else item)
    else:
        asm.values(column, view.get_data(skip, None))
    consumed[name] = first + n
