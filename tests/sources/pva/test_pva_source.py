"""The pva source against a p4p server in this process serving an NTNDArray PV (as
areaDetector's PVA plugin does), on loopback only: the same cliques as the frames sent
over our protocol, areaDetector's codecs, dropped updates counted as missing points,
scans from Acquire / NumImages or from the first frame and a timeout."""

from __future__ import annotations

import numpy as np
import pytest
import zmq

from nodes.decode import dense
from stream.core.encoded import EncodedFrame
from stream.core.messages import End, Point, Start
from stream.sources.pva import PvaSource
from stream.sources.zmq import ZmqSource
from stream.wire.codec import decode, encode
from tests.support.bliss import run_messages
from tests.support.dectris import assert_same_cliques, sim_scan
from tests.support.pva import AreaDetector


@pytest.fixture
def detector(monkeypatch):
    ad = AreaDetector()
    for k, v in ad.env.items():  # pvAccess on loopback only, to this server
        monkeypatch.setenv(k, v)
    yield ad
    ad.close()


def source(ad: AreaDetector, **kw) -> PvaSource:
    args = dict(pv=ad.image_pv, motors=["omega"], counters=["monitor"],
                channels={"omega": "OMEGA", "monitor": "I0"}, series_timeout=1.0,
                queue_size=64, detector="eiger")
    src = PvaSource(**{**args, **kw})
    wait_connected(src)
    return src


def wait_connected(src: PvaSource) -> None:
    for _ in range(300):  # a safety net; the assert says what went wrong
        src.receive(0.05)
        if src.status()["connected"]:
            return
    assert src.status()["connected"], "the source never connected to the test's PV"


def collect(src, ends: int = 1) -> list[list]:
    out: list[list] = []
    for _ in range(3000):  # a safety net (300 s); the callers' asserts say what was missing
        got = src.receive(0.1)
        out += got
        if sum(isinstance(decode(p), End) for p in out) >= ends:
            break
    return out


def over_our_protocol(start: Start, points: list[Point], end: End) -> list[list]:
    """The same scan through a real PUSH -> ZmqSource (PULL) on loopback."""
    src = ZmqSource("tcp://127.0.0.1:0")
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.connect(src.endpoint)
    try:
        for m in (start, *points, end):
            push.send_multipart(encode(m))
        out: list[list] = []
        while len(out) < len(points) + 2:
            out += src.receive(5.0, limit=64)
    finally:
        push.close(linger=0)
        src.close()
    return out


def test_sweep_gives_the_cliques_of_the_same_frames_over_our_protocol(detector, tmp_path):
    frames, motors, counters = sim_scan("uint16")
    with source(detector) as src:
        for i, f in enumerate(frames):
            detector.post(f, 100 + i, {"OMEGA": motors[i]["omega"],
                                       "I0": counters[i]["monitor"]})
        out = collect(src)
        status = src.status()
    msgs = [decode(p) for p in out]
    start, end = msgs[0], msgs[-1]
    points = [m for m in msgs if isinstance(m, Point)]
    assert isinstance(start, Start) and start.trajectory == {"kind": "sweep", "fast": "omega"}
    assert [p.point_id for p in points] == list(range(32)) and status["gaps"] == 0
    assert [p.motors["omega"] for p in points] == [m["omega"] for m in motors]
    assert [p.counters["monitor"] for p in points] == [c["monitor"] for c in counters]
    assert end.status == "success" and end.npoints == 32
    live = run_messages(tmp_path, out, "pva")
    ours = over_our_protocol(Start("ours", start.detectors, ["omega"], ["monitor"], 32,
                                   start.trajectory),
                             [Point("ours", i, 0.0, motors[i], counters[i], {"eiger": f})
                              for i, f in enumerate(frames)], End("ours", "success", 32))
    reference = run_messages(tmp_path, ours, "ours")
    assert live[0]["status"] == "success" and live[0]["processed"] == 32
    assert_same_cliques(live[0]["tables"], reference[0]["tables"])


@pytest.mark.parametrize("codec", ["lz4", "bslz4"])
@pytest.mark.parametrize("dtype", ["uint16", "uint32"])
def test_codec_plugin_frames_decode_to_the_frames_sent(detector, codec, dtype):
    rng = np.random.default_rng(5)
    frames = [rng.poisson(3, (60, 50)).astype(dtype) for _ in range(3)]
    with source(detector) as src:
        for i, f in enumerate(frames):
            detector.post(f, i + 1, {"OMEGA": float(i)}, codec=codec)
        points = [m for m in map(decode, collect(src)) if isinstance(m, Point)]
    assert len(points) == 3
    for p, f in zip(points, frames, strict=True):
        got = p.frames["eiger"]
        assert isinstance(got, EncodedFrame) and got.encoding == codec
        assert np.array_equal(dense(got), f)


def test_dropped_updates_are_counted_and_missing_in_the_scan(detector, tmp_path):
    frames, motors, _ = sim_scan("uint16")
    sent = [0, 1, 2, 5, 6, 7]
    with source(detector) as src:
        for i in sent:
            detector.post(frames[i], 1 + i, {"OMEGA": motors[i]["omega"]})
        out = collect(src)
        status = src.status()
    points = [m for m in map(decode, out) if isinstance(m, Point)]
    assert [p.point_id for p in points] == sent
    assert status["gaps"] == 1 and status["dropped"] == 2
    assert "2 update(s) dropped" in status["last_error"]
    live = run_messages(tmp_path, out)
    assert live[0]["missing"] == 2 and live[0]["processed"] == 6


def acquisition(src: PvaSource, ad: AreaDetector, counter: int, uids: list[int],
                images: int = 5) -> None:
    """One acquisition as areaDetector runs it: ArrayCounter at `counter` (its frames
    are counter + 1, ...), NumImages, Acquire 1, the frames `uids` (the others lost), 0."""
    frames, motors, _ = sim_scan("uint16")
    ad.counter.post(counter)
    ad.images.post(images)
    wait_for(lambda: src.scans.counter == counter and src.scans.images == images)
    ad.acquire.post(1)
    wait_for(lambda: src.scans.acquiring)
    for uid in uids:
        i = uid - counter - 1
        ad.post(frames[i], uid, {"OMEGA": motors[i]["omega"]})
    wait_for(lambda: src.scans.last == uids[-1] or src.scans.counts["outside"] >= len(uids))
    ad.acquire.post(0)
    wait_for(lambda: not src.scans.acquiring)


def acquiring_source(ad: AreaDetector, **kw) -> PvaSource:
    src = source(ad, acquire_pv=ad.acquire_pv, images_pv=ad.images_pv,
                 counter_pv=ad.counter_pv, **kw)
    wait_for(lambda: all(src.connected.get(k) for k in ("acquire", "images", "counter")))
    return src


def test_acquire_and_num_images_make_the_scans(detector, tmp_path):
    frames, _, _ = sim_scan("uint16")
    with acquiring_source(detector) as src:
        detector.post(frames[0], 1, {"OMEGA": 0.0})  # not acquiring: not part of a scan
        wait_for(lambda: src.scans.counts["outside"] == 1)
        for n in (5, 3):  # the second acquisition stops after 3 of 5 images
            acquisition(src, detector, 9, list(range(10, 10 + n)))
        out = collect(src, 2)
    msgs = [decode(p) for p in out]
    starts = [m for m in msgs if isinstance(m, Start)]
    ends = [m for m in msgs if isinstance(m, End)]
    assert [s.npoints for s in starts] == [5, 5]
    assert ends[0].status == "success" and ends[0].npoints == 5
    assert ends[1].status == "abort" and "stopped after 3 of 5 images" in ends[1].reason
    assert [m.point_id for m in msgs if isinstance(m, Point)] == [0, 1, 2, 3, 4, 0, 1, 2]
    # the abort's end says the start's npoints (5, not the 3 that came): no protocol
    # complaint ("end: npoints 3 is not the start's 5"), points 3 and 4 missing
    live = run_messages(tmp_path, out)
    assert [(r["status"], r["rejected"], r["missing"]) for r in live] == \
        [("success", 0, 0), ("abort", 0, 2)]


def wait_for(condition) -> None:
    """Until the source's thread has taken what was posted (count-bounded safety net)."""
    import time

    for _ in range(1000):
        if condition():
            return
        time.sleep(0.01)
    assert condition(), "the source did not see what the test's PVs posted"


def test_lost_first_frames_are_missing_points_not_a_shift_of_every_id(detector):
    """Point 0 is ArrayCounter + 1 as Acquire went to 1 (the PV derived from acquire_pv
    as areaDetector names it): the first frame *received* used to be point 0, so every
    id was shifted and the end said "stopped after 3 of 5 images"."""
    from stream.config.schema import Config
    from stream.sources.pva import make_source

    config = Config({"source": {"kind": "pva", "pv": detector.image_pv,
                                "acquire_pv": detector.acquire_pv,
                                "images_pv": detector.images_pv, "motors": ["omega"],
                                "series_timeout": 1.0, "queue": 64}})
    with make_source(config["source"]) as src:
        assert src.counter_pv == detector.counter_pv
        wait_connected(src)
        wait_for(lambda: all(src.connected.get(k) for k in ("acquire", "images", "counter")))
        acquisition(src, detector, 9, [12, 13, 14])  # 10 and 11 never arrive
        msgs = [decode(p) for p in collect(src)]
        status = src.status()
    start, end = msgs[0], msgs[-1]
    assert isinstance(start, Start) and start.meta["pva"]["first_unique_id"] == 10
    assert [m.point_id for m in msgs if isinstance(m, Point)] == [2, 3, 4]
    assert end.status == "success" and end.npoints == 5
    assert "first 2 frame(s) (uniqueId 10..11) not received" in status["last_error"]


def test_an_acquisition_running_when_we_connect_is_not_numbered_from_its_middle(detector):
    """Its first uniqueId is unknown: its frames are not taken (said why); the next
    acquisition is a scan numbered from its ArrayCounter."""
    detector.counter.post(40)
    detector.images.post(5)
    detector.acquire.post(1)
    frames, _, _ = sim_scan("uint16")
    with acquiring_source(detector) as src:
        for uid in (43, 44):
            detector.post(frames[0], uid, {"OMEGA": 0.0})
        wait_for(lambda: src.scans.counts["outside"] == 2)
        assert "running when peakstream connected" in src.status()["last_error"]
        detector.acquire.post(0)
        wait_for(lambda: not src.scans.acquiring)
        acquisition(src, detector, 45, [46, 47, 48, 49, 50])
        msgs = [decode(p) for p in collect(src)]
    assert sum(isinstance(m, Start) for m in msgs) == 1
    assert [m.point_id for m in msgs if isinstance(m, Point)] == [0, 1, 2, 3, 4]
    assert msgs[-1].status == "success"


def test_a_pv_that_never_connects_is_warned_about_naming_it_and_the_epics_settings(
        detector, caplog):
    """A wrong PV name (or no IOC) printed `listening on pva://...` and nothing more."""
    import logging

    caplog.set_level(logging.WARNING, "stream.sources.pva")
    with PvaSource(pv="SIM1:Pva1:Imagee", motors=[], counters=[],
                   connect_warning=0.5) as src:
        for _ in range(600):  # a safety net; the asserts say what was missing
            src.receive(0.05)
            if "not connected" in src.status()["last_error"]:
                break
        status = src.status()
    assert not status["connected"]
    error = status["last_error"]
    assert "PV SIM1:Pva1:Imagee (image) not connected for" in error
    assert f"EPICS_PVA_ADDR_LIST={detector.env['EPICS_PVA_ADDR_LIST']}" in error
    assert any("SIM1:Pva1:Imagee (image) not connected" in r.getMessage()
               for r in caplog.records)


def test_a_long_exposure_past_end_timeout_keeps_the_acquisition_open(detector, tmp_path):
    """No frame for longer than the runner's end_timeout (a long exposure, a paused
    trigger) while Acquire is still 1: the runner aborted the scan and rejected the
    frames that came after; the source ends its acquisitions itself, so it waits."""
    import threading
    import time

    from stream.config.schema import Config
    from stream.run.runner import ScanRunner
    from tests.support.bliss import follow
    from tests.support.paths import CONFIGS

    config = Config.load(CONFIGS / "simulated.toml")
    config.override("source", "end_timeout", 0.5)
    runner = ScanRunner(config, output_dir=tmp_path / "out")
    frames, motors, _ = sim_scan("uint16")

    def acquire_with_a_pause(src: PvaSource) -> None:
        detector.counter.post(9)
        detector.images.post(5)
        wait_for(lambda: src.scans.counter == 9 and src.scans.images == 5)
        detector.acquire.post(1)
        wait_for(lambda: src.scans.acquiring)
        for i in range(5):
            if i == 2:
                time.sleep(2.5)  # the exposure: nothing comes, Acquire stays 1
            detector.post(frames[i], 10 + i, {"OMEGA": motors[i]["omega"]})
        wait_for(lambda: src.scans.last == 14)
        detector.acquire.post(0)

    with acquiring_source(detector) as src:
        t = threading.Thread(target=acquire_with_a_pause, args=(src,), daemon=True)
        t.start()
        results = follow(runner, src)
        t.join(30)
    runner.close()
    assert [(r["status"], r["reason"]) for r in results] == [("success", "")]
    assert results[0]["processed"] == 5 and results[0]["rejected"] == 0


@pytest.mark.parametrize("pvs, warned", [
    (("acquire", "images", "counter"), []),
    (("acquire", "images"), ["no counter_pv"]),
    ((), ["no acquire_pv"]),
])
def test_the_start_warns_only_of_the_pvs_not_given(detector, caplog, pvs, warned):
    """With acquire_pv and counter_pv (configs/pva.toml) the start warned "no
    acquire_pv": the test was `if acquire and not counter: ... else:`."""
    import logging

    caplog.set_level(logging.WARNING, "stream.sources.pva")
    given = {f"{k}_pv": getattr(detector, f"{k}_pv") for k in pvs}
    with source(detector, **given):
        pass
    said = [r.getMessage() for r in caplog.records]
    assert [w for w in ("no acquire_pv", "no counter_pv") if any(w in m for m in said)] \
        == warned


def test_a_pv_connected_again_marks_its_error_as_past(detector):
    """last_error kept saying "PV ... not connected for 10 s" with the PV long back."""
    with acquiring_source(detector, connect_warning=0.5) as src:
        detector.counter.close()  # the IOC's record goes away, then comes back
        wait_for(lambda: "(counter) not connected" in src.status()["last_error"])
        detector.counter.open(0)
        wait_for(lambda: src.connected.get("counter"))
        error = src.status()["last_error"]
    assert "(counter) not connected" in error and "(recovered at " in error
