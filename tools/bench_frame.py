"""Per-frame cost of the chain on EIGER2 4M frames, against ImageD11's sparse path (TARGETS P1).

    python tools/bench_frame.py [--frames 6] [--repeats 5] [--spots 300] [--cut 40]
                                [--min-pixels 2] [--sigma-px 1.5 3.5] [--amplitude 3000 30000]
                                [--split none|local_max] [--linker-split none|local_max|pixels]
                                [--imaged11-no-background]
                                [--link-own-runs] [--json out.json]

Frames: the middle of a simulated omega sweep (Poisson background 10, flat
gain, dead / hot pixels, a module gap, monitor drift), 2162 x 2068 uint16,
with the scan's spot count chosen so that each frame holds about `--spots`
true spots (a spot is on a frame when its noise-free peak there is above
the cut); the measured spots, 2D peaks and pixels kept per frame are
printed. The default spot size and brightness give ~60k kept pixels for 300
spots, as in TARGETS.md's ImageD11 reference figure; `--sigma-px 1 2.5
--amplitude 300 3000` is the simulator's default, fainter workload.

Timed on the same frames, in the same run, frame by frame in turn, one
thread (numba, OpenMP and BLAS limited to one thread before they load):

* peakstream: correct (dark, flat, mask) + normalise + threshold fused into
  one dense pass, then label (8-connected, blobs under --min-pixels dropped;
  then split at local maxima unless `--split none`, ImageD11's labelling),
  properties (moments), link (any-pixel overlaps with the previous frame,
  union-find into cliques; the cliques that close are cut as `--linker-split`
  says, by default [linker]'s default split, "pixels": the share of the
  closed cliques that were separated is printed). Without the split the label node hands the runs
  of the labelled pixels to properties and link on the frame (the worker
  wire carries them to the collector); `--link-own-runs` times the linker
  finding them itself, as it did before the wire carried them;
* ImageD11 2.1.3's sparse path, as its lima_segmenter and peak search do it:
  numba `select` (raw > cut with the detector mask) + `clean` (connected
  pixels, blobs under --min-pixels dropped), `sparse_connected_pixels` (the
  labels of the peak search), `sparse_blob2Dproperties` (moments) and
  `overlaps_linear` with the previous frame. It subtracts the dark first, as
  lima_segmenter does when given a bgfile (float32(frame) - bg, then the cut):
  the like-for-like comparison, since our chain subtracts the dark too; it does
  no flat or monitor correction. `--imaged11-no-background`: the raw select
  (the cut on raw counts, no dark);
* scipy: `frame > cut` + `ndimage.label` (8-connected), as a floor reference.

Prints min / median / max ms per frame over the repeats for every stage,
the ratio ImageD11 / peakstream per repeat, and the P1 verdict (ratio >= 3,
median below 2.5 ms), with the machine, versions, frame shape, spots and
pixels kept; `--json FILE` writes the same figures.
"""

from __future__ import annotations

import os

for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy, numba and ImageD11 load

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402
import scipy  # noqa: E402
from benchinfo import cpu_model, package_version  # noqa: E402
from scipy import ndimage  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nodes import NODES, fuse  # noqa: E402
from nodes.link.linker import Linker  # noqa: E402
from stream.config.schema import DEFAULTS  # noqa: E402
from stream.core.item import Item, SparseFrame  # noqa: E402
from stream.core.scan import Scan  # noqa: E402
from stream.sources.simulate import Simulation  # noqa: E402
from stream.sources.simulate.config import SimConfig  # noqa: E402

SHAPE = (2162, 2068)  # EIGER2 4M
OURS = ("dense", "label", "properties", "link", "total")
THEIRS = ("select", "clean", "label", "moments", "overlaps", "total")
P1_RATIO, P1_MS = 3.0, 2.5


def stats(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


# ------------------------------------------------------------------ frames


def spots_on_frame(sim: Simulation, i: int, cut: float) -> int:
    """True spots whose noise-free peak on frame i (monitor reference, gain 1) is above cut."""
    image = sim.expected(i)
    t = sim.truth
    n = 0
    for k in range(len(t["s"])):
        rows, cols, _, _ = sim._profiles[k]  # the spot's +-5 sigma box
        n += bool(image[rows, cols].max() > cut)
    return n


def make_frames(args) -> tuple[Simulation, list[int], list[int]]:
    """A scan whose middle frames hold ~args.spots spots each: (sim, points, spots per frame)."""
    npoints = max(args.frames + 14, 20)  # the simulator keeps spots off the scan ends
    first = (npoints - args.frames) // 2
    points = list(range(first, first + args.frames))
    total = int(args.spots * 1.2)
    for _ in range(4):  # scale the scan's spot count until the frames hold ~args.spots
        sim = Simulation(SimConfig(npoints=npoints, shape=SHAPE, spots=total, seed=args.seed,
                                   sigma_points=(0.7, 1.2), sigma_px=tuple(args.sigma_px),
                                   amplitude=tuple(args.amplitude)))
        present = [spots_on_frame(sim, i, args.cut) for i in points]
        mean = statistics.mean(present)
        if abs(mean - args.spots) <= 0.05 * args.spots or mean == 0:
            break
        total = max(1, round(total * args.spots / mean))
    return sim, points, present


# ------------------------------------------------------------------ the three paths


class Peakstream:
    """correct + normalise + threshold (one dense pass), label, properties, link."""

    def __init__(self, sim: Simulation, cut: float, min_pixels: int, split: str | None = None,
                 own_runs: bool = False, linker_split: str = "none"):
        self.scan = Scan.from_start(sim.start("bench"))
        dark = np.zeros(SHAPE, np.float32)
        chain = fuse([NODES["correct"](dark=dark, flat=sim.flat, mask=sim.mask),
                      NODES["normalise"](counter="monitor", reference=sim.config.monitor),
                      NODES["threshold"](cut=cut)])
        assert len(chain) == 1 and chain[0].kind == "dense"
        self.dense = chain[0]
        self.label = NODES["label"](min_pixels=min_pixels,
                                    **({} if split is None else {"split": split}))
        self.split = getattr(self.label, "split", "none")
        self.props = NODES["properties"]()
        self.linker = Linker(criterion="any_pixel", split=linker_split)
        self.linker_split = linker_split
        self.closed = 0
        self.own_runs = own_runs
        for node in (self.dense, self.label, self.props, self.linker):
            node.setup(self.scan)

    def start(self) -> None:
        self.linker.setup(self.scan)

    def process(self, k: int, frame: np.ndarray, monitor: float, omega: float):
        item = Item(k, "eiger", frame=frame, counters={"monitor": monitor},
                    motors={"omega": omega})
        t0 = time.perf_counter()
        item = self.dense.process(item)
        t1 = time.perf_counter()
        item = self.label.process(item)
        t2 = time.perf_counter()
        item = self.props.process(item)
        t3 = time.perf_counter()
        sparse = item.sparse
        if self.own_runs:  # without the label node's runs: the linker finds them
            sparse = SparseFrame(sparse.shape, sparse.row, sparse.col, sparse.intensity,
                                 sparse.label, sparse.npeaks)
        t3b = time.perf_counter()
        linked = self.linker.add_point(k, sparse, item.peaks, item.motors)
        t4 = time.perf_counter()
        times = (t1 - t0, t2 - t1, t3 - t2, t4 - t3b, t4 - t3b + t3 - t0)
        self.closed += len(linked.cliques["clique_id"])
        counts = {"pixels": item.sparse.nnz, "peaks": int(item.sparse.npeaks),
                  "overlaps": len(linked.overlaps["npixels"]), "flags": len(item.flags)}
        return times, counts


class ImageD11Path:
    """lima_segmenter select + clean, sparse_connected_pixels, blob moments, overlaps_linear."""

    def __init__(self, sim: Simulation, cut: float, min_pixels: int,
                 background: np.ndarray | None = None):
        with warnings.catch_warnings():  # its multiprocessing start-method advice
            warnings.simplefilter("ignore")
            import ImageD11.cImageD11
            from ImageD11 import sparseframe
            from ImageD11.sinograms import lima_segmenter

        if hasattr(ImageD11.cImageD11, "cimaged11_omp_set_num_threads"):
            ImageD11.cImageD11.cimaged11_omp_set_num_threads(1)
        self.sparseframe, self.segmenter = sparseframe, lima_segmenter
        active = (1 - sim.mask).astype(np.uint8)  # ImageD11's mask: 1 = active pixel
        self.options = lima_segmenter.SegmenterOptions(cut=cut, howmany=100000,
                                                       pixels_in_spot=min_pixels)
        self.options.setup()
        self.options.mask = active
        self.background = background  # as lima_segmenter with a bgfile: float32(frame) - bg
        self.select = lima_segmenter.frmtosparse(
            active, np.uint16 if background is None else np.float32)
        self.overlaps = sparseframe.overlaps_linear(SHAPE[0] * SHAPE[1] // 4)
        self.cut = cut
        self.previous = None
        warm = np.zeros(SHAPE, np.uint16)
        warm[5:8, 5:8] = 60000
        for _ in range(2):
            self.process(warm)
        self.start()

    def start(self) -> None:
        self.previous = None

    def process(self, frame: np.ndarray):
        sf = self.sparseframe
        t0 = time.perf_counter()
        if self.background is not None:
            frame = frame.astype(np.float32) - self.background
        nnz, row, col, val = self.select(frame, self.cut)
        t1 = time.perf_counter()
        spf = self.segmenter.clean(nnz, row, col, val, self.options)
        t2 = time.perf_counter()
        npeaks = noverlaps = 0
        if spf is not None:
            npeaks = sf.sparse_connected_pixels(spf, label_name="labels", data_name="f32",
                                                threshold=0)
        t3 = time.perf_counter()
        if spf is not None:
            sf.sparse_moments(spf, "f32", "labels")
        t4 = time.perf_counter()
        if spf is not None and self.previous is not None:
            prev, nprev = self.previous
            noverlaps, _ = self.overlaps(spf.row, spf.col, spf.pixels["labels"], npeaks,
                                         prev.row, prev.col, prev.pixels["labels"], nprev)
        t5 = time.perf_counter()
        self.previous = (spf, npeaks) if spf is not None else None
        times = (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t5 - t0)
        counts = {"pixels": 0 if spf is None else spf.nnz, "peaks": int(npeaks),
                  "overlaps": int(noverlaps)}
        return times, counts


def scipy_label(frame: np.ndarray, cut: float) -> float:
    t0 = time.perf_counter()
    ndimage.label(frame > cut, structure=np.ones((3, 3)))
    return time.perf_counter() - t0


# ------------------------------------------------------------------ main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=6, help="frames per repeat (default 6)")
    ap.add_argument("--repeats", type=int, default=5, help="repeats (default 5, at least 5)")
    ap.add_argument("--spots", type=int, default=300, help="true spots per frame (default 300)")
    ap.add_argument("--cut", type=float, default=40.0, help="threshold (default 40)")
    ap.add_argument("--min-pixels", type=int, default=2,
                    help="smallest blob kept, both codes (default 2)")
    ap.add_argument("--sigma-px", type=float, nargs=2, default=[1.5, 3.5], metavar=("LO", "HI"),
                    help="spot width range in pixels (default 1.5 3.5)")
    ap.add_argument("--amplitude", type=float, nargs=2, default=[3000.0, 30000.0],
                    metavar=("LO", "HI"), help="spot integrated intensity range "
                                               "(default 3000 30000)")
    ap.add_argument("--linker-split", choices=("none", "local_max", "pixels"),
                    default=DEFAULTS["linker"]["split"],
                    help="the linker's split of closed cliques (default: [linker]'s, "
                         f"{DEFAULTS['linker']['split']})")
    ap.add_argument("--split", choices=("none", "local_max"),
                    help="label split (default: the label node's default; none is "
                         "ImageD11's plain connected components)")
    ap.add_argument("--link-own-runs", action="store_true",
                    help="the linker finds the runs of the labelled pixels itself, as it "
                         "did before the worker wire carried them, instead of taking the "
                         "label node's (split none)")
    ap.add_argument("--seed", type=int, default=1, help="simulation seed (default 1)")
    ap.add_argument("--no-imaged11", action="store_true", help="skip ImageD11")
    ap.add_argument("--imaged11-no-background", action="store_true",
                    help="ImageD11 selects on raw counts (default: it subtracts the dark "
                         "first, as lima_segmenter does with a bgfile: float32(frame) - bg "
                         "over the whole frame, in select, like our correct)")
    ap.add_argument("--imaged11-background", action="store_true",
                    help="the default; kept so that older command lines still run")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()
    repeats = max(args.repeats, 5)
    numba.set_num_threads(1)

    print(f"making {args.frames} frames {SHAPE[0]}x{SHAPE[1]} uint16 with ~{args.spots} "
          "spots each ...", file=sys.stderr)
    sim, points, present = make_frames(args)
    frames = [(k, sim.frame(i), sim.monitor_value(i), sim.omega(i))
              for k, i in enumerate(points)]

    ours = Peakstream(sim, args.cut, args.min_pixels, args.split, args.link_own_runs,
                      args.linker_split)
    subtract = not args.imaged11_no_background
    background = ours.dense.correct.dark32 if subtract else None
    theirs = None if args.no_imaged11 else ImageD11Path(sim, args.cut, args.min_pixels,
                                                        background)

    times = {("peakstream", s): [] for s in OURS}
    times.update({("imaged11", s): [] for s in THEIRS} if theirs else {})
    times[("scipy", "threshold+label")] = []
    counts: dict[str, list[dict]] = {"peakstream": [], "imaged11": []}
    ratios = []
    for rep in range(repeats):  # each frame through each code in turn
        ours.start()
        if theirs:
            theirs.start()
        acc: dict[tuple[str, str], float] = dict.fromkeys(times, 0.0)
        for k, frame, monitor, omega in frames:
            t, c = ours.process(k, frame, monitor, omega)
            for s, dt in zip(OURS, t, strict=True):
                acc[("peakstream", s)] += dt
            if rep == 0:
                counts["peakstream"].append(c)
            if theirs:
                t, c = theirs.process(frame)
                for s, dt in zip(THEIRS, t, strict=True):
                    acc[("imaged11", s)] += dt
                if rep == 0:
                    counts["imaged11"].append(c)
            acc[("scipy", "threshold+label")] += scipy_label(frame, args.cut)
        for key in times:
            times[key].append(1e3 * acc[key] / len(frames))
        if theirs:
            ratios.append(times[("imaged11", "total")][-1] / times[("peakstream", "total")][-1])

    def per_frame(code: str, key: str) -> dict[str, float]:
        v = [c[key] for c in counts[code]]
        return {"mean": statistics.mean(v), "min": min(v), "max": max(v)} if v else {}

    ms = {f"{code}.{stage}": stats(v) for (code, stage), v in times.items()}
    ours_median = ms["peakstream.total"]["median"]
    report = {
        "machine": {"cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
                    "cpu": cpu_model(), "python": platform.python_version(),
                    "numba_threads": numba.get_num_threads()},
        "versions": {"numpy": np.__version__, "numba": numba.__version__,
                     "scipy": scipy.__version__, "ImageD11": package_version("ImageD11"),
                     "peakstream": package_version("peakstream")},
        "frames": {"shape": list(SHAPE), "dtype": "uint16", "count": len(frames),
                   "repeats": repeats, "scan_points": sim.config.npoints,
                   "scan_spots": sim.config.spots, "points": points,
                   "sigma_px": args.sigma_px, "amplitude": args.amplitude,
                   "background": sim.config.background, "cut": args.cut,
                   "min_pixels": args.min_pixels, "label_split": ours.split,
                   "imaged11_background": subtract, "link_own_runs": args.link_own_runs,
                   "linker_split": ours.linker_split},
        "per_frame": {"spots_true": {"mean": statistics.mean(present), "min": min(present),
                                     "max": max(present)},
                      **{f"{code}.{key}": per_frame(code, key)
                         for code in counts for key in ("pixels", "peaks", "overlaps")
                         if counts[code]}},
        "ms_per_frame": ms,
    }
    if ratios:
        ratio = stats(ratios)
        report["ratio_imaged11_over_peakstream"] = ratio
        report["P1"] = {"ratio_target": P1_RATIO, "ms_target": P1_MS,
                        "ratio_ok": ratio["median"] >= P1_RATIO, "ms_ok": ours_median < P1_MS}

    m, f, pf = report["machine"], report["frames"], report["per_frame"]
    print(f"machine   {m['cores']} cores ({m['usable_cores']} usable), {m['cpu']}, "
          f"Python {m['python']}, numba threads {m['numba_threads']}")
    print("versions  " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()))
    print(f"frames    {f['count']} x {SHAPE[0]}x{SHAPE[1]} uint16, points {points[0]}-"
          f"{points[-1]} of a {f['scan_points']}-point sweep with {f['scan_spots']} spots "
          f"(sigma {args.sigma_px[0]:g}-{args.sigma_px[1]:g} px, amplitude "
          f"{args.amplitude[0]:g}-{args.amplitude[1]:g}, background "
          f"{f['background']:g}), cut {args.cut:g}, min {args.min_pixels} px, label split "
          f"{ours.split}, link any_pixel, linker split {ours.linker_split}"
          f"{' (own runs)' if args.link_own_runs else ''}"
          f", ImageD11 {'subtracts the dark' if subtract else 'selects raw counts (no dark)'}; "
          f"{repeats} repeats")
    st = pf["spots_true"]
    print(f"per frame true spots {st['mean']:.0f} ({st['min']}-{st['max']})", end="")
    for code in ("peakstream", "imaged11"):
        if counts[code]:
            print(f"; {code}: 2D peaks {pf[f'{code}.peaks']['mean']:.0f}, pixels kept "
                  f"{pf[f'{code}.pixels']['mean']:,.0f}, overlaps "
                  f"{pf[f'{code}.overlaps']['mean']:.0f}", end="")
    print()
    sep = getattr(ours.linker, "separator", None)
    if ours.linker_split == "pixels" and sep is not None:
        print(f"cliques closed {ours.closed} (all repeats); examined for separation "
              f"{sep.nexamined}, separated {sep.nseparated} "
              f"({100.0 * sep.nseparated / max(ours.closed, 1):.1f}% of the closed)")
    print(f"{'ms per frame':<30}{'min':>8}{'median':>8}{'max':>8}")
    for key, v in ms.items():
        print(f"{key:<30}{v['min']:>8.2f}{v['median']:>8.2f}{v['max']:>8.2f}")
    if ratios:
        r = report["ratio_imaged11_over_peakstream"]
        print(f"{'ratio ImageD11 / peakstream':<30}{r['min']:>8.2f}{r['median']:>8.2f}"
              f"{r['max']:>8.2f}")
        p1 = report["P1"]
        print(f"P1: ratio {r['median']:.2f} {'>=' if p1['ratio_ok'] else '<'} {P1_RATIO:g} "
              f"({'met' if p1['ratio_ok'] else 'NOT met'}); median {ours_median:.2f} ms "
              f"{'<' if p1['ms_ok'] else '>='} {P1_MS:g} ms "
              f"({'met' if p1['ms_ok'] else 'NOT met'})")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
