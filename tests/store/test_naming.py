"""Output names never go through a symlink the daemon did not make (issue #13)."""

from __future__ import annotations

import os

import pytest

from stream.store.naming import Namer


def test_a_planted_link_is_never_a_name_nor_a_way_out(tmp_path):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    os.symlink(tmp_path / "nowhere.h5", out / "s.h5")  # dangling: still taken
    assert Namer(out).path("s") == out / "s-1.h5"
    os.symlink(elsewhere, out / "alice")
    with pytest.raises(OSError, match="leads out of the output directory"):
        Namer(out, "{sample}/{scan_id}.h5").path("s", {"sample": "alice"})
    assert Namer(out, "{sample}/{scan_id}.h5").path("s", {"sample": "bob"}) == out / "bob/s.h5"
    assert list(elsewhere.iterdir()) == []
