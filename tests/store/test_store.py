"""The HDF5 store: appended columns, late assignments, final status, read back."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from stream.core.item import PEAK_COLUMNS, clique_columns
from stream.core.table import Table, read_table
from stream.store.scanfile import ScanStore, mark_failed
from stream.store.state import read_state


def test_table_appends_flushes_and_assigns_across_the_flush(tmp_path):
    with h5py.File(tmp_path / "t.h5", "w") as f:
        t = Table(f.create_group("t"), {"a": "int64", "b": "float32"}, chunk=4)
        t.append({"a": np.arange(5), "b": np.ones(5)})
        t.flush()
        t.append({"a": np.arange(5, 8), "b": np.zeros(3)})
        assert (t.nwritten, t.nbuffered, t.nrows) == (5, 3, 8)
        t.assign("b", np.array([1, 6]), np.array([-1.0, -2.0]))  # one written, one buffered
        t.flush()
        t.flush()  # nothing pending: a no-op
        got = read_table(f["t"])
    np.testing.assert_array_equal(got["a"], np.arange(8))
    np.testing.assert_array_equal(got["b"], [1, -1, 1, 1, 1, 0, -2, 0])
    assert got["b"].dtype == np.float32


def test_table_keeps_an_appends_values_and_joins_them_when_written(tmp_path):
    """An append keeps the values of its columns (lists, arrays, extra keys ignored);
    they become the columns' rows at the flush, one column or several."""
    with h5py.File(tmp_path / "t.h5", "w") as f:
        one = Table(f.create_group("one"), {"n": "int64"})
        two = Table(f.create_group("two"), {"s": h5py.string_dtype("utf-8"), "x": "float64"})
        for k in range(3):
            one.append({"n": [k] if k % 2 else np.array([k, 10 * k])})
            two.append({"s": [f"p{k}"], "x": np.array([k / 2]), "other": [1]})
        assert (one.nbuffered, two.nbuffered) == (5, 3)
        with pytest.raises(KeyError, match="lack columns"):
            two.append({"s": [""]})
        with pytest.raises(ValueError, match="different lengths"):
            two.append({"s": ["a", "b"], "x": [0.0]})
        one.flush()
        two.flush()
        got_one, got_two = read_table(f["one"]), read_table(f["two"])
    assert got_one["n"].tolist() == [0, 0, 1, 2, 20]
    assert got_two["s"].tolist() == ["p0", "p1", "p2"] and got_two["x"].tolist() == [0, .5, 1]


def test_scan_store_layout_status_and_reopen(tmp_path):
    path = tmp_path / "scan.h5"
    store = ScanStore(path, scan_id="s1", detector="eiger", motors=["omega"],
                      counters=["monitor"], peak_columns=PEAK_COLUMNS,
                      clique_columns=clique_columns(["omega"]), config_text="[linker]\n",
                      start_json='{"scan_id": "s1"}', trajectory={"kind": "sweep"})
    store.set_shape((4, 5), "uint16")
    store.points.append({"point_id": [0], "time": [1.0], "status": [0], "flags": [""],
                         "motors/omega": [0.25], "counters/monitor": [1e4]})
    store.event("missing", "no data received", 1)
    store.flush({"received": 3})
    with h5py.File(path, "r", locking=False) as f:  # readable while the scan runs
        assert f["entry"].attrs["status"] == "running"
        assert f["entry/points/point_id"][()].tolist() == [0]
    store.close("abort", "timeout", {"received": 4})
    store.close("success")  # closing twice keeps the first status
    with h5py.File(path, "r") as f:
        e = f["entry"]
        assert (e.attrs["status"], e.attrs["reason"]) == ("abort", "timeout")
        assert e["process/counters"].attrs["received"] == 4
        assert e["process/config"].asstr()[()] == "[linker]\n"
        assert len(e["process/config_sha256"].asstr()[()]) == 64
        assert e["process/events/message"].asstr()[()].tolist() == ["no data received"]
        assert set(e["eiger/peaks2d"]) == {"point_id", "clique_id", *PEAK_COLUMNS}
        assert e["eiger/sparse"].attrs["shape1"] == 5
        assert e["points/motors/omega"][()].tolist() == [0.25]


def test_store_refuses_to_overwrite(tmp_path):
    path = tmp_path / "scan.h5"
    path.write_bytes(b"precious")
    try:
        ScanStore(path, scan_id="s", detector="d", motors=[], counters=[],
                  peak_columns=PEAK_COLUMNS, clique_columns=clique_columns([]))
    except FileExistsError:
        pass
    assert path.read_bytes() == b"precious"


def _store(path, motors=("omega",)):
    return ScanStore(path, scan_id="s1", detector="eiger", motors=list(motors),
                     counters=["monitor"], peak_columns=PEAK_COLUMNS,
                     clique_columns=clique_columns(list(motors)), config_text="[linker]\n",
                     start_json='{"scan_id": "s1"}')


def _point(i: int) -> dict:
    return {"point_id": [i], "time": [float(i)], "status": [0], "flags": [""],
            "motors/omega": [i * 0.25], "counters/monitor": [1e4]}


def test_a_checkpoint_commits_rows_counters_and_state_together(tmp_path):
    path = tmp_path / "scan.h5"
    store = _store(path)
    store.set_shape((4, 5), "uint16")
    store.points.append(_point(0))
    store.checkpoint({"linked": 1}, {"collector": {"next_point": 1},
                                     "linker": {"keys": np.arange(3)}})
    store.points.append(_point(1))  # buffered: not in the file until the next checkpoint
    store.event("flag", "after the checkpoint", 1)
    with h5py.File(path, "r") as f:  # another reader sees the last checkpoint
        ck = f["entry/process/checkpoint"]
        assert f["entry/points/point_id"][()].tolist() == [0]
        assert f["entry/process/counters"].attrs["linked"] == 1
        assert json.loads(ck.attrs["rows"])["points"] == 1
        assert ck.attrs["state_rows"] == ck.attrs["rows"]  # the state goes with these rows
        assert read_state(ck)["linker"]["keys"].tolist() == [0, 1, 2]
        assert f["entry/eiger/sparse"].attrs["shape1"] == 5
    store.close_unchanged()  # as if the process died here
    again = ScanStore.reopen(path)
    assert again.rows()["points"] == 1 and again.rows()["events"] == 0
    again.points.append(_point(1))
    again.close("success", "", {"linked": 2})
    with h5py.File(path, "r") as f:
        assert f["entry/points/point_id"][()].tolist() == [0, 1]
        assert f["entry"].attrs["status"] == "success"
        assert f["entry/points/motors/omega"][()].tolist() == [0.0, 0.25]


def test_a_background_checkpoint_writes_what_it_took_and_later_rows_wait(tmp_path):
    path = tmp_path / "scan.h5"
    store = _store(path)
    state = {"collector": {"next_point": 2}, "linker": {"keys": np.arange(3)}}
    for i in range(2):
        store.points.append(_point(i))
    store.peaks.assign("clique_id", np.array([], np.int64), np.array([], np.int64))
    store.checkpoint({"linked": 2}, state, background=True)
    state["linker"]["keys"][:] = -1  # the caller goes on changing its arrays ...
    store.points.append(_point(2))  # ... and buffering rows: they wait for the next one
    assert store.points.nrows == 3
    store.wait()
    with h5py.File(path, "r") as f:
        ck = f["entry/process/checkpoint"]
        assert f["entry/points/point_id"][()].tolist() == [0, 1]
        assert f["entry/process/counters"].attrs["linked"] == 2
        assert read_state(ck)["linker"]["keys"].tolist() == [0, 1, 2]  # as taken
        assert ck.attrs["state_rows"] == ck.attrs["rows"]
    store.checkpoint({"linked": 3}, background=True)
    store.close("success", "", {"linked": 3})  # waits for it, then the last rows
    with h5py.File(path, "r") as f:
        assert f["entry/points/point_id"][()].tolist() == [0, 1, 2]
        assert f["entry"].attrs["status"] == "success"
        assert f["entry/process/counters"].attrs["linked"] == 3


def test_attributes_alone_keep_the_checkpoint_resumable(tmp_path):
    path = tmp_path / "scan.h5"
    store = _store(path)
    store.points.append(_point(0))
    store.checkpoint({}, {"collector": {"next_point": 1}})
    store.points.append(_point(1))
    store.set_shape((4, 5), "uint16")  # commits the attributes, not the buffered row
    store.close_unchanged()
    with h5py.File(path, "r") as f:
        ck = f["entry/process/checkpoint"]
        assert ck.attrs["state_rows"] == json.dumps(
            {**{k: 0 for k in json.loads(ck.attrs["rows"])}, "points": 1, "nnz": 0})
        assert f["entry/eiger/sparse"].attrs["itype"] == "uint16"
    assert mark_failed(path, "disk full")
    with h5py.File(path, "r") as f:
        assert (f["entry"].attrs["status"], f["entry"].attrs["reason"]) == ("fail",
                                                                            "disk full")
        assert f["entry/points/point_id"][()].tolist() == [0]
