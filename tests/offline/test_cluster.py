"""Batch replay on dask.distributed: the same files as a serial replay, finished scans
skipped on a rerun, a killed worker's scan done again elsewhere, Bliss master files
one scan per entry, the SLURM job script from our options."""

from __future__ import annotations

import os
import re
import signal
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest

from stream.cli.main import main
from stream.config.schema import Config
from stream.offline.cluster import (
    START_METHOD_ENV,
    open_client,
    parse_cluster,
    plan,
    run_batch,
    slurm_cluster,
)
from stream.offline.scanjob import ScanJob, output_path, partial_path, run_job, scan_jobs
from stream.sources.simulate import Simulation, write_scan
from stream.sources.simulate.config import SimConfig
from tests.support.daemon import wait_until
from tests.support.files import frames, monitors, omegas, write_bliss
from tests.support.flow import assert_same_tables, tables
from tests.support.paths import CONFIGS, ROOT
from tests.support.slurm import slurm  # noqa: F401  (the fixture)
from tests.support.sparse import write_sparse

CONFIG = CONFIGS / "simulated.toml"
BASE = {"shape": (96, 96), "sigma_px": (1.0, 1.5), "seed": 1, "hot_pixels": 3,
        "dead_pixels": 3}
SCANS = {  # kinds whose links cross chunk borders in other ways (as test_link_state's)
    "wrap": SimConfig(npoints=36, omega_step=10.0, wrap=True, spots=12, **BASE),
    "interlaced": SimConfig(npoints=40, omega_step=1.0, trajectory="interlaced", iflip=True,
                            spots=12, **BASE),
    "snake": SimConfig(npoints=72, trajectory="snake", nrows=3, dty_step=0.0, spots=8, **BASE),
    "grid": SimConfig(npoints=360, trajectory="grid", nrows=12, omega_step=0.25, spots=14,
                      sigma_dty=(0.7, 1.0), **BASE),
}


def simulated(directory: Path, n: int, npoints: int = 40) -> list[Path]:
    """n simulated scans of their own seeds, scan ids s0, s1, ..."""
    out = []
    for i in range(n):
        path = directory / f"s{i}.h5"
        write_scan(Simulation(SimConfig(npoints=npoints, shape=(96, 128), spots=6, seed=i)),
                   path, f"s{i}")
        out.append(path)
    return out


@pytest.mark.system
def test_cluster_files_equal_serial_and_a_rerun_skips_them(tmp_path, capsys):
    inputs = [*map(str, simulated(tmp_path, 3)), str(write_sparse(tmp_path / "sparse.h5"))]
    common = ["--config", str(CONFIG), "--quiet"]
    assert main(["replay", *inputs, "--output", str(tmp_path / "serial"), *common]) == 0
    assert main(["replay", *inputs, "--output", str(tmp_path / "cluster"), *common,
                 "--cluster", "local:2"]) == 0
    err = capsys.readouterr().err
    assert "dashboard http" in err
    names = sorted(p.name for p in (tmp_path / "serial").iterdir())
    assert names == ["s0.h5", "s1.h5", "s2.h5", "sparse_1.1.h5"]
    assert sorted(p.name for p in (tmp_path / "cluster").iterdir()) == names  # no partials
    for name in names:
        a, b = tables(tmp_path / "serial" / name), tables(tmp_path / "cluster" / name)
        assert len(a["cliques"]["clique_id"]) > 0
        assert_same_tables(a, b)
        with h5py.File(tmp_path / "serial" / name) as fa, \
                h5py.File(tmp_path / "cluster" / name) as fb:  # the user's config, not inline
            assert fa["entry/process/config"][()] == fb["entry/process/config"][()]
    before = {n: (tmp_path / "cluster" / n).stat().st_mtime_ns for n in names}
    assert main(["replay", *inputs, "--output", str(tmp_path / "cluster"), *common,
                 "--cluster", "local:2"]) == 0
    out, err = capsys.readouterr()
    assert err.count("is finished already") == 4 and "dashboard" not in err  # no cluster
    assert len(re.findall(r"skipped +0\.0s", out)) == 4 and "4 skipped" in out
    assert {n: (tmp_path / "cluster" / n).stat().st_mtime_ns for n in names} == before


@pytest.mark.system
def test_scans_on_slurm_jobs_equal_serial(tmp_path, slurm, monkeypatch):  # noqa: F811
    """dask-jobqueue submits worker jobs to a real (one-node) SLURM cluster."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the jobs' workers import this checkout
    monkeypatch.chdir(tmp_path)  # sbatch's default for the jobs' logs: not used
    inputs = [*map(str, simulated(tmp_path, 2))]
    common = ["--config", str(CONFIG), "--quiet"]
    assert main(["replay", *inputs, "--output", str(tmp_path / "serial"), *common]) == 0
    assert main(["replay", *inputs, "--output", str(tmp_path / "slurm"), *common,
                 "--cluster", "slurm", "--slurm-queue", "test", "--slurm-cores", "1",
                 "--slurm-memory", "1GB", "--slurm-walltime", "00:30:00",
                 "--slurm-jobs", "2"]) == 0
    # the workers did run as SLURM jobs, their logs in the output directory
    assert list((tmp_path / "slurm" / "slurm-logs").glob("*.out"))
    assert not list(tmp_path.glob("slurm-*.out"))
    for name in ("s0.h5", "s1.h5"):
        assert_same_tables(tables(tmp_path / "serial" / name), tables(tmp_path / "slurm" / name))


@pytest.mark.system
def test_a_long_scan_in_chunks_gives_the_serial_file(tmp_path):
    """Scans of every trajectory kind that links across chunk borders in other ways: a
    sweep that wraps, interlaced passes, a snake, a dty x omega grid."""
    inputs = []
    for name, conf in SCANS.items():
        path = tmp_path / f"{name}.h5"
        write_scan(Simulation(conf), path, name)
        inputs.append(str(path))
    common = ["--config", str(CONFIG), "--quiet"]
    assert main(["replay", *inputs, "--output", str(tmp_path / "serial"), *common]) == 0
    assert main(["replay", *inputs, "--output", str(tmp_path / "chunks"), *common,
                 "--cluster", "local:2", "--chunk-points", "17"]) == 0
    names = sorted(p.name for p in (tmp_path / "serial").iterdir())
    assert sorted(p.name for p in (tmp_path / "chunks").iterdir()) == names  # chunks gone
    for name in names:
        a, b = tables(tmp_path / "serial" / name), tables(tmp_path / "chunks" / name)
        assert len(a["cliques"]["clique_id"]) > 0 and len(a["links"]["point_a"]) > 30
        assert_same_tables(a, b)


@pytest.mark.system
def test_a_killed_worker_scan_runs_again_and_leaves_no_half_file(tmp_path):
    config = Config.load(CONFIG)
    # long enough that the driver (which looks every second) sees the rerun's points
    # while it runs, on a fast machine too (1200 points took under a second; 6000, 2.5 s)
    (long,) = simulated(tmp_path, 1, npoints=12000)
    serial = tmp_path / "serial"
    assert main(["replay", str(long), "--output", str(serial), "--config", str(CONFIG),
                 "--quiet"]) == 0
    jobs = plan(scan_jobs([[str(long)]], {}), config, tmp_path / "cluster")
    part = partial_path(jobs[0].path)
    results: list = []
    said: list[str] = []
    points: list[int] = []  # the driver's progress while the scan runs: the task's points
    with open_client(parse_cluster("local:2")) as client:  # the restart forks again
        thread = threading.Thread(target=lambda: results.extend(
            run_batch(client, jobs, config, say=said.append,
                      progress=lambda done, extra="", **kw: points.append(
                          done if "running" in extra else -1))))
        thread.start()
        # killed once the driver has seen the task's points move (so it can say where
        # it ran) and while it runs: its partial file is half-written
        busy = wait_until(lambda: part.exists() and any(n > 0 for n in points) and [
            w for w, keys in client.processing().items() if keys], 300)
        pid = client.run(os.getpid, workers=busy)[busy[0]]
        os.kill(pid, signal.SIGKILL)
        thread.join(600)
    assert not thread.is_alive()
    assert results[0]["status"] == "success" and results[0]["points"] == 12000
    assert any("s0: running again on" in line or "s0: its worker" in line
               for line in said), said  # the retry is said
    assert not part.exists()
    assert_same_tables(tables(serial / "s0.h5"), tables(jobs[0].path))


def test_a_bliss_master_file_is_one_scan_per_entry(tmp_path, capsys):
    master = tmp_path / "sample.h5"
    n = len(frames())
    write_bliss(master, frames(), omegas(), monitors(), scan="1.1")
    write_bliss(master, frames()[::-1], omegas(), monitors(), scan="2.1")
    with h5py.File(master, "a") as f:
        f["3.1/measurement/other"] = np.zeros(3)  # an entry without the detector
    jobs = scan_jobs([[str(master)]], {"images": ["measurement/eiger"]})
    assert [j.options["scan_id"] for j in jobs] == ["sample_1.1", "sample_2.1"]
    assert [j.options["images"] for j in jobs] == [[f"{master}::/1.1/measurement/eiger"],
                                                   [f"{master}::/2.1/measurement/eiger"]]
    motor = ["--motor", "omega=measurement/rot_center"]
    args = ["--config", str(CONFIG), "--quiet", *motor]
    assert main(["replay", str(master), "--images", "measurement/eiger", *args,
                 "--output", str(tmp_path / "all")]) == 0
    for entry in ("1.1", "2.1"):
        one = tmp_path / f"one_{entry}.h5"
        assert main(["replay", "--images", f"{master}::/{entry}/measurement/eiger", *args,
                     "--scan-id", f"sample_{entry}", "--output", str(one)]) == 0
        a, b = tables(one), tables(tmp_path / "all" / f"sample_{entry}.h5")
        assert len(a["points"]["point_id"]) == n
        assert_same_tables(a, b)
    with pytest.raises(ValueError, match="no scan entry"):
        scan_jobs([[str(master)]], {"images": ["measurement/nothing"]})


def test_cluster_specs_and_usage_errors(tmp_path, capsys):
    assert parse_cluster("local").workers == 0
    assert parse_cluster("local:3").workers == 3
    assert parse_cluster("tcp://host:8786").address == "tcp://host:8786"
    assert parse_cluster("slurm", {"queue": "p"}).slurm == {"queue": "p"}
    for bad in ("local:0", "local:x", "yarn", "host:8786"):
        with pytest.raises(ValueError, match="--cluster"):
            parse_cluster(bad)
    assert output_path(tmp_path, "{sample}/{scan_id}.h5", "a/b", {"sample": "Si"}) == \
        tmp_path / "Si" / "a_b.h5"
    with pytest.raises(ValueError, match="scan_number"):
        output_path(tmp_path, "{scan_id}_{scan_number}.h5", "a")
    (scan,) = simulated(tmp_path, 1)
    base = ["replay", str(scan), "--config", str(CONFIG), "--quiet", "--cluster"]
    assert main([*base, "local:2", "--output", str(tmp_path / "x.h5")]) == 2
    assert main([*base, "nowhere", "--output", str(tmp_path / "d")]) == 2
    assert "local[:N], tcp://HOST:PORT" in capsys.readouterr().err
    for chunk, cluster in (("-5", ["--cluster", "local:1"]), ("5", [])):  # never a traceback
        assert main([*base[:-1], *cluster, "--chunk-points", chunk, "--output",
                     str(tmp_path / "c")]) == 2
        assert "--chunk-points N (N >= 1) cuts scans for --cluster" in capsys.readouterr().err
    twice = [ScanJob("a", [str(scan)]), ScanJob("b", [str(scan)])]
    with pytest.raises(ValueError, match="would both write"):
        plan(twice, Config.load(CONFIG), tmp_path / "d")


def test_the_slurm_job_script_carries_our_options(tmp_path):
    cluster = slurm_cluster({"queue": "id11", "account": "ma1234", "cores": 4,
                             "memory": "16GB", "walltime": "02:00:00",
                             "job_extra": ["--exclusive"], "log_directory": str(tmp_path)})
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    for text in ("#SBATCH -p id11", "#SBATCH -A ma1234", "#SBATCH --cpus-per-task=4",
                 "#SBATCH -t 02:00:00", "#SBATCH --exclusive", "--nworkers 4",
                 "--nthreads 1", "export NUMBA_NUM_THREADS=1", f"-o {tmp_path}/"):
        assert text in script, (text, script)


@pytest.mark.system
def test_local_workers_are_forked_unless_dask_is_told_otherwise(monkeypatch):
    """A forked worker has this process's modules (pytest's among them: a spawned one
    would import only what it needs), so it starts without importing them again."""
    import sys

    def has_pytest() -> bool:
        return "_pytest" in sys.modules

    monkeypatch.delenv(START_METHOD_ENV, raising=False)
    with open_client(parse_cluster("local:1")) as client:
        assert list(client.run(has_pytest).values()) == [True]
    monkeypatch.setenv(START_METHOD_ENV, "spawn")
    with open_client(parse_cluster("local:1")) as client:
        assert list(client.run(has_pytest).values()) == [False]


def test_a_scan_of_a_master_that_cannot_be_opened_is_left_out_of_the_plan(tmp_path):
    """As a serial replay skips it: the other scans are planned, it is a result row."""
    master = tmp_path / "sample.h5"
    write_bliss(master, frames(), omegas(), monitors(), scan="1.1")
    write_bliss(master, frames(), omegas(), monitors(), scan="2.1")
    with h5py.File(master, "a") as f:
        del f["2.1/measurement/rot_center"]  # no motor
    opts = {"images": ["measurement/eiger"], "motors": {"omega": "measurement/rot_center"}}
    not_opened: list = []
    jobs = plan(scan_jobs([[str(master)]], opts), Config.load(CONFIG), tmp_path / "d",
                not_opened)
    assert [j.scan_id for j in jobs] == ["sample_1.1"]
    assert [r["scan_id"] for r in not_opened] == ["sample.h5::/2.1"]
    assert "no dataset for omega" in not_opened[0]["reason"]
    with pytest.raises(ValueError, match="no dataset for omega"):  # without the list: raised
        plan(scan_jobs([[str(master)]], opts), Config.load(CONFIG), tmp_path / "d")


@pytest.mark.system
def test_cluster_replay_of_a_master_with_an_interrupted_scan_replays_the_others(tmp_path,
                                                                             capsys):
    master = tmp_path / "sample.h5"
    write_bliss(master, frames(), omegas(), monitors(), scan="1.1")
    write_bliss(master, frames(), omegas(), monitors(), scan="2.1")
    with h5py.File(master, "a") as f:
        del f["2.1/measurement/rot_center"]  # no motor
    out = tmp_path / "out"
    assert main(["replay", str(master), "--images", "measurement/eiger", "--motor",
                 "omega=measurement/rot_center", "--config", str(CONFIG), "--quiet",
                 "--output", str(out), "--cluster", "local:1"]) == 1
    assert sorted(p.name for p in out.glob("*.h5")) == ["sample_1.1.h5"]
    printed = capsys.readouterr()
    assert "sample.h5::/2.1: not replayed" in printed.err and "not opened" in printed.out


def test_a_rerun_skips_a_finished_file_only_if_made_the_same_way(tmp_path, capsys):
    """A file of another config, or of another recording of the same name (s2/sample.h5
    beside s1/sample.h5), is neither skipped nor overwritten: exit 2, naming it."""
    masters = []
    for name, data in (("s1", frames()), ("s2", frames()[::-1])):
        (tmp_path / name).mkdir()
        write_bliss(tmp_path / name / "sample.h5", data, omegas(), monitors())
        masters.append(str(tmp_path / name / "sample.h5"))
    out = tmp_path / "bl"
    opts = {"images": ["measurement/eiger"], "motors": {"omega": "measurement/rot_center"}}
    config = Config.load(CONFIG)
    (job,) = plan(scan_jobs([[masters[0]]], opts), config, out)
    done = run_job(config.text(), str(config.base), job.inputs, job.options, str(job.path),
                   False, job.identity)  # what the task on a worker does
    assert done["status"] == "success"
    before = job.path.stat().st_mtime_ns
    cut = tmp_path / "cut400.toml"
    cut.write_text(CONFIG.read_text().replace("cut = 40.0", "cut = 400.0"))
    args = ["--images", "measurement/eiger", "--motor", "omega=measurement/rot_center",
            "--quiet", "--output", str(out), "--cluster", "local:2"]
    assert main(["replay", masters[0], "--config", str(CONFIG), *args]) == 0
    assert "sample_1.1: skipped" in capsys.readouterr().err  # the same: skipped
    assert main(["replay", masters[0], "--config", str(cut), *args]) == 2
    err = capsys.readouterr().err
    assert f"{job.path} exists" in err and "another config" in err
    assert main(["replay", masters[1], "--config", str(CONFIG), *args]) == 2
    err = capsys.readouterr().err
    assert f"{job.path} exists" in err and "another recording" in err
    assert f"{tmp_path / 's2' / 'sample.h5'}" in err
    assert job.path.stat().st_mtime_ns == before
    with h5py.File(job.path) as f:
        assert "cut = 40.0" in f["entry/process/config"].asstr()[()]


def test_two_scans_of_one_name_are_told_apart_by_their_directories(tmp_path):
    masters = []
    for name in ("s1", "s2"):
        (tmp_path / name).mkdir()
        write_bliss(tmp_path / name / "sample.h5", frames(), omegas(), monitors())
        masters.append(str(tmp_path / name / "sample.h5"))
    opts = {"images": ["measurement/eiger"], "motors": {"omega": "measurement/rot_center"}}
    with pytest.raises(ValueError) as err:
        plan(scan_jobs([masters], opts), Config.load(CONFIG), tmp_path / "bl")
    assert (f"{masters[0]}::/1.1/measurement/eiger and {masters[1]}::/1.1/measurement/eiger "
            f"would both write {tmp_path / 'bl' / 'sample_1.1.h5'}") in str(err.value)


@pytest.mark.system
def test_a_sparse_scan_in_chunks_replays_in_blocks_and_gives_the_serial_file(tmp_path):
    src = str(write_sparse(tmp_path / "sparse.h5", nframes=90))
    common = ["--preset", "imaged11", "--quiet"]
    assert main(["replay", src, "--output", str(tmp_path / "serial"), *common]) == 0
    assert main(["replay", src, "--output", str(tmp_path / "chunks"), *common,
                 "--cluster", "local:2", "--chunk-points", "25"]) == 0
    (name,) = [p.name for p in (tmp_path / "serial").iterdir()]
    assert sorted(p.name for p in (tmp_path / "chunks").iterdir()) == [name]
    assert_same_tables(tables(tmp_path / "serial" / name), tables(tmp_path / "chunks" / name))
