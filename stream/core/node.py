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
  example a threshold cut through the control socket; `unused(chain)`, if the
  node has it, names those the chain makes it not read (`unused_params`).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Protocol, runtime_checkable

from stream.core.item import Item
from stream.core.scan import Scan


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


def unused_params(node: Any, chain: list) -> dict[str, str]:
    """The settable parameters of `node` that it does not read in `chain`, with why (a
    node may say so with `unused(chain)`; e.g. a threshold whose cut map comes from
    elsewhere): `set` refuses them, `get` shows them."""
    unused = getattr(node, "unused", None)
    return {k: v for k, v in unused(chain).items() if k in node.settable} if unused else {}


def set_param(node: Any, key: str, value: Any) -> Any:
    """Change a settable parameter of a node, checking name, type and value; return the
    value as set (converted to the parameter's type). A value the node's constructor
    would refuse (a NaN or infinite number) is refused here too."""
    if key not in node.settable:
        raise KeyError(f"node {node.kind!r} has no settable parameter {key!r} "
                       f"(settable: {', '.join(node.settable) or 'none'})")
    new = check_param(node, key, value)
    setattr(node, key, new)
    return new


def check_param(node: Any, key: str, value: Any) -> Any:
    """The value `set_param` would set, or TypeError / ValueError saying why not (a
    number must be finite and within the node's `ranges` {key: (low, high)}, both
    included: the same bounds its constructor checks, so a value a config may give is
    a value a live change may give)."""
    old = getattr(node, key)
    want = type(old)
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(old, bool):
        if not isinstance(value, bool):
            raise TypeError(f"{node.kind}.{key} must be true or false, got {value!r}")
        return value
    if isinstance(old, int | float):
        if not numeric or (want is int and isinstance(value, float)
                           and not value.is_integer()):
            raise TypeError(f"{node.kind}.{key} must be {want.__name__}, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{node.kind}.{key} must be finite, got {value!r}")
        lo, hi = getattr(node, "ranges", {}).get(key, (-math.inf, math.inf))
        if not lo <= value <= hi:
            raise ValueError(f"{node.kind}.{key} must be in [{lo:g}, {hi:g}] (at least {lo:g}, "
                             f"at most {hi:g}), got {value!r}")
        return want(value)
    if isinstance(old, str) and isinstance(value, str):
        return value
    raise TypeError(f"{node.kind}.{key} must be {want.__name__}, got {value!r}")
