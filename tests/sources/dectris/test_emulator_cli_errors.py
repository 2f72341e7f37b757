"""tools/detector_emulator.py on bad input: one `error:` line and exit 2, as argparse's own
errors, where it printed a Python traceback (missing file, --hdf5 without `::`, missing
dataset, --omega without its step, too many spots, an endpoint it cannot bind), or,
for --motors-to with --hdf5 and no --omega, sent no motor point without a word. The
command's main() in this process, on a real HDF5 file and real sockets."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from stream.sources.dectris.emulator import main

PROG = "python tools/detector_emulator.py: error: "


@pytest.fixture
def stack(tmp_path):
    path = tmp_path / "stack.h5"
    with h5py.File(path, "w") as f:
        f["data"] = np.zeros((3, 8, 10), np.uint16)
    return path


def error_of(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(PROG) and err.count("\n") == 1, err  # one line, no traceback
    return err[len(PROG):]


@pytest.mark.parametrize("args, said", [
    (["--hdf5", "/nonexistent/x.h5::/data"], "cannot read /nonexistent/x.h5"),
    (["--hdf5", "{stack}"], "give FILE::/dataset"),
    (["--hdf5", "{stack}::/nope"], "has no 3D dataset /nope"),
    (["--hdf5", "{stack}::/data", "--omega", "0"], "--omega 0: give START,STEP"),
    (["--hdf5", "{stack}::/data", "--motors-to", "ipc://{tmp}/m.sock"],
     "--motors-to with --hdf5 needs --omega"),
    (["--simulate", "30", "--shape", "128", "160", "--spots", "12"], "cannot place 12 spots"),
    (["--endpoint", "tcp://nohost:1"], "--endpoint tcp://nohost:1"),
])
def test_bad_input_is_one_error_line_and_exit_2(capsys, stack, tmp_path, args, said):
    argv = [a.format(stack=stack, tmp=tmp_path) for a in args]
    if "--endpoint" not in argv:
        argv += ["--endpoint", f"ipc://{tmp_path}/d.sock"]
    assert said in error_of(capsys, argv)
