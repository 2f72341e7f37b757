"""The HDF5 store: appended columns, late assignments, final status, read back."""

from __future__ import annotations

import h5py
import numpy as np

from stream.item import PEAK_COLUMNS
from stream.runner import clique_columns
from stream.store import ScanStore, Table, read_table


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
