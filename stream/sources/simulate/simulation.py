"""A synthetic scan of any kind with known truth: Gaussian spots on a Poisson background.

Every frame is made from the seed and its point number alone, so any point can
be made on its own, in any order. The scan kind (sweep, interlaced, grid,
snake, free; `simscan.layout`) gives each point its true omega, the omega
width its frame integrates and its dty. Spots have a centre in pixels (s, f),
in omega (degrees, on the circle for scans that wrap) and, for 2D scans, in
dty; a frame sees spot k with weight

    total_k * (Phi(omega_i + width_i / 2) - Phi(omega_i - width_i / 2))
            * exp(-(dty_i - dty_k)^2 / (2 sigma_dty_k^2))

(Phi the Gaussian integral in omega around omega_k, sigma_omega_k; the dty
factor only for 2D scans), so `total` is the integrated intensity of a pass
through the spot's centre. Spots are spread evenly in omega, isolated spots
are far apart (8 sigma or more along some axis) and away from the edges, the
module gaps and the dead pixels; a fraction of them are placed as touching
pairs. The truth table says which spot is which.

Conventions: `s` is the row and `f` the column, pixel i's centre is at i;
`point` is the omega centre in step units ((omega - omega_start) /
omega_step, the point number of a plain sweep) and `sigma_w` its width in
steps. Points listed in `nan_points` are rendered as usual but report omega
as NaN (a motor that could not be read).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import numpy as np
import zmq
from scipy.interpolate import RectBivariateSpline
from scipy.special import erf

from stream.core.encoded import COMPRESSED, compress
from stream.core.messages import DetectorInfo, End, Point, Start
from stream.sources.simulate.config import SimConfig
from stream.sources.simulate.delivery import wait_for_receiver
from stream.sources.simulate.layout import (
    BOX,
    inside_scan,
    layout,
    omega_distance,
    place_spots,
)
from stream.wire.codec import encode

log = logging.getLogger(__name__)

EPOCH = 1763760000.0      # time of point 0; point i is at EPOCH + i * TIME_STEP
TIME_STEP = 0.01
HOT_COUNTS = (5000.0, 60000.0)


class Simulation:
    """The layout (spots, defects, gain) of one simulated scan, and its frames."""

    def __init__(self, config: SimConfig):
        self.config = c = config
        rng = np.random.default_rng((c.seed, 0))
        ny, nx = c.shape
        self.gap_rows, self.gap_cols = _gap_bands(ny, c.gap), _gap_bands(nx, c.gap)
        self.layout = layout(c)
        self.truth = place_spots(c, self.layout, self.gap_rows, self.gap_cols, rng)
        self.flat = _gain_map(c.shape, c.flat_variation, rng)
        gap = np.zeros(c.shape, bool)
        gap[slice(*self.gap_rows), :] = True
        gap[:, slice(*self.gap_cols)] = True
        dead, hot = _place_defects(self.truth, gap, c.dead_pixels, c.hot_pixels, rng)
        self.dead_pixels, self.hot_pixels = dead, hot
        self.hot_counts = rng.uniform(*HOT_COUNTS, size=len(hot[0]))
        self.mask = gap.astype(np.uint8)
        self.mask[dead] = 1
        self._masked = self.mask.astype(bool)
        self._monitor_phase = rng.uniform(0, 2 * math.pi)
        bad = self._masked.copy()
        bad[hot] = True
        _flag_clean(self.truth, bad, c)
        self.truth["clean"] &= inside_scan(self.truth, self.layout)
        self._profiles = [_spot_profiles(self.truth, k) for k in range(c.spots)]

    # ------------------------------------------------------------- messages

    def start(self, scan_id: str) -> Start:
        c = self.config
        lay = self.layout
        return Start(scan_id, {c.detector: DetectorInfo(c.shape, c.dtype)}, list(lay.motors),
                     ["monitor"], c.npoints, dict(lay.trajectory),
                     {"source": "simulate", "config": c.as_dict()})

    def point(self, i: int, scan_id: str) -> Point:
        return Point(scan_id, i, EPOCH + i * TIME_STEP, self.motors(i),
                     {"monitor": self.monitor_value(i)}, {self.config.detector: self.frame(i)})

    def end(self, scan_id: str, npoints: int | None = None) -> End:
        return End(scan_id, "success", self.config.npoints if npoints is None else npoints)

    # --------------------------------------------------------------- values

    def omega(self, i: int) -> float:
        """The true omega of point i (degrees)."""
        return float(self.layout.omega[i])

    def motors(self, i: int) -> dict[str, float]:
        """The motor positions point i reports (omega NaN for the nan_points)."""
        out = {"omega": math.nan if i in self.config.nan_points else self.omega(i)}
        if "dty" in self.layout.motors:
            out["dty"] = float(self.layout.dty[i])
        return out

    def monitor_value(self, i: int) -> float:
        """Monitor counts at point i: a slow drift plus noise, within +-monitor_variation."""
        c = self.config
        u = np.random.default_rng((c.seed, 2, i)).uniform(-1.0, 1.0)
        drift = math.sin(2 * math.pi * i / 37.0 + self._monitor_phase)
        return float(c.monitor * (1.0 + c.monitor_variation * (0.6 * drift + 0.4 * u)))

    def expected(self, i: int, raw: bool = False) -> np.ndarray:
        """Noise-free image of point i (float64).

        raw=False: background + spots at the monitor reference and gain 1 (the
        truth image). raw=True: the mean of what the detector reads: times gain
        and monitor ratio, hot pixels at their level, dead and gap pixels 0.
        """
        c, t = self.config, self.truth
        if not 0 <= i < c.npoints:
            raise IndexError(f"point {i} is outside the scan (0..{c.npoints - 1})")
        img = np.full(c.shape, float(c.background))
        lay = self.layout
        d = omega_distance(lay.omega[i], t["omega"], lay.circle)
        half = lay.width[i] / 2
        near = np.abs(d) <= BOX * t["sigma_omega"] + half
        if lay.dty_range is not None:
            near &= np.abs(lay.dty[i] - t["dty"]) <= BOX * t["sigma_dty"]
        near = np.flatnonzero(near)
        z, d = np.sqrt(2.0) * t["sigma_omega"][near], d[near]
        gw = 0.5 * (erf((d + half) / z) - erf((d - half) / z))
        if lay.dty_range is not None:
            gw *= np.exp(-0.5 * ((lay.dty[i] - t["dty"][near]) / t["sigma_dty"][near]) ** 2)
        for k, w in zip(near, gw * t["total"][near], strict=True):
            rows, cols, ps, pf = self._profiles[k]
            img[rows, cols] += w * np.outer(ps, pf)
        if not raw:
            return img
        img *= self.flat * (self.monitor_value(i) / c.monitor)
        img[self.hot_pixels] = self.hot_counts
        img[self._masked] = 0.0
        return img

    def frame(self, i: int) -> np.ndarray:
        """The detector frame of point i: Poisson counts, defects, cast to dtype."""
        c = self.config
        rng = np.random.default_rng((c.seed, 1, i))
        counts = rng.poisson(self.expected(i, raw=True)).astype(np.float64)
        dtype = np.dtype(c.dtype)
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            np.clip(counts, info.min, info.max, out=counts)
        return counts.astype(dtype)


# ------------------------------------------------------------------- layout


def _gap_bands(n: int, gap: bool) -> tuple[int, int]:
    """[first, last) of the module gap across an axis of n pixels, (0, 0) if none."""
    if not gap or n < 64:
        return 0, 0
    width = max(2, n // 32)
    first = n // 2 - width // 2
    return first, first + width


def _spot_boxes(truth, k: int | None = None, pad: float = 0.0):
    """Integer [s0, s1), [f0, f1) of the +-BOX sigma (+ pad pixels) boxes, clipped at 0."""
    sel = slice(None) if k is None else k
    out = []
    for key in ("s", "f"):
        centre, width = truth[key][sel], BOX * truth["sigma_" + key][sel] + pad
        out.append(np.maximum(np.floor(centre - width), 0).astype(int))
        out.append(np.ceil(centre + width).astype(int) + 1)
    return out


def _spot_profiles(truth, k: int):
    """Row and column slices of spot k's box and its pixel-integrated profiles."""
    s0, s1, f0, f1 = _spot_boxes(truth, k)
    prof = []
    for key, lo, hi in (("s", s0, s1), ("f", f0, f1)):
        x = np.arange(lo, hi + 1) - 0.5 - truth[key][k]
        prof.append(np.diff(0.5 * erf(x / (np.sqrt(2.0) * truth["sigma_" + key][k]))))
    return slice(s0, s1), slice(f0, f1), prof[0], prof[1]


def _place_defects(truth, gap: np.ndarray, ndead: int, nhot: int, rng):
    """Dead and hot pixels, outside the gap and > BOX sigma + 1 from every spot."""
    free = ~gap
    for s0, s1, f0, f1 in zip(*_spot_boxes(truth, pad=1.0), strict=True):
        free[s0:s1, f0:f1] = False
    candidates = np.flatnonzero(free)
    if ndead + nhot > candidates.size:
        raise ValueError(f"no room for {ndead} dead and {nhot} hot pixels away from the spots")
    pick = rng.choice(candidates, ndead + nhot, replace=False)
    shape = gap.shape
    return np.unravel_index(pick[:ndead], shape), np.unravel_index(pick[ndead:], shape)


def _flag_clean(truth, bad: np.ndarray, c: SimConfig):
    """clean = not touching, box inside the frame, no bad pixel in the box (inside the
    scan: simscan.inside_scan)."""
    s0, s1, f0, f1 = _spot_boxes(truth)
    ny, nx = c.shape
    inside = ((truth["s"] - BOX * truth["sigma_s"] >= 0) & (s1 <= ny)
              & (truth["f"] - BOX * truth["sigma_f"] >= 0) & (f1 <= nx))
    table = np.zeros((ny + 1, nx + 1))
    table[1:, 1:] = bad.cumsum(0).cumsum(1)
    s1, f1 = np.minimum(s1, ny), np.minimum(f1, nx)
    nbad = table[s1, f1] - table[s0, f1] - table[s1, f0] + table[s0, f0]
    truth["clean"] = ~truth["touching"] & inside & (nbad == 0)


def _gain_map(shape: tuple[int, int], variation: float, rng) -> np.ndarray:
    """Per-pixel gain with mean 1: a smooth module-scale part plus pixel noise."""
    ny, nx = shape
    coarse = rng.standard_normal((6, 6))
    spline = RectBivariateSpline(np.arange(6), np.arange(6), coarse, kx=3, ky=3)
    smooth = spline(np.linspace(0, 5, ny), np.linspace(0, 5, nx))
    smooth = (smooth - smooth.mean()) / (smooth.std() or 1.0)
    gain = 1.0 + variation * (0.8 * smooth + 0.6 * rng.standard_normal(shape))
    gain = np.clip(gain, 0.5, 1.5)
    return (gain / gain.mean()).astype(np.float32)


# ------------------------------------------------------------------ sending


def send_scan(sim: Simulation, endpoint: str, scan_id: str, rate: float | None = None,
              order: list[int] | None = None, progress: Callable[[int, int], None] | None = None,
              linger_ms: int = 10_000, timeout: float | None = None,
              encoding: str = "raw", receiver_timeout: float | None = None,
              waiting: Callable[[], None] | None = None) -> int:
    """Send start, the points (in `order` if given), then end on a PUSH socket that
    connects to `endpoint`; return the number of points sent.

    Lossless: a full queue blocks the sender (or raises TimeoutError after
    `timeout` seconds if given). `rate` is in points per second, on a deadline
    schedule. On close, queued messages are delivered for up to `linger_ms`.
    `encoding`: frames go raw, or compressed as `bslz4` (bitshuffle + LZ4, as an
    Eiger sends them) or `lz4` (PROTOCOL.md). `receiver_timeout`: send nothing before
    a receiver has taken the connection (`waiting()` says it waits), TimeoutError if
    none has within that many seconds: no message was sent, none is dropped unseen.
    """
    c = sim.config
    if encoding not in ("raw", *COMPRESSED):
        raise ValueError(f"encoding must be one of raw, {', '.join(COMPRESSED)}; "
                         f"got {encoding!r}")
    order = list(range(c.npoints)) if order is None else [int(i) for i in order]
    bad = [i for i in order if not 0 <= i < c.npoints]
    if bad:
        raise ValueError(f"order holds points outside 0..{c.npoints - 1}: {bad[:5]}")
    if rate is not None and rate <= 0:
        raise ValueError(f"rate must be > 0 points/s, got {rate}")
    frame_bytes = c.shape[0] * c.shape[1] * np.dtype(c.dtype).itemsize
    sock = zmq.Context.instance().socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDHWM, int(np.clip((256 << 20) // frame_bytes, 4, 1000)))
    sock.setsockopt(zmq.SNDTIMEO, -1 if timeout is None else int(timeout * 1000))
    sock.setsockopt(zmq.LINGER, linger_ms)
    sent = 0
    monitor = None if receiver_timeout is None else \
        sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
    try:
        sock.connect(endpoint)
        if monitor is not None and not wait_for_receiver(monitor, receiver_timeout, waiting):
            raise TimeoutError(f"no receiver at {endpoint} within {receiver_timeout:g} s: "
                               f"none of the {len(order)} points was delivered")
        _send(sock, sim.start(scan_id))
        t0 = time.perf_counter()
        for k, i in enumerate(order):
            point = sim.point(i, scan_id)
            if encoding != "raw":
                point.frames = {k: compress(f, encoding) for k, f in point.frames.items()}
            if rate is not None:
                delay = t0 + k / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            try:
                _send(sock, point)
            except TimeoutError as exc:
                raise TimeoutError(f"{exc}: {len(order) - sent} of the {len(order)} points "
                                   f"were not delivered") from None
            sent += 1
            if progress is not None:
                progress(sent, len(order))
        _send(sock, sim.end(scan_id, sent))
        log.debug("sent scan %s: %d points to %s", scan_id, sent, endpoint)
    finally:
        if monitor is not None:
            sock.disable_monitor()
            monitor.close(linger=0)
        sock.close()
    return sent


def _send(sock: zmq.Socket, msg) -> None:
    try:
        sock.send_multipart(encode(msg), copy=False)
    except zmq.Again:
        raise TimeoutError(f"send of {type(msg).__name__} timed out: no receiver "
                           "took it in time") from None
