"""The command line as a user meets it: help, exit codes, messages, the demo."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import h5py
import pytest

from stream.cli.main import main
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
    (["replay"], ["--config", "--output", "INPUT", "--trajectory", "--iflip", "--nfast",
                  "--wrap", "--fill", "--resume"]),
    (["warmup"], ["config", "--verbose"]),
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


def test_a_chain_that_cannot_be_built_is_one_clean_line(tmp_path):
    """A value the node refuses, a file the config names and that is missing: exit 2
    with the config's name and the reason, no traceback (the worker threads building the
    same chain printed theirs first), and run's message names the file, not a copy."""
    scan = tmp_path / "s.h5"
    assert peakstream("simulate", "--output", str(scan), "--points", "20", "--shape", "128",
                      "160", "--spots", "6").returncode == 0
    peaks = "[[node]]\nkind = 'label'\n[[node]]\nkind = 'properties'\n"
    for body, words in (("kind = 'correct'\ndark = 'nodark.npy'\n[[node]]\nkind = 'threshold'",
                         "nodark.npy"),
                        ("kind = 'threshold'\n[[node]]\nkind = 'label'\nmin_pixels = -1\n"
                         "[[node]]\nkind = 'properties'", "min_pixels"),
                        ("kind = 'threshold'\ncut = -5.0", "cut must be >= 0, got -5.0")):
        cfg = tmp_path / "c.toml"
        cfg.write_text(f"[[node]]\n{body}\n" + ("" if "properties" in body else peaks))
        for r in (peakstream("replay", str(scan), "--config", str(cfg), "--output",
                             str(tmp_path / "o.h5")),
                  peakstream("run", str(cfg), "--listen", "tcp://127.0.0.1:0")):
            assert r.returncode == 2, r.stderr
            assert "Traceback" not in r.stderr and words in r.stderr
            assert "c.toml: [[node]]" in r.stderr and "warm-up" not in r.stderr


def test_usage_errors_and_unreadable_files_exit_2(tmp_path):
    assert peakstream("simulate").returncode == 2
    assert peakstream("frobnicate").returncode == 2
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    r = peakstream("inspect", str(junk))
    assert r.returncode == 2 and "junk.h5" in r.stderr
    r = peakstream("inspect", str(tmp_path / "none.h5"))
    assert r.returncode == 2 and r.stderr.endswith("none.h5: no such file\n")
    r = peakstream("replay", str(junk), "--output", str(tmp_path / "o.h5"))
    assert r.returncode == 2 and "junk.h5" in r.stderr


def test_inspect_export_relink_refuse_a_file_not_ours_alike(tmp_path, capsys):
    """Not there, not HDF5, HDF5 of another program, one that looks like ours but lacks
    its tables: inspect (and --clique, --json), export and relink each say so in one line
    naming the file and exit 2; inspect still summarises the good files given with it."""
    good = tmp_path / "good.h5"
    assert main(["simulate", "--output", str(tmp_path / "s.h5"), "--points", "20", "--shape",
                 "128", "160", "--spots", "6", "--quiet"]) == 0
    assert main(["replay", str(tmp_path / "s.h5"), "--config", str(ROOT / "configs" /
                 "simulated.toml"), "--output", str(good), "--quiet"]) == 0
    (tmp_path / "junk.h5").write_text("not hdf5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with h5py.File(tmp_path / "partial.h5", "w") as f:
        f.create_group("entry/process")
        f.create_group("entry/eiger/peaks2d")
    capsys.readouterr()
    for name in ("none.h5", "junk.h5", "other.h5", "partial.h5"):
        path = str(tmp_path / name)
        for argv in (["inspect", path], ["inspect", path, "--json"],
                     ["inspect", path, "--clique", "0"],
                     ["export", path, "--format", "flt", "--output", str(tmp_path / "x.flt")],
                     ["relink", path, "--output", str(tmp_path / "x.h5")]):
            assert main(argv) == 2, argv
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and f"{path}: " in err, (argv, err)
            assert err.startswith(f"peakstream {argv[0]}: "), err
            assert not (tmp_path / "x.flt").exists() and not (tmp_path / "x.h5").exists()
    assert main(["inspect", str(good), str(tmp_path / "junk.h5")]) == 2
    out, err = capsys.readouterr()
    assert "scan sim-0001: success" in out and "junk.h5" in err


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


def test_a_control_client_imports_no_processing_code():
    """status / get / set / watch answer at once: argument parsing and the request need
    neither numpy nor h5py nor numba (counted, not timed)."""
    code = ("import sys; from stream.cli.main import main; rc = main(['status', "
            "'--control', 'tcp://127.0.0.1:1', '--timeout', '0.01']); "
            "heavy = [m for m in ('numpy', 'h5py', 'numba') if m in sys.modules]; "
            "print(rc, heavy)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       timeout=120)
    assert r.stdout.strip() == "1 []", r.stdout + r.stderr
    assert "no peakstream daemon answered" in r.stderr


def test_daemon_takes_no_config_as_run_does():
    from stream.cli.main import parser

    args = parser().parse_args(["daemon", "--output", "x"])
    assert args.config is None


def test_a_tiny_scan_makes_a_small_file(tmp_path):
    """Chunks sized to the scan's npoints: a 5-point scan's file is small (full-size
    chunks, allocated whole, made ~6 MB)."""
    r = peakstream("simulate", "--points", "40", "--shape", "128", "128", "--spots", "2",
                   "--output", str(tmp_path / "rec.h5"), "--quiet")
    assert r.returncode == 0, r.stderr
    r = peakstream("replay", str(tmp_path / "rec.h5"), "--output", str(tmp_path / "o.h5"),
                   "--last", "4", "--quiet")
    assert r.returncode == 0, r.stderr
    with h5py.File(tmp_path / "o.h5") as f:
        assert f["entry/points/point_id"].shape == (5,)
        assert f["entry/points/point_id"].chunks[0] <= 64
    assert (tmp_path / "o.h5").stat().st_size < 1 << 20


def test_usage_errors_speak_the_command_lines_words(tmp_path):
    """--resume of a file never written says there is nothing to resume (it said "no
    config to resume with: [Errno 2] Unable to synchronously open file"); a SimConfig
    check names the option (it said "SimConfig.wrap: ..., got True")."""
    never = tmp_path / "never.h5"
    r = peakstream("replay", str(tmp_path / "in.h5"), "--output", str(never), "--resume")
    assert r.returncode == 2 and not never.exists()
    assert f"{never} does not exist: there is nothing to resume; run without --resume" \
        in r.stderr and "Errno" not in r.stderr
    r = peakstream("simulate", "--output", str(tmp_path / "s.h5"), "--trajectory",
                   "interlaced", "--wrap", "--quiet")
    assert r.returncode == 2
    assert "simulate: --wrap is for sweeps and grids or snakes along omega\n" in r.stderr


def test_run_refuses_a_world_writable_output_directory_as_the_daemon_does(tmp_path):
    out = tmp_path / "ww"
    out.mkdir()
    out.chmod(0o777)  # no sticky bit: anyone could plant files there
    r = peakstream("run", "configs/simulated.toml", "--listen", "tcp://127.0.0.1:0",
                   "--output", str(out), "--scans", "1", "--quiet")
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "world-writable without the sticky bit" in r.stderr
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("live", ["127.0.0.1:5656", "foo://bar"])
def test_web_with_a_live_endpoint_zmq_cannot_read_exits_2_in_one_line(live):
    """Not a traceback from the subscriber's thread then a page served for ever: refused."""
    pytest.importorskip("bokeh")
    got = peakstream("web", "--live", live, "--port", "0", timeout=60)
    assert got.returncode == 2, got.stderr
    lines = got.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("peakstream web: --live:"), got.stderr
    assert live in lines[0] and "tcp://" in lines[0]
    assert "Traceback" not in got.stderr and "page is on" not in got.stderr


def test_web_on_every_interface_names_the_bound_address_and_the_host_to_use():
    """`--address 0.0.0.0`: the start-up line said the page was on http://127.0.0.1:...,
    an address other machines cannot use."""
    import queue
    import socket
    import threading

    pytest.importorskip("bokeh")
    proc = subprocess.Popen([sys.executable, "-m", "stream.cli", "web", "--address",
                             "0.0.0.0", "--port", "0", "--live", "tcp://127.0.0.1:1"],
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    got: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [got.put(x) for x in proc.stderr], daemon=True).start()
    try:
        lines = []
        while not lines or "page is on" not in lines[-1]:
            lines.append(got.get(timeout=120))  # a guard: the line comes within seconds
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    url = re.search(r"the page is on (http://\S+) ", lines[-1]).group(1)
    assert url.startswith(f"http://{socket.gethostname()}:"), lines[-1]
    port = url.rstrip("/").rsplit(":", 1)[1]
    assert f"served on 0.0.0.0:{port} (every interface)" in lines[-1]


@pytest.mark.system
def test_a_sparse_only_chain_on_detector_frames_is_refused_before_any_point(tmp_path):
    """--preset imaged11 (label, properties: for sparse files) on a frame scan made every
    point bad, each with 'label: point N has no sparse frame', and the scan failed."""
    scan = tmp_path / "scan.h5"
    r = peakstream("simulate", "--output", str(scan), "--points", "40", "--shape", "128", "160",
                   "--spots", "3", "--quiet")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out.h5"
    r = peakstream("replay", str(scan), "--preset", "imaged11", "--output", str(out), "--quiet")
    assert r.returncode == 2 and not out.exists()
    assert "imaged11.toml: the chain (label, properties) has no threshold before label" \
        in r.stderr and "holds detector frames (simulate)" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "point" not in r.stderr
    r = peakstream("replay", str(scan), "--output", str(out), "--quiet")  # our own: sparse
    assert r.returncode == 0, r.stderr
    r = peakstream("replay", str(out), "--preset", "imaged11", "--output",
                   str(tmp_path / "again.h5"), "--quiet")
    assert r.returncode == 0, r.stderr
