"""Configs: every file in configs/ loads and builds; mistakes name the key and the file."""

from __future__ import annotations

import tomllib

import numpy as np
import pytest

from stream.config.base import ConfigError
from stream.config.schema import Config
from stream.core.scan import Scan
from stream.sources.simulate import Simulation
from stream.sources.simulate.config import SimConfig
from tests.support.paths import CONFIGS

# the 2D peaks every chain ends with (`stream.config.base.check_chain`)
PEAKS = "[[node]]\nkind = 'label'\n[[node]]\nkind = 'properties'\n"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.toml")), ids=lambda p: p.name)
def test_every_config_loads_and_builds(path):
    config = Config.load(path)
    chain = config.build_nodes()
    assert [n.kind for n in chain] == [t["kind"] for t in config["node"]]
    assert tomllib.loads(config.text()) == config.data  # the effective config round-trips


def write(tmp_path, text):
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text, words", [
    ("[source]\nlisten = 5\n", ["c.toml", "listen", "must be str"]),
    ("[source]\nlisten_on = 'x'\n", ["c.toml", "unknown key 'listen_on'"]),
    ("[sauce]\nx = 1\n", ["c.toml", "unknown group", "sauce"]),
    ("[[node]]\nkind = 'magic'\n", ["c.toml", "unknown kind 'magic'"]),
    ("[[node]]\ncut = 3\n", ["c.toml", "needs a 'kind'"]),
    ("[[node]]\nkind = 'threshold'\ncutoff = 3\n", ["c.toml", "unknown key 'cutoff'"]),
    ("[[node]]\nkind = 'threshold'\ncut = 'high'\n", ["c.toml", "cut", "must be float"]),
    ("[[node]]\nkind = 'label'\nmin_pixels = 2.5\n", ["c.toml", "min_pixels", "must be int"]),
    ("[linker]\ncriterion = 'telepathy'\n", ["c.toml", "criterion 'telepathy'"]),
    ("[source]\nreorder_window = 0\n", ["c.toml", "reorder_window must be >= 1"]),
    ("[output]\nflush_interval = -1.0\n", ["c.toml", "flush_interval must be", ">= 0", "-1.0"]),
    ("[output]\nflush_interval = nan\n", ["c.toml", "flush_interval must be", "nan"]),
    ("[source\n", ["c.toml", "not valid TOML"]),
    ("[web]\nport = 70000\n", ["c.toml", "[web] port must be -1"]),
    ("[web]\nport = '5006'\n", ["c.toml", "port", "must be int"]),
    ("[web]\nport = 5006\n[live]\nendpoint = ''\n", ["c.toml", "[web] needs the live lane"]),
    ("[web]\nallow_control = 'yes'\n", ["c.toml", "allow_control", "must be bool"]),
])
def test_config_errors_name_key_and_file(tmp_path, text, words):
    with pytest.raises(ConfigError) as err:
        Config.load(write(tmp_path, text))
    for w in words:
        assert w in str(err.value)


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        Config.load(tmp_path / "nope.toml")


def test_arrays_are_loaded_relative_to_the_config(tmp_path):
    sim = Simulation(SimConfig(npoints=4, shape=(64, 80), spots=0))
    np.save(tmp_path / "mask.npy", sim.mask)
    np.save(tmp_path / "flat.npy", sim.flat)
    text = ("[[node]]\nkind = 'correct'\nmask = 'mask.npy'\nflat = 'flat.npy'\ndark = 1.5\n"
            "[[node]]\nkind = 'threshold'\ncut = 30\n" + PEAKS)
    chain = Config.load(write(tmp_path, text)).build_nodes()
    np.testing.assert_array_equal(chain[0].mask != 0, (sim.mask != 0) | (sim.flat <= 0))
    chain[0].setup(Scan.from_start(sim.start("s")))


def test_array_file_errors_name_the_node_and_key(tmp_path):
    text = "[[node]]\nkind = 'correct'\nmask = 'absent.npy'\n" + PEAKS
    with pytest.raises(ConfigError, match=r"correct.*mask.*absent\.npy"):
        Config.load(write(tmp_path, text)).build_nodes()


def test_command_line_override_is_validated():
    config = Config.load(CONFIGS / "simulated.toml")
    config.override("source", "listen", "tcp://127.0.0.1:6000")
    assert config["source"]["listen"] == "tcp://127.0.0.1:6000"
    assert 'listen = "tcp://127.0.0.1:6000"' in config.text()
    with pytest.raises(ConfigError, match="command line"):
        config.override("source", "reorder_window", -3)


def test_a_poni_file_gives_a_geometry_node_its_values(tmp_path):
    """`poni = "file.poni"` in an integrate table: the file's geometry, overridden by
    keys the table gives itself; a bad file is a ConfigError naming the node."""
    (tmp_path / "det.poni").write_text(
        "# Nota: C-Order, 1 refers to the Y axis, 2 to the X axis\n"
        "poni_version: 2.1\n"
        'Detector: Detector\nDetector_config: {"pixel1": 7.5e-05, "pixel2": 7.5e-05, '
        '"max_shape": [2162, 2068], "orientation": 3}\n'
        "Distance: 0.25\nPoni1: 0.081\nPoni2: 0.077\n"
        "Rot1: 0.01\nRot2: -0.02\nRot3: 0.0\nWavelength: 3.1e-11\n")
    (tmp_path / "c.toml").write_text(
        '[[node]]\nkind = "integrate"\nponi = "det.poni"\nnpt = 100\nrot3 = 0.5\n' + PEAKS)
    node = Config.load(tmp_path / "c.toml").build_nodes()[0]
    c = node.config()
    assert (c["dist"], c["poni1"], c["poni2"], c["rot1"], c["rot2"]) == (
        0.25, 0.081, 0.077, 0.01, -0.02)
    assert (c["rot3"], c["pixel1"], c["wavelength"], c["npt"]) == (0.5, 7.5e-05, 3.1e-11, 100)
    (tmp_path / "bad.toml").write_text('[[node]]\nkind = "integrate"\nponi = "nope.poni"\n'
                                       + PEAKS)
    with pytest.raises(ConfigError, match="integrate.*poni"):
        Config.load(tmp_path / "bad.toml").build_nodes()


@pytest.mark.parametrize("kinds", [["threshold"], ["integrate"], ["threshold", "label"],
                                   ["threshold", "properties", "label"], []])
def test_a_chain_that_makes_no_2d_peaks_is_refused_at_load(tmp_path, kinds):
    """Without label then properties every point failed later: the warm-up's 'linker:
    point 0 needs a labelled frame', or each point written bad ('no sparse frame')."""
    text = "".join(f"[[node]]\nkind = '{k}'\n" for k in kinds) or "node = []\n"
    with pytest.raises(ConfigError, match="makes no 2D peaks.*label node.*properties node"):
        Config.load(write(tmp_path, text))


@pytest.mark.parametrize("kind", ["correct", "frame", "integrate", "background", "ptyd"])
def test_a_dense_only_node_after_the_threshold_is_refused_at_load(tmp_path, kind):
    """A correct node after the threshold was taken and its mask silently did nothing
    (the frames are sparse from the threshold on); the others failed on every point."""
    text = f"[[node]]\nkind = 'threshold'\n[[node]]\nkind = '{kind}'\n" + PEAKS
    with pytest.raises(ConfigError, match=rf"c.toml: \[\[node\]\] #2 \({kind}\) comes after "
                                          rf"the threshold \(\[\[node\]\] #1\).*dense frame "
                                          rf"only.*put it before the threshold"):
        Config.load(write(tmp_path, text))


def test_nodes_that_take_sparse_frames_may_follow_the_threshold(tmp_path):
    text = ("[[node]]\nkind = 'correct'\ndark = 2.0\n[[node]]\nkind = 'threshold'\n"
            "[[node]]\nkind = 'normalise'\n[[node]]\nkind = 'roi_sums'\n"
            "rois = [[0, 4, 0, 4]]\n" + PEAKS)
    kinds = [n.kind for n in Config.load(write(tmp_path, text)).build_nodes()]
    assert kinds == ["correct", "threshold", "normalise", "roi_sums", "label", "properties"]


def test_a_poni_file_of_another_detector_shape_is_refused(tmp_path):
    """A PONI file made for a 96 x 128 detector (its max_shape) was used on 256 x 256
    frames without a word: integrate and background now refuse such frames at setup,
    naming both shapes, and take frames of the file's shape."""
    from stream.core.messages import DetectorInfo, Start
    from stream.run.pipeline import Pipeline

    (tmp_path / "small.poni").write_text(
        "poni_version: 2\nDetector: Detector\n"
        'Detector_config: {"pixel1": 7.5e-05, "pixel2": 7.5e-05, "max_shape": [96, 128]}\n'
        "Distance: 0.1\nPoni1: 0.0036\nPoni2: 0.0048\nWavelength: 3.1e-11\n")
    for kind in ("integrate", "background"):
        (tmp_path / "c.toml").write_text(f'[[node]]\nkind = "{kind}"\nponi = "small.poni"\n'
                                         f"npt = 50\n" + PEAKS)
        nodes = Config.load(tmp_path / "c.toml").build_nodes()
        assert nodes[0].detector_shape == (96, 128)
        for fused in (True, False):
            pipeline = Pipeline(nodes, fuse=fused)
            with pytest.raises(ValueError, match=f"{kind}: .*96 x 128 detector.*256 x 256"):
                pipeline.setup(Scan.from_start(Start("s", {"eiger": DetectorInfo(
                    (256, 256), "uint16")})))
            pipeline.setup(Scan.from_start(Start("s", {"eiger": DetectorInfo(
                (96, 128), "uint16")})))


@pytest.mark.parametrize("cut, ok", [(0.0, True), (1e9, True), (2e9, False)])
def test_a_config_is_held_to_the_bounds_a_live_set_is(tmp_path, cut, ok):
    """A cut above 1e9 (nothing kept) was built from a config, while `peakstream set
    threshold cut 2e9` was refused: both now check the node's `ranges`."""
    from stream.core.node import check_param

    config = Config.load(write(tmp_path, f"[[node]]\nkind = 'threshold'\ncut = {cut}\n"
                                         + PEAKS))
    if ok:
        node = config.build_nodes()[0]
        assert check_param(node, "cut", cut) == cut
    else:
        with pytest.raises(ConfigError) as err:
            config.build_nodes()
        said = str(err.value)
        assert "c.toml" in said and "threshold.cut must be in [0, 1e+09]" in said
