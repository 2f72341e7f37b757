"""The build id a remote worker's hello carries: one per source tree."""

from __future__ import annotations

import shutil
from pathlib import Path

import stream
from stream.run.build import build_id, source_hash


def test_the_build_follows_every_byte_of_the_sources_and_only_them(tmp_path):
    tree = tmp_path / "a" / "stream"
    shutil.copytree(Path(stream.__file__).parent, tree,
                    ignore=shutil.ignore_patterns("__pycache__"))
    first = source_hash([tree])
    assert source_hash([tree]) == first and len(first) == 12
    (tree / "notes.txt").write_text("not code")
    (tree / "__pycache__").mkdir(exist_ok=True)
    (tree / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"compiled")
    assert source_hash([tree]) == first  # only .py files count (caches differ by host)
    runner = tree / "run" / "runner.py"
    runner.write_text(runner.read_text() + "\n")
    assert source_hash([tree]) != first
    other = tmp_path / "b" / "stream"  # the same sources elsewhere: the same build
    shutil.copytree(tree, other)
    assert source_hash([other]) == source_hash([tree])


def test_this_process_has_one_build():
    assert build_id() == build_id() and len(build_id()) == 12
