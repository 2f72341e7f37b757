"""The command line as a user meets it: help, exit codes, messages, the demo."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import h5py
import pytest

from stream.sources.simulate import read_truth
from stream.sources.simulate.truth import score
from stream.store.reader import load
from tests.support.paths import ROOT


def peakstream(*args: str, cwd=ROOT, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stream.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout)


@pytest.mark.parametrize("command, words", [
    ([], ["run", "replay", "simulate", "inspect", "demo", "Exit codes"]),
    (["run"], ["--listen", "--output", "--scans", "config"]),
    (["replay"], ["--config", "--output", "INPUT"]),
    (["simulate"], ["--send", "--rate", "--points", "--shape", "--spots", "--seed"]),
    (["inspect"], ["--json"]),
    (["demo"], ["--points", "--output"]),
    ([], ["daemon", "status", "get", "set", "watch", "stats", "map", "diffmap"]),
    (["daemon"], ["--listen", "--control", "--live", "--output", "config"]),
    (["status"], ["--control", "--json", "--timeout"]),
    (["set"], ["node", "key", "value", "--control"]),
    (["watch"], ["--live", "--once"]),
    (["stats"], ["--stat", "--percentile", "--points", "--output", "--memory"]),
    (["map"], ["--png", "--map", "--point", "--output"]),
    (["diffmap"], ["-p", "-o", "-t", "-r", "-c", "--npt-azim", "-d", "-f", "-m", "-O", "-P",
                   "-e", "--zigzag", "--config"]),
])
def test_help_lists_every_option(command, words):
    r = peakstream(*command, "--help")
    assert r.returncode == 0
    for w in words:
        assert w in r.stdout, w


def test_bad_config_exits_2_naming_key_and_file(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[[node]]\nkind = 'threshold'\ncutt = 3\n")
    r = peakstream("run", str(cfg), "--listen", "tcp://127.0.0.1:0")
    assert r.returncode == 2
    assert "bad.toml" in r.stderr and "'cutt'" in r.stderr


def test_usage_errors_exit_2_and_unreadable_files_exit_1(tmp_path):
    assert peakstream("simulate").returncode == 2
    assert peakstream("frobnicate").returncode == 2
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    r = peakstream("inspect", str(junk))
    assert r.returncode == 1 and "junk.h5" in r.stderr
    r = peakstream("replay", str(junk), "--output", str(tmp_path / "o.h5"))
    assert r.returncode == 2 and "junk.h5" in r.stderr


@pytest.mark.system
def test_simulate_replay_inspect_with_default_chain(tmp_path):
    scan = tmp_path / "scan.h5"
    r = peakstream("simulate", "--output", str(scan), "--points", "40", "--shape", "128", "160",
                   "--spots", "6", "--quiet")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out.h5"
    r = peakstream("replay", str(scan), "--output", str(out), "--quiet")  # no config
    assert r.returncode == 0, r.stderr
    s = json.loads(peakstream("inspect", "--json", str(out)).stdout)
    assert s["status"] == "success" and s["points_ok"] == 40
    found, total = score(load(out)["cliques"], read_truth(scan), "clean")
    assert total > 0 and found == total
    with h5py.File(out) as f:  # the effective config, with the default chain, is stored
        assert 'kind = "threshold"' in f["entry/process/config"].asstr()[()]
    r = peakstream("replay", str(scan), "--output", str(out), "--quiet")
    assert r.returncode == 2 and "exists" in r.stderr  # never overwritten


@pytest.mark.system
def test_demo_runs_end_to_end(tmp_path):
    r = peakstream("demo", "--points", "40", "--shape", "128", "160", "--spots", "8",
                   "--output", str(tmp_path / "demo"), "--quiet")
    assert r.returncode == 0, r.stderr
    m = re.search(r"truth\s+(\d+)/(\d+) isolated spots found", r.stdout)
    assert m and int(m.group(2)) > 0 and m.group(1) == m.group(2), r.stdout
    assert (tmp_path / "demo" / "sim-0001.h5").exists()


@pytest.mark.system
def test_simulate_other_scan_kinds_and_clear_errors(tmp_path):
    scan = tmp_path / "inter.h5"
    r = peakstream("simulate", "--output", str(scan), "--trajectory", "interlaced", "--iflip",
                   "--points", "120", "--spots", "6", "--quiet")
    assert r.returncode == 0, r.stderr
    with h5py.File(scan) as f:
        start = json.loads(f["entry/start"].attrs["start_json"])
    assert start["trajectory"]["kind"] == "interlaced" and start["trajectory"]["iflip"] is True
    r = peakstream("simulate", "--output", str(tmp_path / "x.h5"), "--spots", "5000")
    assert r.returncode == 2 and "cannot place 5000 spots" in r.stderr
