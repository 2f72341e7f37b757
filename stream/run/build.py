"""Which build of peakstream this is: a hash of the source of its packages, so that a
remote worker whose code differs from the processor's (the same version string, a local
edit or another commit) is refused rather than mixing other results into the file."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

PACKAGES = ("stream", "nodes")  # the code a worker runs on the processor's frames


@functools.cache
def build_id() -> str:
    """The build of the peakstream this process imported (12 hex digits)."""
    import nodes
    import stream

    return source_hash([Path(m.__file__).parent for m in (stream, nodes)])


def source_hash(roots: list[Path]) -> str:
    """sha256 (12 hex digits) of the `.py` files below `roots`: their paths relative to
    each root's parent and their bytes, in sorted order (~10 ms for ours)."""
    h = hashlib.sha256()
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            h.update(str(path.relative_to(root.parent)).encode() + b"\0")
            h.update(path.read_bytes() + b"\0")
    return h.hexdigest()[:12]
