"""Batch replay on dask.distributed when things go wrong: a full disk on a worker."""

from __future__ import annotations

import resource
import signal

import pytest

from stream.config.schema import Config
from stream.offline.cluster import format_table, open_client, parse_cluster, plan, run_batch
from stream.offline.scanjob import partial_path, scan_jobs
from stream.sources.simulate import Simulation, write_scan
from stream.sources.simulate.config import SimConfig
from tests.support.paths import CONFIGS

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
