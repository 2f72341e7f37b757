"""What the blissdata source is told to follow, against a real Redis server: the frame
channel `image` (a prefixed name is that channel only) and the Bliss `session`."""

from __future__ import annotations

import types

import pytest

from stream.core.messages import Start
from stream.sources.blissdata import BlissdataSource
from stream.sources.blissdata.scaninfo import pick_image
from stream.wire.codec import decode
from tests.support.bliss import FakeBliss
from tests.support.dectris import sim_scan


def scan_of(bliss: FakeBliss, number: int) -> None:
    frames, motors, _ = sim_scan("uint16")
    bliss.scan("fscan", number, frames[:4], {"diffrz": [m["omega"] for m in motors[:4]]})


def until(src: BlissdataSource, condition) -> list[list]:
    """The source's messages until `condition(status)` holds (a count-bounded net)."""
    out: list[list] = []
    for _ in range(600):
        out += src.receive(0.1)
        if condition(src.status()):
            break
    return out


def test_a_prefixed_image_name_is_that_channel_only(redis, tmp_path):
    """image = "frelon:image" used to fall back to eiger:image (the same short name) and
    process the wrong detector's frames without a word."""
    with BlissdataSource(redis_url=redis.url, motors=["omega"], counters=[],
                         channels={"omega": "axis:diffrz"}, image="frelon:image",
                         frame_timeout=0.5) as src:
        scan_of(FakeBliss(redis.url, tmp_path), 1)
        out = until(src, lambda s: s["skipped_scans"] >= 1)
        status = src.status()
    assert not [m for m in map(decode, out) if isinstance(m, Start)]
    assert status["skipped_scans"] == 1
    assert "no frame stream frelon:image (image channels: eiger:image)" in status["last_error"]


def streams(*names: str) -> dict:
    image = types.SimpleNamespace(kind="array", shape=(4, 5))
    scalar = types.SimpleNamespace(kind="array", shape=())
    return {n: image if n.endswith("image") else scalar for n in names}


@pytest.mark.parametrize("wanted, got", [
    ("eiger:image", "eiger:image"), ("frelon:image", None), ("eiger", "eiger:image"),
    ("", "eiger:image"), ("axis:diffrz", "axis:diffrz"), ("diffrz", None),
])
def test_an_unprefixed_image_name_falls_back_only_to_one_image_channel(wanted, got):
    assert pick_image(streams("axis:diffrz", "eiger:image"), wanted) == got


def test_an_ambiguous_image_name_is_an_error_listing_the_channels():
    with pytest.raises(ValueError, match="'image' matches eiger:image, frelon:image"):
        pick_image(streams("eiger:image", "frelon:image"), "image")
    assert pick_image(streams("eiger:image", "frelon:image"), "frelon") == "frelon:image"


def test_the_session_is_in_the_banner_and_other_sessions_scans_are_logged(redis, tmp_path,
                                                                          caplog):
    """Other sessions' scans were dropped without a word, the banner did not say which
    session was followed."""
    import logging

    from stream.cli.commands import _reading

    caplog.set_level(logging.INFO, "stream.sources.blissdata")
    with BlissdataSource(redis_url=redis.url, motors=["omega"], counters=[],
                         channels={"omega": "axis:diffrz"}, session="mine") as src:
        assert _reading(src) == f"following Bliss scans on {redis.url}, session mine only"
        scan_of(FakeBliss(redis.url, tmp_path, session="other"), 1)
        scan_of(FakeBliss(redis.url, tmp_path, session="mine"), 2)
        out = until(src, lambda s: s["scans"] >= 1 and not s["scan"])
        assert src.status()["skipped_scans"] == 1  # it stayed 0
    starts = [m for m in map(decode, out) if isinstance(m, Start)]
    assert [s.scan_id for s in starts] == ["mine_2_fscan"]
    skipped = [r.getMessage() for r in caplog.records if "skipped: session" in r.getMessage()]
    assert skipped == ["blissdata: scan other_1_fscan skipped: session other, not mine"]
