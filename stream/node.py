"""The contract of a processing node, written once.

A node is a small class in `nodes/`:

* its constructor takes keyword-only values and arrays (never file names;
  `stream.config` loads the files named in a config and passes arrays), with
  type hints that the config validator checks against;
* `setup(scan)` runs once per scan, before the first point (check shapes,
  precompute maps, allocate buffers);
* `process(item)` runs once per point and returns the item. It depends on
  that point only, so workers may run it on any point in any order;
* the names in `settable` may be changed between points (`set_param`), for
  example a threshold cut through the control socket.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, runtime_checkable

from .item import Item
from .scan import Scan


@runtime_checkable
class Node(Protocol):
    """One processing step, called once per point."""

    kind: ClassVar[str]
    settable: ClassVar[tuple[str, ...]]

    def setup(self, scan: Scan) -> None:
        """Prepare for a scan (shapes, buffers, precomputed maps)."""
        ...

    def process(self, item: Item) -> Item:
        """Process one point; must not depend on other points."""
        ...


def set_param(node: Any, key: str, value: Any) -> None:
    """Change a settable parameter of a node, checking name and type."""
    if key not in node.settable:
        raise KeyError(f"node {node.kind!r} has no settable parameter {key!r} "
                       f"(settable: {', '.join(node.settable) or 'none'})")
    old = getattr(node, key)
    if isinstance(old, bool) or not isinstance(value, type(old) | int | float):
        raise TypeError(f"{node.kind}.{key} must be {type(old).__name__}, got {value!r}")
    setattr(node, key, type(old)(value))
