"""The shares table (2D peak, clique, intensity share) of split "pixels", through the
real file: written by the live chain and by relink, every pixel counted once, and
carried by inspect, the flt and sparse exports and the rocking curves."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from stream.cli.main import main
from stream.offline.export import flt_columns
from stream.offline.rocking import rocking_curve
from stream.sources.simulate import Simulation
from stream.sources.simulate.config import SimConfig
from stream.sources.simulate.truth import match_truth
from stream.store.reader import format_summary, load, summary
from tests.support.paths import ROOT


def process(sim: Simulation, path, split: str, linker: dict | None = None,
            flush: float | None = None) -> None:
    """The simulated scan through the per-point chain (configs/simulated.toml, inline,
    wire-encoded), the label node's split set to `split` (and [linker] updated by
    `linker`, [output] flush_interval set to `flush`)."""
    import tomllib

    from stream.config.schema import Config
    from stream.run.runner import ScanRunner
    from stream.wire.codec import encode

    data = tomllib.loads((ROOT / "configs" / "simulated.toml").read_text())
    for node in data["node"]:
        if node["kind"] == "label":
            node["split"] = split
    data["linker"].update(linker or {})
    if flush is not None:
        data["output"]["flush_interval"] = flush
    runner = ScanRunner(Config(data, "simulated.toml", ROOT / "configs"), output_file=path)
    runner.handle(encode(sim.start("s")))
    for i in range(sim.config.npoints):
        runner.handle(encode(sim.point(i, "s")))
    runner.handle(encode(sim.end("s")))
    runner.close()


@pytest.fixture(scope="module")
def scanned(tmp_path_factory):
    """A simulated scan with touching pairs through the chain (the [linker] defaults:
    split pixels), and the same file relinked with split none."""
    tmp = tmp_path_factory.mktemp("shares")
    sim = Simulation(SimConfig(npoints=40, shape=(128, 128), spots=16, seed=4,
                               touching_fraction=0.5, gap=False))
    base = tmp / "base.h5"
    process(sim, base, "local_max")
    pixels, whole = tmp / "pixels.h5", tmp / "whole.h5"
    assert main(["relink", str(base), "--criterion", "fraction", "--fraction", "0.2",
                 "--split", "pixels", "--output", str(pixels)]) == 0
    assert main(["relink", str(base), "--split", "none", "--output", str(whole)]) == 0
    return sim, pixels, whole


def test_every_pixel_counted_once(scanned):
    _, pixels, _ = scanned
    data = load(pixels)
    pk, cl, sh = data["peaks2d"], data["cliques"], data["shares"]
    assert (sh["share"] < 1).any()  # some 2D peaks were split between cliques
    per_peak = np.bincount(sh["peak_id"], weights=sh["share"], minlength=len(pk["npx"]))
    assert np.allclose(per_peak, 1.0)
    assert cl["sum_intensity"].sum() == pytest.approx(pk["sum_intensity"].sum(), rel=1e-9)
    # each clique's intensity is the sum of its members' shares
    own = np.bincount(sh["clique_id"], weights=pk["sum_intensity"][sh["peak_id"]] * sh["share"],
                      minlength=len(cl["clique_id"]))
    assert np.allclose(own, cl["sum_intensity"], rtol=1e-9)
    # peaks2d's clique_id is the clique with the largest share
    best = np.full(len(pk["npx"]), -1.0)
    np.maximum.at(best, sh["peak_id"], sh["share"])
    mine = sh["share"] == best[sh["peak_id"]]
    assert np.array_equal(np.sort(np.unique(sh["peak_id"][mine])), np.arange(len(pk["npx"])))
    assert (pk["clique_id"][sh["peak_id"][mine]] == sh["clique_id"][mine]).all()


def test_separation_finds_the_touching_spots(scanned):
    sim, pixels, whole = scanned
    truth = sim.truth
    found = match_truth(load(pixels)["cliques"], truth)["found"]
    found_whole = match_truth(load(whole)["cliques"], truth)["found"]
    assert truth["touching"].sum() >= 4
    assert found[truth["touching"]].sum() > found_whole[truth["touching"]].sum()
    assert found[truth["clean"]].all()


def test_relink_none_and_readers(scanned, tmp_path):
    _, pixels, whole = scanned
    sh = load(whole)["shares"]
    assert (sh["share"] == 1).all() and np.array_equal(np.sort(sh["peak_id"]),
                                                       np.arange(len(sh["peak_id"])))
    text = format_summary(summary(pixels))
    assert "2D peaks shared between cliques" in text
    assert "shared" not in format_summary(summary(whole))
    data = load(pixels)
    cols = flt_columns(data)
    assert len(cols["sc"]) == len(data["cliques"]["clique_id"])
    assert (cols["Min_s"] <= np.floor(cols["sc"])).all()
    assert (cols["Max_s"] >= np.ceil(cols["sc"]) - 1).all()
    out = tmp_path / "sparse.h5"
    assert main(["export", str(pixels), "--format", "sparse", "--output", str(out)]) == 0
    with h5py.File(out) as f:
        assert np.array_equal(f["1.1/shares/share"][()], data["shares"]["share"])
    split = data["shares"]["clique_id"][data["shares"]["share"] < 1][0]
    curve = rocking_curve(pixels, int(split))
    assert curve["intensity"].sum() == pytest.approx(
        data["cliques"]["sum_intensity"][split], rel=1e-9)


@pytest.mark.parametrize("flush", [0.0, 1e6])
def test_live_separation_in_the_background_equals_relink(scanned, tmp_path, flush):
    """The live lane separates in a thread of its own (its cliques come out with later
    points): the file equals a relink's of the same pixels, whether every point's
    checkpoint waits for the separations under way (flush 0) or none comes mid-scan."""
    sim, _, _ = scanned
    live, relinked = tmp_path / "live.h5", tmp_path / "relinked.h5"
    process(sim, live, "local_max", {"split": "pixels"}, flush)
    assert main(["relink", str(live), "--split", "pixels", "--output", str(relinked)]) == 0
    a, b = load(live), load(relinked)
    assert (a["shares"]["share"] < 1).any()  # pixels were divided: spots were separated
    for name in ("peaks2d", "cliques", "shares"):
        assert a[name].keys() == b[name].keys(), name
        for col in a[name]:
            assert np.array_equal(a[name][col], b[name][col], equal_nan=True), (name, col)
