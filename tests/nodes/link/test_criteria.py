"""Linker criteria (any_pixel, fraction, distance, combined) against a naive reference;
blocks of points give what points one by one give."""

from __future__ import annotations

import numpy as np
import pytest

from nodes.kernels.overlap import pairs_within
from nodes.link.criteria import Rule
from nodes.link.linker import Linker, PeakBlock
from stream.config.base import ConfigError
from stream.config.schema import Config
from stream.core.item import PEAK_COLUMNS
from stream.core.scan import Sweep
from tests.support.link import SHAPE, Grid, cat, make_scan, partition, random_stack, run
from tests.support.unionfind import NaiveForest


def naive_links(frames, trajectory, rule: Rule, missing=()):
    """Pairs of peaks (global ids) to link, by brute force over all pairs of blobs."""
    blobs, offsets, total = [], [], 0
    for p, (sparse, peaks) in enumerate(frames):
        keys = sparse.row.astype(int) * SHAPE[1] + sparse.col.astype(int)
        n = 0 if p in missing else sparse.npeaks
        blobs.append([(set(keys[sparse.label == k + 1].tolist()), peaks["s_raw"][k],
                       peaks["f_raw"][k]) for k in range(n)])
        offsets.append(total)
        total += n
    links = set()
    for i in range(len(frames)):
        for j in trajectory.neighbours_before(i):
            for a, (pa, sa, fa) in enumerate(blobs[j]):
                for b, (pb, sb, fb) in enumerate(blobs[i]):
                    shared = len(pa & pb)
                    ok = []
                    for name in rule.names:
                        if name == "any_pixel":
                            ok.append(shared > 0)
                        elif name == "fraction":
                            ok.append(shared > 0 and shared >= rule.fraction * min(len(pa),
                                                                                   len(pb)))
                        else:
                            ok.append((sa - sb) ** 2 + (fa - fb) ** 2 <= rule.distance ** 2)
                    if all(ok):
                        links.add((offsets[j] + a, offsets[i] + b))
    forest = NaiveForest(range(total))
    for a, b in links:
        forest.union(a, b)
    return forest.groups()


SETTINGS = [
    {"criterion": "any_pixel"},
    {"criterion": "fraction", "fraction": 0.5},
    {"criterion": "distance", "distance": 2.0},
    {"criterion": ["fraction", "distance"], "fraction": 0.3, "distance": 1.5},
    {"criterion": ["any_pixel", "distance"], "distance": 1.0},
]


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: str(s["criterion"]))
@pytest.mark.parametrize("trajectory, npoints, missing", [
    (Sweep(16), 16, (6,)),
    (Grid(3, 5), 15, (7,)),
])
def test_criteria_match_naive_reference(setting, trajectory, npoints, missing):
    frames = random_stack(npoints, seed=npoints)
    linker = Linker(**setting)
    results = run(linker, make_scan(trajectory, npoints), frames, set(missing))
    want = naive_links(frames, trajectory, linker.rule, set(missing))
    assert partition(cat(results, "members")) == want
    # raw overlaps are stored whatever the criterion
    any_pixel = run(Linker(), make_scan(trajectory, npoints), frames, set(missing))
    for k in ("peak_a", "peak_b", "npixels", "score"):
        assert np.array_equal(cat(results, "overlaps")[k], cat(any_pixel, "overlaps")[k])


def test_criteria_differ_where_they_should():
    frames = random_stack(20, seed=2)
    parts = {}
    for s in SETTINGS[:3]:
        results = run(Linker(**s), make_scan(Sweep(20), 20), frames)
        parts[str(s["criterion"])] = len(partition(cat(results, "members")))
    assert parts["fraction"] > parts["any_pixel"]  # fraction splits some merely touching
    assert len(set(parts.values())) == 3


def test_pairs_within_kernel():
    rng = np.random.default_rng(0)
    sa, fa = rng.uniform(0, 20, 50), rng.uniform(0, 20, 50)
    sb, fb = rng.uniform(0, 20, 60), rng.uniform(0, 20, 60)
    sa[3] = np.nan
    ia, ib = pairs_within(sa, fa, sb, fb, 2.5)
    d2 = (sa[:, None] - sb[None]) ** 2 + (fa[:, None] - fb[None]) ** 2
    want = np.argwhere(d2 <= 2.5 ** 2)
    assert np.array_equal(np.c_[ia, ib], want)  # sorted by (a, b), NaN never pairs
    assert len(ia) > 10


@pytest.mark.parametrize("setting", SETTINGS[:4], ids=lambda s: str(s["criterion"]))
def test_blocks_equal_points(setting):
    npoints = 40
    frames = random_stack(npoints, seed=9)
    scan = make_scan(Sweep(npoints), npoints)
    one = run(Linker(**setting), scan, frames, {11})
    linker = Linker(**setting)
    linker.setup(make_scan(Sweep(npoints), npoints))
    blocks = []
    for lo, hi in ((0, 1), (1, 13), (13, 14), (14, 40)):
        sub = frames[lo:hi]
        has = np.array([p != 11 for p in range(lo, hi)])
        pick = [s for (s, _), h in zip(sub, has, strict=True) if h]
        peaks = [pk for (_, pk), h in zip(sub, has, strict=True) if h]
        blocks.append(linker.add_block(PeakBlock(
            lo, SHAPE, has,
            np.array([s.nnz if h else 0 for (s, _), h in zip(sub, has, strict=True)]),
            np.concatenate([s.row for s in pick]), np.concatenate([s.col for s in pick]),
            np.concatenate([s.label for s in pick]),
            np.array([s.npeaks if h else 0 for (s, _), h in zip(sub, has, strict=True)]),
            {k: np.concatenate([p[k] for p in peaks]) for k in PEAK_COLUMNS},
            {"omega": 0.25 * np.arange(lo, hi), "dty": np.ones(hi - lo)})))
    blocks.append(linker.finish())
    for table in ("overlaps", "cliques"):
        a, b = cat(one, table), cat(blocks, table)
        for k in a:
            assert np.array_equal(a[k], b[k], equal_nan=True), (table, k)
    ma, mb = cat(one, "members"), cat(blocks, "members")
    order = np.argsort(mb["peak_id"])
    assert np.array_equal(np.sort(ma["peak_id"]), mb["peak_id"][order])


@pytest.mark.parametrize("text, words", [
    ("criterion = 'nearest'", ["criterion 'nearest'", "any_pixel"]),
    ("criterion = []", ["criterion must be"]),
    ("criterion = ['fraction', 'fraction']", ["twice"]),
    ("criterion = 3", ["criterion must be"]),
    ("fraction = 0.0", ["fraction"]),
    ("fraction = 'a lot'", ["fraction must be float"]),
    ("distance = -1", ["distance"]),
    ("width = 3", ["unknown key 'width'"]),
])
def test_linker_config_errors_name_the_key(tmp_path, text, words):
    path = tmp_path / "c.toml"
    path.write_text(f"[linker]\n{text}\n")
    with pytest.raises(ConfigError) as err:
        Config.load(path)
    for w in words:
        assert w in str(err.value)
    assert "c.toml" in str(err.value)


def test_linker_config_defaults_and_combination(tmp_path):
    config = Config.load(None)
    assert config["linker"] == {"criterion": "fraction", "fraction": 0.2, "distance": 3.0,
                                "split": "local_max", "prominence": 0.1,
                                "prominence_sigma": 3.0, "background": 0.0}
    path = tmp_path / "c.toml"
    path.write_text("[linker]\ncriterion = ['fraction', 'distance']\ndistance = 2\n")
    config = Config.load(path)
    linker = Linker(**config["linker"])
    assert linker.rule.describe() == "fraction 0.2 and distance 2"
    assert "criterion = [\"fraction\", \"distance\"]" in config.text()
