"""`replay --fill` reads the calibration files of the file's own config where that
config was (its directory is recorded), not in the current directory; and a dark
taken again since is named as the cause, not the recording."""

from __future__ import annotations

import numpy as np

from stream.cli.main import main
from stream.store.reader import load
from tests.support.files import SIMCONF, corrected_chain, same, write_lima_master

CHAIN = corrected_chain(dark="dark.npy")


def test_fill_reads_the_calibration_beside_the_config_and_names_one_that_changed(
        tmp_path, capsys, monkeypatch):
    cal, elsewhere = tmp_path / "cal", tmp_path / "elsewhere"
    cal.mkdir()
    elsewhere.mkdir()
    np.save(cal / "dark.npy", np.full(SIMCONF.shape, 5.0, np.float32))
    (cal / "scan.toml").write_text(CHAIN)
    np.save(elsewhere / "dark.npy", np.full(SIMCONF.shape, 30.0, np.float32))  # another
    master = write_lima_master(tmp_path, 5)
    args = ["replay", "--images", f"{master}::/1.1/measurement/eiger", "--motor",
            "omega=/1.1/measurement/rot_center", "--quiet", "--config", str(cal / "scan.toml")]
    whole, out = tmp_path / "whole.h5", tmp_path / "scan.h5"
    assert main([*args, "--output", str(whole)]) == 0
    (tmp_path / "eiger_0001.h5").rename(tmp_path / "away.h5")
    assert main([*args, "--output", str(out)]) == 0  # incomplete: 5 bad points
    (tmp_path / "away.h5").rename(tmp_path / "eiger_0001.h5")
    before = out.read_bytes()
    monkeypatch.chdir(elsewhere)  # its own dark.npy: not the file's
    np.save(cal / "dark.npy", np.full(SIMCONF.shape, 6.0, np.float32))  # taken again
    capsys.readouterr()
    assert main(["replay", "--fill", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "[[node]] #1 (correct) dark = 'dark.npy'" in err
    assert f"{cal / 'dark.npy'} holds another content now" in err
    assert "the recording is not this scan" not in err
    assert out.read_bytes() == before  # left as it was
    np.save(cal / "dark.npy", np.full(SIMCONF.shape, 5.0, np.float32))  # put back
    assert main(["replay", "--fill", str(out), "--quiet"]) == 0
    assert "filled" in capsys.readouterr().err
    same(load(whole), load(out))
