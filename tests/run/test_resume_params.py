"""A live `set` survives a crash: the resumed scan goes on with the parameters in force
at its checkpoint (the file's param events), and says so."""

from __future__ import annotations

import json

import numpy as np

from stream.config.schema import Config
from stream.run.loop import drain
from stream.run.runner import ScanRunner
from stream.sources.simulate import Simulation
from stream.store.reader import load
from stream.wire.codec import encode
from tests.support.flow import SIMCONF
from tests.support.paths import CONFIGS

SET_AT, KILLED_AT = 10, 30  # cut 200 from point 10; the process dies after point 29


def config() -> Config:
    cfg = Config.load(CONFIGS / "simulated.toml")
    cfg.override("workers", "kind", "inline")
    return cfg


def test_a_resumed_scan_goes_on_with_the_parameters_set_before_the_crash(tmp_path, caplog):
    sim, n = Simulation(SIMCONF), SIMCONF.npoints
    out = tmp_path / "out"
    runner = ScanRunner(config(), output_dir=out)
    runner.handle(encode(sim.start("setcrash")))
    for i in range(KILLED_AT):
        if i == SET_AT:
            runner.params.set("threshold", "cut", 200.0)  # the control socket's `set`
        runner.handle(encode(sim.point(i, "setcrash")))
    drain(runner)
    runner.current.collector.checkpoint()  # with the resume state
    runner.current.collector.store.close_unchanged()  # killed: the file as checkpointed
    runner.current = None
    runner.close()
    # a new process (the config's cut, 40) takes the rest of the scan
    runner = ScanRunner(config(), output_dir=out)
    for i in range(KILLED_AT, n):
        runner.handle(encode(sim.point(i, "setcrash")))
    runner.handle(encode(sim.end("setcrash", n)))
    assert runner.params.get("threshold", "cut") == {"cut": 200.0}
    runner.close()
    assert runner.results[0]["status"] == "success"
    assert "threshold.cut = 200.0, in force at its checkpoint" in caplog.text
    got = load(out / "setcrash.h5")
    events = [(k, int(p), json.loads(m)) for k, p, m in zip(
        got["events"]["kind"], got["events"]["point_id"], got["events"]["message"],
        strict=True) if k == "param"]
    assert [(p, e["value"]) for _, p, e in events] == [(SET_AT, 200.0), (KILLED_AT, 200.0)]
    # every point from the set on is processed with cut 200: as a run with it from there
    runner = ScanRunner(config(), output_file=tmp_path / "ref.h5")
    runner.handle(encode(sim.start("setcrash")))
    for i in range(n):
        if i == SET_AT:
            runner.params.set("threshold", "cut", 200.0)
        runner.handle(encode(sim.point(i, "setcrash")))
    runner.handle(encode(sim.end("setcrash", n)))
    runner.close()
    ref = load(tmp_path / "ref.h5")
    for col in ("point_id", "npx", "sum_intensity", "s_raw", "f_raw"):
        assert np.array_equal(got["peaks2d"][col], ref["peaks2d"][col]), col
