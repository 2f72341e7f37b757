"""A `set` holds for the daemon's later scans, and their files say so: the next scan's
/entry/process/config still held the config file's value (only an event `params` at
point 0 said the change), so the file's config and config_sha256 named a processing its
points did not have."""

from __future__ import annotations

import hashlib
import tomllib

import h5py
import pytest

from stream.config.schema import Config
from stream.store.identity import GIVEN, processing_hash
from tests.support.daemon import Sender, completed, daemon_config, wait_until


def stored_config(path) -> tuple[str, str, str | None]:
    """The file's config text, its config_sha256 and the config-as-given's hash."""
    with h5py.File(path, "r") as f:
        proc = f["entry/process"]
        return (proc["config"].asstr()[()], proc["config_sha256"].asstr()[()],
                proc["config"].attrs.get(GIVEN))


def cut(text: str) -> float:
    return next(t["cut"] for t in tomllib.loads(text)["node"] if t["kind"] == "threshold")


@pytest.mark.system
def test_a_scan_after_a_set_stores_the_value_in_force(daemon, tmp_path):
    config = daemon_config(tmp_path)
    d = daemon(config)
    sender = Sender(d.endpoint)
    sender.start("before")
    sender.points("before", range(10))
    wait_until(lambda: (d.status().get("scan") or {}).get("accepted") == 10, why="accepted")
    assert d.ask({"cmd": "set", "node": "threshold", "key": "cut", "value": 55.0})["ok"]
    sender.points("before", range(10, sender.sim.config.npoints))
    sender.end("before")
    sender.scan("after")
    sender.close()
    out = tmp_path / "out"
    assert completed(out / "before.h5") == completed(out / "after.h5") == "success"

    text, sha, given = stored_config(out / "before.h5")
    assert cut(text) == 40.0 and given is None  # from its first point: the file's value
    text, sha, given = stored_config(out / "after.h5")
    assert cut(text) == 55.0  # in force from its first point
    assert sha == hashlib.sha256(text.encode()).hexdigest()
    # the daemon's own config (a restart is given it) can still continue the file
    assert given == processing_hash(Config.load(config).text()) != processing_hash(text)
