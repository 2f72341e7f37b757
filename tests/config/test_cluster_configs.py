"""The SLURM scripts and the worker's systemd unit in configs/: their peakstream
command lines are ones our parser takes, with the options they mean."""

from __future__ import annotations

import re
import shlex

from stream.cli.main import parser
from tests.support.paths import CONFIGS

VALUES = {"$PEAKSTREAM": "peakstream", "$PROCESSOR": "tcp://host:7100", "$KEYS": "/k",
          "$SLURM_CPUS_PER_TASK": "16", "$MASTER": "/d/m.h5", "$OUTPUT": "/d/out",
          "$CONFIG": "/c.toml"}


def commands(text: str) -> list[list[str]]:
    """The peakstream command lines of a script or unit (continuations joined,
    variables set): the arguments after `peakstream`."""
    out = []
    for line in re.sub(r"\\\n\s*", " ", text).splitlines():
        if not line.startswith(('"$PEAKSTREAM"', 'srun "$PEAKSTREAM"', "ExecStart=")):
            continue
        line = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", line)  # ${VAR:-default}: the default
        words = [VALUES.get(w, w) for w in shlex.split(line.removeprefix("ExecStart="))]
        words = words[1:] if words[0] == "srun" else words
        assert words[0].endswith("peakstream"), line
        out.append(words[1:])
    return out


def test_slurm_scripts_and_the_worker_unit_parse():
    (workers,) = commands((CONFIGS / "slurm-workers.sh").read_text())
    args = parser().parse_args(workers)
    assert args.command == "worker" and args.threads == 16 and args.keys == "/k"
    (replay,) = commands((CONFIGS / "slurm-replay.sh").read_text())
    args = parser().parse_args(replay)
    assert args.cluster == "slurm" and args.slurm_jobs == 8 and args.slurm_cores == 16
    assert args.images == ["measurement/eiger"]
    (unit,) = commands((CONFIGS / "peakstream-worker.service").read_text())
    args = parser().parse_args(unit)
    assert args.command == "worker" and args.connect.startswith("tcp://")
    assert args.keys and args.orphan == 0
