"""A naive union-find: the reference the linker's and the label split's kernels are
checked against (plain Python, no path compression, nothing shared with them)."""

from __future__ import annotations

from collections.abc import Hashable, Iterable


class NaiveForest:
    """Disjoint sets of `items`; `parent` may be set directly (a watershed's merges)."""

    def __init__(self, items: Iterable[Hashable]):
        self.parent = {x: x for x in items}

    def find(self, x: Hashable) -> Hashable:
        while self.parent[x] != x:
            x = self.parent[x]
        return x

    def union(self, a: Hashable, b: Hashable) -> None:
        self.parent[self.find(a)] = self.find(b)

    def groups(self) -> set[frozenset]:
        """Every set, as frozensets of its items."""
        out: dict[Hashable, set] = {}
        for x in self.parent:
            out.setdefault(self.find(x), set()).add(x)
        return {frozenset(g) for g in out.values()}
