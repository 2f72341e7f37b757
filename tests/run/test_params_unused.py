"""A threshold whose cut is replaced by a map (a background node's per-frame map, or its
own static cut_map) does not read `cut`: `set threshold cut` was accepted and recorded
in the file but changed nothing. It is refused now, naming what sets the threshold
instead, and `get` says so (`unused`). So are a background node's nsigma and
min_excess when no threshold after it takes its cut map."""

from pathlib import Path

import numpy as np
import pytest

from stream.config.schema import Config
from stream.run.params import ParamError, ParamState

CHAIN_END = '[[node]]\nkind = "label"\n[[node]]\nkind = "properties"\n'


@pytest.fixture
def state(tmp_path: Path):
    def make(nodes: str) -> ParamState:
        return ParamState(Config.from_text(nodes + CHAIN_END, "test.toml", tmp_path))
    np.save(tmp_path / "cuts.npy", np.full((8, 8), 30.0, np.float32))
    return make


def test_set_cut_after_a_background_node_is_refused(state):
    params = state('[[node]]\nkind = "background"\nimage = "cuts.npy"\n'
                   '[[node]]\nkind = "threshold"\ncut = 10.0\n')
    with pytest.raises(ParamError, match=r"threshold.cut is not used by this chain: .*"
                                         r"background node.*nsigma or min_excess"):
        params.set("threshold", "cut", 500)
    assert params.version == 0 and params.changes == {}
    assert params.settable("threshold") == [] and "cut" in params.unused("threshold")
    assert params.set("background", "nsigma", 4.0)["value"] == 4.0  # what does set it


def test_set_cut_with_a_cut_map_is_refused(state):
    params = state('[[node]]\nkind = "threshold"\ncut_map = "cuts.npy"\n')
    with pytest.raises(ParamError, match=r"threshold.cut is not used.*cut_map"):
        params.set("threshold", "cut", 50)
    assert params.settable("threshold") == []


def test_a_plain_threshold_cut_is_still_settable(state):
    params = state('[[node]]\nkind = "threshold"\ncut = 10.0\n')
    assert params.settable("threshold") == ["cut"] and params.unused("threshold") == {}
    assert params.set("threshold", "cut", 50)["value"] == 50.0


def test_background_nsigma_without_a_threshold_after_it_is_refused(state):
    """nsigma and min_excess make only the cut map the next threshold takes: a background
    node with no threshold after it (its level, spread or subtracted frame for the nodes
    after) makes none, so a set of them would change nothing."""
    params = state('[[node]]\nkind = "background"\nimage = "cuts.npy"\nsubtract = true\n'
                   '[[node]]\nkind = "integrate"\ndist = 0.1\nponi1 = 4e-4\nponi2 = 4e-4\n'
                   'pixel1 = 1e-4\npixel2 = 1e-4\n')
    for key in ("nsigma", "min_excess"):
        with pytest.raises(ParamError, match=rf"background.{key} is not used by this chain: "
                                             r".*no cut map"):
            params.set("background", key, 4.0)
    assert params.version == 0 and params.settable("background") == []
    assert set(params.unused("background")) == {"nsigma", "min_excess"}


def test_background_nsigma_before_a_threshold_is_settable(state):
    params = state('[[node]]\nkind = "background"\nimage = "cuts.npy"\n'
                   '[[node]]\nkind = "threshold"\ncut = 10.0\n')
    assert params.settable("background") == ["nsigma", "min_excess"]
    assert params.unused("background") == {}
