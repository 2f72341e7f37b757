"""A normalise counter that the scan's start does not list (a typo: `srcur` where the
start lists `monitor`) gave an unnormalised scan that ended success with nothing on
stderr, only a flag on every point; it is now warned at the scan's start with the
counters the scan has, and recorded as an event `warning` that inspect shows."""

from __future__ import annotations

import logging

from stream.cli.main import main
from stream.store.reader import format_summary, summary
from tests.support.events import warnings_of
from tests.support.sparse import write_sparse

CHAIN = """
[[node]]
kind = "normalise"
counter = "{counter}"
[[node]]
kind = "threshold"
cut = 40.0
[[node]]
kind = "label"
[[node]]
kind = "properties"
"""


def test_a_counter_the_start_does_not_list_is_warned_at_the_start(tmp_path, caplog):
    scan = tmp_path / "scan.h5"
    assert main(["simulate", "--output", str(scan), "--points", "30", "--shape", "128", "160",
                 "--spots", "8", "--quiet"]) == 0
    for counter in ("srcur", "monitor"):
        config = tmp_path / f"{counter}.toml"
        config.write_text(CHAIN.format(counter=counter))
        out = tmp_path / f"{counter}.h5"
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert main(["replay", str(scan), "--config", str(config), "--output", str(out),
                         "--quiet"]) == 0
        said = [r.getMessage() for r in caplog.records if "not among" in r.getMessage()]
        if counter == "monitor":
            assert not said and not warnings_of(out)
            continue
        expected = ("normalise: counter 'srcur' is not among the scan's counters "
                    "('monitor')")
        assert [m for m in said if expected in m], said
        assert [m for m in warnings_of(out) if expected in m]
        assert f"warning     {expected}" in format_summary(summary(out))


def test_the_block_replay_warns_of_it_too(tmp_path, caplog):
    src = write_sparse(tmp_path / "in.h5", nframes=20)  # ImageD11: its counter is `frame`
    config = tmp_path / "c.toml"
    config.write_text(CHAIN.format(counter="monitor"))
    out = tmp_path / "out.h5"
    with caplog.at_level(logging.WARNING):
        assert main(["replay", str(src), "--config", str(config), "--output", str(out),
                     "--quiet"]) == 0
    expected = "normalise: counter 'monitor' is not among the scan's counters ('frame')"
    assert [r for r in caplog.records if expected in r.getMessage()]
    assert [m for m in warnings_of(out) if expected in m]
