"""Batch replay on dask.distributed when things go wrong: a full disk on a worker, a
SLURM that refuses the worker jobs."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys

import pytest

from stream.config.schema import Config
from stream.offline.cluster import format_table, open_client, parse_cluster, plan, run_batch
from stream.offline.scanjob import partial_path, scan_jobs
from stream.sources.simulate import Simulation, write_scan
from stream.sources.simulate.config import SimConfig
from tests.support.paths import CONFIGS, ROOT
from tests.support.slurm import slurm  # noqa: F401  (the fixture)

CONFIG = CONFIGS / "simulated.toml"
FULL = 200_000  # bytes a worker may write into one file: a "disk" full mid-scan


def fill_up_at(nbytes: int) -> None:
    """On a worker: files may not grow beyond `nbytes`; a write past it fails with EFBIG
    (SIGXFSZ ignored), as on a full disk."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))


@pytest.mark.system
def test_a_full_disk_fails_the_scan_and_leaves_no_half_file(tmp_path):
    scans = []
    for i in range(2):
        scans.append(tmp_path / f"s{i}.h5")
        write_scan(Simulation(SimConfig(npoints=400, shape=(96, 128), spots=6, seed=i)),
                   scans[-1], f"s{i}")
    config = Config.load(CONFIG)
    jobs = plan(scan_jobs([[str(s)] for s in scans], {}), config, tmp_path / "out")
    with open_client(parse_cluster("local:1")) as client:
        client.run(fill_up_at, FULL)
        results = run_batch(client, jobs, config, say=lambda line: None)
    for job, r in zip(jobs, results, strict=True):
        assert r["status"] == "fail" and "File too large" in r["reason"], r
        assert not job.path.exists() and not partial_path(job.path).exists()
    assert list((tmp_path / "out").iterdir()) == []
    table = format_table(results, 1.0)
    assert table.count(" fail ") == 2 and "running" not in table


@pytest.mark.system
def test_a_worker_job_slurm_refuses_ends_the_command(tmp_path, slurm):  # noqa: F811
    """The test node has 4000 MB: sbatch refuses a 64GB job, and the command says so and
    exits instead of waiting for workers forever."""
    scan = tmp_path / "s0.h5"
    write_scan(Simulation(SimConfig(npoints=40, shape=(96, 128), spots=6)), scan, "s0")
    # a subprocess: without an end (the bug), its timeout turns the wait into a failure
    r = subprocess.run([sys.executable, "-m", "stream.cli", "replay", str(scan), "--preset",
                        "simulated", "--quiet", "--output", str(tmp_path / "out"),
                        "--cluster", "slurm", "--slurm-queue", "test", "--slurm-cores", "1",
                        "--slurm-memory", "64GB", "--slurm-walltime", "00:10:00",
                        "--slurm-jobs", "1"], cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    err = r.stderr
    assert r.returncode == 2, err
    assert "the SLURM worker job was refused" in err
    assert "Memory specification can not be satisfied" in err
    assert "Traceback" not in err


def test_the_slurm_replay_script_takes_its_settings_from_the_environment(tmp_path):
    """configs/slurm-replay.sh with PEAKSTREAM=echo: the command line it would run."""
    script = ROOT / "configs" / "slurm-replay.sh"
    env = {**os.environ, "PEAKSTREAM": "echo"}
    line = subprocess.run(["bash", str(script), "m.h5", "out"], env=env, check=True,
                          capture_output=True, text=True).stdout
    assert "--slurm-queue nice --slurm-cores 16 --slurm-memory 64GB" in line  # defaults
    env.update(PEAKSTREAM_QUEUE="id11", PEAKSTREAM_CORES="4", PEAKSTREAM_MEMORY="16GB",
               PEAKSTREAM_WALLTIME="00:30:00", PEAKSTREAM_JOBS="2")
    line = subprocess.run(["bash", str(script), "m.h5", "out"], env=env, check=True,
                          capture_output=True, text=True).stdout
    assert ("--slurm-queue id11 --slurm-cores 4 --slurm-memory 16GB --slurm-walltime "
            "00:30:00 --slurm-jobs 2") in line
