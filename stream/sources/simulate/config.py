"""The parameters of a simulated scan (`SimConfig`), checked when it is made."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from stream.core.messages import DTYPES
from stream.sources.simulate.layout import KINDS


@dataclass(frozen=True)
class SimConfig:
    """Parameters of a simulated sweep; the defaults make a 256 x 256 x 90 scan."""

    npoints: int = 90
    shape: tuple[int, int] = (256, 256)
    spots: int = 40
    seed: int = 0
    background: float = 10.0
    omega_start: float = 0.0
    omega_step: float = 0.25
    monitor: float = 1e4
    monitor_variation: float = 0.05
    flat_variation: float = 0.05
    hot_pixels: int = 10
    dead_pixels: int = 10
    gap: bool = True
    touching_fraction: float = 0.2
    sigma_px: tuple[float, float] = (1.0, 2.5)
    sigma_points: tuple[float, float] = (0.7, 1.5)
    amplitude: tuple[float, float] = (300.0, 3000.0)
    dtype: str = "uint16"
    detector: str = "eiger"
    trajectory: str = "sweep"          # sweep | interlaced | grid | snake | free (simscan)
    wrap: bool = False                 # sweep, grid, snake (fast omega): whole turns
    iflip: bool = False                # interlaced: the second pass runs backwards
    nrows: int = 1                     # grid, snake: rows of npoints / nrows points
    fast: str = "omega"                # grid, snake: the motor that moves along a row
    dty_start: float = 0.0
    dty_step: float = 1.0              # grid, snake: between rows (fast omega) or points
    dty_amplitude: float = 0.0         # free: dty = dty_start + A sin(2 pi omega / period)
    dty_period: float = 3600.0         # free: degrees of rotation per dty cycle
    sigma_dty: tuple[float, float] = (0.8, 1.5)  # 2D scans: spot width in dty
    nan_points: tuple[int, ...] = ()   # points whose omega reads NaN

    def __post_init__(self):
        def need(ok: bool, key: str, what: str):
            if not ok:
                raise ValueError(f"SimConfig.{key}: {what}, got {getattr(self, key)!r}")

        for key in ("npoints", "spots", "seed", "hot_pixels", "dead_pixels"):
            v = getattr(self, key)
            need(isinstance(v, int) and not isinstance(v, bool) and v >= 0, key,
                 "must be an integer >= 0")
        need(self.npoints >= 1, "npoints", "must be >= 1")
        need(len(self.shape) == 2 and all(isinstance(n, int) and 0 < n < 65536
                                          for n in self.shape), "shape",
             "must be two integers in 1..65535")
        for key in ("sigma_px", "sigma_points", "amplitude"):
            lo, hi = getattr(self, key)
            need(0 < lo <= hi, key, "must be a range (lo, hi) with 0 < lo <= hi")
        for key in ("background", "monitor_variation", "flat_variation"):
            need(getattr(self, key) >= 0, key, "must be >= 0")
        need(self.monitor > 0, "monitor", "must be > 0")
        need(self.monitor_variation < 1, "monitor_variation", "must be < 1")
        need(self.flat_variation < 0.5, "flat_variation", "must be < 0.5")
        need(0 <= self.touching_fraction <= 1, "touching_fraction", "must be in [0, 1]")
        need(self.omega_step != 0, "omega_step", "must not be 0")
        need(self.dtype in DTYPES, "dtype", f"must be one of {', '.join(DTYPES)}")
        need(self.detector.isidentifier(), "detector", "must be an identifier")
        self._check_scan(need)

    def _check_scan(self, need) -> None:
        kind = self.trajectory
        need(kind in KINDS, "trajectory", f"must be one of {', '.join(KINDS)}")
        lo, hi = self.sigma_dty
        need(0 < lo <= hi, "sigma_dty", "must be a range (lo, hi) with 0 < lo <= hi")
        need(isinstance(self.nrows, int) and self.nrows >= 1, "nrows", "must be an integer >= 1")
        need(self.fast in ("omega", "dty"), "fast", "must be 'omega' or 'dty'")
        need(all(isinstance(i, int) and 0 <= i < self.npoints for i in self.nan_points),
             "nan_points", f"must be point numbers in 0..{self.npoints - 1}")
        need(self.dty_amplitude >= 0, "dty_amplitude", "must be >= 0")
        need(self.dty_period > 0, "dty_period", "must be > 0")
        if kind == "interlaced":
            need(self.npoints % 2 == 0, "npoints", "must be even for an interlaced scan")
        if kind in ("grid", "snake"):
            need(self.npoints % self.nrows == 0, "npoints", f"must be a multiple of nrows "
                                                            f"({self.nrows})")
            need(self.fast == "omega" or self.dty_step != 0, "dty_step",
                 "must not be 0 when dty is the fast motor")
        if self.wrap:
            need(kind in ("sweep", "grid", "snake") and self.fast == "omega", "wrap",
                 "is for sweeps and grids or snakes along omega")
            per_turn = 360.0 / abs(self.omega_step)
            nturn = self.npoints if kind == "sweep" else self.npoints // self.nrows
            need(abs(per_turn - round(per_turn)) < 1e-9 and
                 (nturn >= round(per_turn) if kind == "sweep" else nturn == round(per_turn)),
                 "omega_step", f"must make whole turns of the {nturn} points per "
                               f"{'scan' if kind == 'sweep' else 'row'} with wrap")

    def as_dict(self) -> dict:
        """Plain types only (tuples as lists), as stored in `start.meta`."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> SimConfig:
        """The inverse of `as_dict`; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"SimConfig: unknown keys {', '.join(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
