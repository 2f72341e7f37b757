"""A SLURM cluster of one node on this machine for the tests: munged, slurmctld and
slurmd with a config of their own (ports the system gives, state in tmp_path). Needs
root and the Debian packages slurmctld, slurmd, slurm-client and munge (`.ci/run`
installs them); if they are missing the test fails with the reason."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.ports import free_port

MUNGE_SOCKET = Path("/run/munge/munge.socket.2")
CONF = """\
ClusterName=pstest
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
AuthType=auth/munge
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MpiDefault=none
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd.log
NodeName={host} CPUs={cpus} RealMemory=4000 State=UNKNOWN
PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def _munge_works() -> bool:
    if shutil.which("munge") is None:
        return False
    cred = subprocess.run(["munge", "-n"], capture_output=True)
    return cred.returncode == 0 and subprocess.run(
        ["unmunge"], input=cred.stdout, capture_output=True).returncode == 0


@pytest.fixture
def slurm(tmp_path, monkeypatch):
    """SLURM_CONF set for this test; yields the config's path."""
    missing = [b for b in ("munged", "slurmctld", "slurmd", "sbatch", "sinfo")
               if shutil.which(b) is None]
    if missing:
        pytest.fail(f"no {', '.join(missing)}: install the Debian packages slurmctld slurmd "
                    f"slurm-client munge (as .ci/run does)")
    started: list[subprocess.Popen] = []
    munged_pid = None
    if not _munge_works():  # munged daemonizes: its pid file says which process to end
        MUNGE_SOCKET.parent.mkdir(parents=True, exist_ok=True)
        shutil.chown(MUNGE_SOCKET.parent, "munge", "munge")
        done = subprocess.run(["munged", "--force"], capture_output=True, text=True)
        if not _munge_works():
            pytest.fail(f"munged does not answer: {done.stderr.strip()}")
        munged_pid = int((MUNGE_SOCKET.parent / "munged.pid").read_text())
    d = tmp_path / "slurm"
    for sub in ("state", "spool"):
        (d / sub).mkdir(parents=True)
    conf = d / "slurm.conf"
    conf.write_text(CONF.format(host=socket.gethostname(), ctld_port=free_port(),
                                d_port=free_port(), dir=d, cpus=os.cpu_count() or 1))
    monkeypatch.setenv("SLURM_CONF", str(conf))
    try:
        for daemon in ("slurmctld", "slurmd"):
            started.append(subprocess.Popen([daemon, "-D", "-f", str(conf)],
                                            stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 60  # start-up, not a figure under test
        while "idle" not in subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True,
                                           text=True).stdout:
            if time.monotonic() > deadline or any(p.poll() is not None for p in started):
                logs = "".join(p.read_text()[-2000:] for p in d.glob("*.log"))
                pytest.fail(f"the test SLURM cluster did not come up:\n{logs}")
            time.sleep(0.2)
        yield conf
    finally:
        subprocess.run(["scancel", "--user", "root"], capture_output=True)
        for p in started:
            p.terminate()
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if munged_pid is not None:
            os.kill(munged_pid, 15)
