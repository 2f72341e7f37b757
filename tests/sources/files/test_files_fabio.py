"""EDF / CBF / TIFF series through fabio replay to the very cliques of the live scan;
missing files are missing points, damaged ones bad points naming the file."""

from __future__ import annotations

import numpy as np
import pytest
from fabio.cbfimage import CbfImage
from fabio.edfimage import EdfImage
from fabio.tifimage import TifImage

from stream.sources.files import detect_format, open_recording
from tests.support.files import (
    SIMCONF,
    events,
    frames,
    live,
    monitors,
    omegas,
    replay,
    same,
    status,
)

N = SIMCONF.npoints
HEADER = {"omega": "header:omega", "monitor": "header:monitor"}
HEADER_MOTOR, HEADER_COUNTER = {"omega": "header:omega"}, {"monitor": "header:monitor"}


def header(i: int) -> dict[str, str]:
    return {"omega": repr(float(omegas()[i])), "monitor": repr(float(monitors()[i]))}


def write_edf_series(tmp_path, name="data_%04d.edf", start=1):
    for i in range(N):
        EdfImage(data=frames()[i], header=header(i)).write(str(tmp_path / (name % (i + start))))
    return str(tmp_path / name)


@pytest.fixture(scope="module")
def live_tables(tmp_path_factory):
    return live(tmp_path_factory.mktemp("live"))


def test_edf_series_with_a_missing_file_gives_a_missing_point(tmp_path):
    pattern = write_edf_series(tmp_path)
    (tmp_path / "data_0008.edf").unlink()  # point 7 (numbers start at 1)
    assert detect_format(pattern) == "fabio"
    start, _ = open_recording([pattern], motors={"omega": "header:omega"},
                              counters={"monitor": "header:monitor"})
    assert (start.scan_id, start.npoints, start.motors, start.counters) == \
        ("data", N, ["omega"], ["monitor"])
    t = replay(tmp_path, [pattern], motors={"omega": "header:omega"},
               counters={"monitor": "header:monitor"})
    assert list(np.flatnonzero(status(t))) == [7] and status(t)[7] == 1
    same(live(tmp_path, skip={7}), t)


def test_a_missing_and_a_bad_file_are_named_in_the_reason_and_nothing_is_rejected(tmp_path):
    """The recording's end gives the start's npoints (it gave the points read, one fewer
    with a file missing: logged and recorded as a rejected end), and the reason of the
    incomplete scan names the missing point and the bad one (it named the missing only)."""
    from stream.cli.main import main
    from stream.sources.base import RecordingSource
    from stream.store.reader import summary
    from stream.wire.codec import decode

    pattern = write_edf_series(tmp_path, start=0)
    (tmp_path / "data_0008.edf").unlink()
    p = tmp_path / "data_0011.edf"
    p.write_bytes(p.read_bytes()[:3000])
    source = RecordingSource(*open_recording([pattern], motors={"omega": "header:omega"}),
                             "edf")
    messages = []
    while not source.done:
        messages += source.receive()
    assert decode(messages[-1]).npoints == N and len(messages) == N + 1  # 19 points
    out = tmp_path / "out.h5"
    assert main(["replay", pattern, "--motor", "omega=header:omega", "--output", str(out),
                 "--quiet"]) == 0
    s = summary(out)
    assert s["status"] == "incomplete" and "rejected" not in s["events"], s["events"]
    assert s["counters"].get("rejected", 0) == 0
    assert "1 point(s) missing, 1 point(s) bad (the first: point 11: " in s["reason"]
    assert s["missing_points"] == [8] and [b["point_id"] for b in s["bad_points"]] == [11]


def test_missing_last_file_counts_when_the_range_is_given(tmp_path):
    pattern = write_edf_series(tmp_path, start=0)
    (tmp_path / "data_0019.edf").unlink()
    start, points = open_recording([pattern], first=0, last=19, motors={"omega": 0})
    assert start.npoints == 20 and [p.point_id for p in points] == list(range(19))
    start, _ = open_recording([pattern])  # from the files on disk: 0..18
    assert start.npoints == 19


def test_multi_frame_edf(tmp_path, live_tables):
    path = str(tmp_path / "stack.edf")
    img = EdfImage(data=frames()[0], header=header(0))
    for i in range(1, N):
        img.append_frame(data=frames()[i], header=header(i))
    img.write(path)
    t = replay(tmp_path, [path], motors={"omega": "range:0,0.25"},
               counters={"monitor": "header:monitor"})
    same(live_tables, t)


def test_edf_series_with_spec_motor_and_counter_pairs(tmp_path, live_tables):
    """ESRF EDF headers (SPEC, Bliss's EDF saver) name motors and counters in pairs of
    keys: header:omega finds omega in motor_mne / motor_pos."""
    for i in range(N):
        spec = {"motor_mne": "dty omega phi", "counter_mne": "sec monitor",
                "motor_pos": f"0.5 {float(omegas()[i])!r} 12",
                "counter_pos": f"0.1 {float(monitors()[i])!r}"}
        EdfImage(data=frames()[i], header=spec).write(str(tmp_path / f"s_{i:04d}.edf"))
    t = replay(tmp_path, [str(tmp_path / "s_%04d.edf")], motors=HEADER_MOTOR,
               counters=HEADER_COUNTER)
    same(live_tables, t)


def test_a_header_key_holding_a_list_is_refused_naming_its_names():
    """header:motor_pos (all the motors' positions) read its first number as omega for
    every point, in silence: a constant motor, a sweep derived from it, exit 0."""
    import pytest

    from stream.sources.files.common import header_value

    spec = {"motor_mne": "samx omega", "motor_pos": "0.1 42.5", "Omega": "12.5 deg"}
    with pytest.raises(ValueError, match=r"'motor_pos' holds 2 numbers.*header:samx"):
        header_value(spec, "motor_pos")
    assert header_value(spec, "omega") == 42.5
    assert header_value(spec, "Omega") == 12.5  # a number and its unit


def test_cbf_glob_with_mini_header(tmp_path, live_tables):
    for i in range(N):  # natural order: frame_9 before frame_10
        contents = (f"# Start_angle {float(omegas()[i])!r} deg.\r\n"
                    f"# Flux {float(monitors()[i])!r}\r\n")
        CbfImage(data=frames()[i].astype(np.int32),
                 header={"_array_data.header_contents": contents}).write(
            str(tmp_path / f"frame_{i}.cbf"))
    glob = str(tmp_path / "frame_*.cbf")
    start, _ = open_recording([glob])
    assert start.detectors["detector"].dtype == "int32"
    t = replay(tmp_path, [glob], motors={"omega": "header:Start_angle"},
               counters={"monitor": "header:Flux"})
    same(live_tables, t)


def test_tiff_files_with_values_from_a_list_and_a_file(tmp_path, live_tables):
    paths = []
    for i in range(N):
        paths.append(tmp_path / f"img_{i:03d}.tif")
        TifImage(data=frames()[i]).write(str(paths[i]))
    np.savetxt(tmp_path / "monitor.txt", monitors(), fmt="%.17g")
    assert detect_format(paths[0]) == "fabio"
    omega = "list:" + ",".join(repr(float(w)) for w in omegas())
    t = replay(tmp_path, paths, motors=[f"omega={omega}"],
               counters=[f"monitor=file:{tmp_path / 'monitor.txt'}"])
    same(live_tables, t)


def test_damaged_files_are_bad_points_naming_file_and_frame(tmp_path):
    pattern = write_edf_series(tmp_path, start=0)
    bad = {}
    p = tmp_path / "data_0004.edf"  # corrupt header
    p.write_bytes(p.read_bytes().replace(b"Dim_1 = 128", b"Dim_1 = 1x8"))
    bad[4] = "data_0004.edf frame 0"
    p = tmp_path / "data_0011.edf"  # truncated data
    p.write_bytes(p.read_bytes()[:3000])
    bad[11] = "data_0011.edf frame 0"
    EdfImage(data=frames()[13][:48], header=header(13)).write(str(tmp_path / "data_0013.edf"))
    bad[13] = "48x128, the series is 96x128"
    EdfImage(data=frames()[15], header={"omega": "0"}).write(str(tmp_path / "data_0015.edf"))
    bad[15] = "header has no key 'monitor'"
    t = replay(tmp_path, [pattern], motors={"omega": "header:omega"},
               counters={"monitor": "header:monitor"})
    assert list(np.flatnonzero(status(t))) == sorted(bad)
    assert (status(t)[sorted(bad)] == 2).all()
    for i, words in bad.items():
        assert words in events(t)[i], (i, events(t)[i])
    same(live(tmp_path, skip=set(bad)), t)


@pytest.mark.parametrize("inputs, kwargs, words", [
    (["nothere_%04d.edf"], {}, ["nothere_%04d.edf", "no file"]),
    (["nothere_*.edf"], {}, ["nothere_*.edf", "no file matches"]),
    (["nothere.edf"], {}, ["nothere.edf", "no such file"]),
    (["data_%04d.edf"], {"motors": {"omega": "/1.1/rot"}}, ["omega", "HDF5"]),
    (["data_%04d.edf"], {"motors": ["omega=list:1,2"]}, ["omega", "2 values for 20 points"]),
    (["data_%04d.edf"], {"motors": ["omega"]}, ["NAME=SPEC"]),
    (["data_%04d.edf"], {"first": 5, "last": 2}, ["--last 2 is before --first 5"]),
    (["data_%04d.edf"], {"motors": {"omega": "header:omegaa"}},  # a typo: refused at once
     ["omega=header:omegaa", "data_0000.edf", "no key 'omegaa'", "it has: omega, monitor"]),
    (["data_%04d.edf"], {"counters": {"mon": "header:mon"}}, ["mon=header:mon", "no key"]),
])
def test_unusable_series_raise(tmp_path, monkeypatch, inputs, kwargs, words):
    write_edf_series(tmp_path, start=0)
    monkeypatch.chdir(tmp_path)
    with pytest.raises((OSError, ValueError)) as err:
        open_recording(inputs, **kwargs)
    for w in words:
        assert w in str(err.value), (w, str(err.value))


def test_unreadable_first_files_are_bad_but_the_series_is_read(tmp_path):
    pattern = write_edf_series(tmp_path, start=0)
    (tmp_path / "data_0000.edf").write_bytes(b"garbage")
    start, points = open_recording([pattern], motors=["omega=header:omega"])
    points = list(points)
    assert start.npoints == N and "data_0000.edf frame 0" in points[0].extra["error"]
    assert np.array_equal(points[1].frames["detector"], frames()[1])
