"""The `peakstream` entry point (`stream.cli.main:run`): main's exit code, and the
objects frozen out of the exit's garbage collection."""

import subprocess
import sys

from stream.cli.codes import EXIT_OK, EXIT_USAGE

PROBE = ("import gc, sys; from stream.cli.main import run; sys.argv = ['peakstream', *{args}]; "
         "code = run(); print(code, gc.get_freeze_count() > 0)")


def probe(*args: str) -> tuple[int, str]:
    done = subprocess.run([sys.executable, "-c", PROBE.format(args=list(args))],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    code, frozen = done.stdout.split()[-2:]
    return int(code), frozen


def test_run_returns_mains_code_and_freezes():
    code, frozen = probe("inspect", "/nonexistent/peakstream-no-such-file.h5")
    assert code != EXIT_OK and frozen == "True"


def test_module_entry_passes_the_exit_code():
    done = subprocess.run([sys.executable, "-m", "stream.cli", "replay", "--cluster", "local:0",
                           "x.h5", "--output", "out"], capture_output=True, text=True)
    assert done.returncode == EXIT_USAGE, done.stderr


def test_a_reader_that_stops_early_gets_no_traceback(tmp_path):
    """`peakstream inspect ... | head`: the pipe closes under us; the command ends quietly
    (exit 1, nothing on stderr), not with a BrokenPipeError traceback."""
    from stream.cli.main import main

    rec, scan = tmp_path / "rec.h5", tmp_path / "s.h5"
    assert main(["simulate", "--output", str(rec), "--points", "20", "--shape", "128", "160",
                 "--spots", "2", "--quiet"]) == EXIT_OK
    assert main(["replay", str(rec), "--output", str(scan), "--quiet"]) == EXIT_OK
    proc = subprocess.Popen([sys.executable, "-m", "stream.cli", "inspect",
                             *[str(scan)] * 400, "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout.read(100)
    proc.stdout.close()  # as head does: more than a pipe's buffer is still to come
    err = proc.stderr.read().decode()
    assert proc.wait() == 1 and "Traceback" not in err and "BrokenPipe" not in err, err
