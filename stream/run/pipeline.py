"""The node chain of one detector: built from a config, run point by point.

Each worker (`stream.workers`) holds its own Pipeline, whether it runs inline,
in a thread or in a process (`stream.dispatch`); the runner keeps one more to
check the chain's setup before a scan's points are handed out.

Adjacent correct / normalise / threshold nodes are fused into one dense pass
(`nodes.fuse`). A sparse frame (a sparse recording, `encoding: "sparse"`)
goes through the nodes that act on pixels alone (`nodes.sparse`). A node
that fails on a point makes that point bad (with the node and the reason);
it never stops the scan.
"""

from __future__ import annotations

import logging
from typing import Any

from stream.core.item import Item
from stream.core.scan import Scan

log = logging.getLogger(__name__)


def sparse_only(kinds: list[str]) -> bool:
    """A chain of these node kinds labels pixels none of its nodes kept (no threshold
    before its label): it takes frames that arrive sparse only (`encoding: "sparse"`, a
    sparse recording); a dense frame fails in label."""
    return "label" in kinds and "threshold" not in kinds[:kinds.index("label")]


class PointError(Exception):
    """A point that a node could not process; the text says which node and why."""


class Pipeline:
    """Runs the (fused) node chain on each point."""

    def __init__(self, nodes: list[Any], fuse: bool = True):
        from nodes import fuse as fuse_chain
        from nodes.sparse import sparse_chain

        self.nodes = list(nodes)
        self.chain = fuse_chain(self.nodes) if fuse else list(self.nodes)
        # sparse frames go through the nodes that act on pixels alone (nodes.sparse);
        # sparse_notes: what the chain does not do to them (warned at the first one)
        self.sparse_chain, self.sparse_notes = sparse_chain(self.nodes, {})
        self.setup_warnings: list[str] = []

    def setup(self, scan: Scan) -> None:
        """Set every node up; a node that changes the frames (`output_scan`: the frame
        node's crop, orientation, rebin) hands its output's scan to the nodes after it."""
        from nodes.sparse import sparse_chain

        for node in self.chain:
            node.setup(scan)
            output_scan = getattr(node, "output_scan", None)
            if output_scan is not None:
                scan = output_scan(scan)
        self.output_scan = scan
        # what the start says the nodes will not do (a normalise counter it lacks ...)
        self.setup_warnings = [w for node in self.nodes if hasattr(node, "scan_warnings")
                               for w in node.scan_warnings(scan)]
        # (after the nodes' setup: a correct node may have taken the detector's mask)
        self.sparse_chain, self.sparse_notes = sparse_chain(self.nodes, scan.start.meta)

    def node(self, kind: str) -> Any:
        """The configured node of that kind (for get/set of its parameters)."""
        for n in self.nodes:
            if n.kind == kind:
                return n
        raise KeyError(f"no node {kind!r} in the chain "
                       f"({', '.join(n.kind for n in self.nodes) or 'empty'})")

    def process(self, item: Item) -> Item:
        chain = self.sparse_chain if item.frame is None and item.sparse is not None else self.chain
        for node in chain:
            try:
                item = node.process(item)
            except Exception as exc:  # a bad point must not stop the scan
                raise PointError(f"node {node.kind}: {type(exc).__name__}: {exc}") from exc
        item.frame = None  # only sparse results travel on
        return item
