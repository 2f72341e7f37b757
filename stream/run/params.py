"""Node parameters changed while the daemon runs (control `get` / `set`).

`ParamState` validates a change against a chain of the config's own nodes
(`stream.node.check_param`: settable name, type, finite), keeps every change
made in the session as a new version of an immutable {node: {key: value}}
map, and tells the runner which changes have not reached a point yet: the
runner sends the map in force with each task it accepts (`stream.workers`)
and records, in the scan's file, the point id from which each change applies.
Nodes are named by their kind (the first node of that kind in the chain).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stream.config.schema import Config, dump_toml, node_params
from stream.core.node import check_param, unused_params


class ParamError(ValueError):
    """A get / set that cannot be done; the text says why."""


class ParamState:
    """The parameter changes of a session, versioned."""

    def __init__(self, config: Config):
        self.config = config
        self.version = 0
        self.changes: dict[str, dict[str, Any]] = {}  # replaced, never mutated
        self.unapplied: list[dict[str, Any]] = []  # changes no point has been accepted with
        self._nodes: dict[str, Any] | None = None
        self._chain: list[Any] = []

    @property
    def in_force(self) -> tuple[int, dict[str, dict[str, Any]]] | None:
        """(version, changes) for the tasks; None while nothing was changed."""
        return (self.version, self.changes) if self.version else None

    def nodes(self) -> dict[str, Any]:
        """The config's chain (unfused), by kind: the first node of each kind."""
        if self._nodes is None:
            self._nodes = {}
            self._chain = self.config.build_nodes()
            for node in self._chain:
                self._nodes.setdefault(node.kind, node)
        return self._nodes

    def unused(self, name: str) -> dict[str, str]:
        """The settable parameters of a node that the chain makes it not read, with why."""
        node = self.node(name)
        return unused_params(node, self._chain)

    def node(self, name: Any) -> Any:
        nodes = self.nodes()
        if not isinstance(name, str) or name not in nodes:
            raise ParamError(f"no node {name!r} in the chain (nodes: "
                             f"{', '.join(nodes) or 'none'})")
        return nodes[name]

    def get(self, name: Any = None, key: Any = None) -> dict[str, Any]:
        """A node's parameters (one of them with `key`); every node's without a name."""
        if name is None:
            if key is not None:
                raise ParamError("get: a key needs a node")
            return {kind: self._params(node) for kind, node in self.nodes().items()}
        node = self.node(name)
        params = self._params(node)
        if key is None:
            return params
        if not isinstance(key, str) or key not in params:
            raise ParamError(f"node {name!r} has no parameter {key!r} "
                             f"(parameters: {', '.join(params) or 'none'})")
        return {key: params[key]}

    def settable(self, name: str) -> list[str]:
        unused = self.unused(name)
        return [k for k in self.node(name).settable if k not in unused]

    def set(self, name: Any, key: Any, value: Any) -> dict[str, Any]:
        """Validate and record a change; returns what was changed (with the old value)."""
        node = self.node(name)
        if not isinstance(key, str) or key not in node.settable:
            raise ParamError(f"node {name!r} has no settable parameter {key!r} "
                             f"(settable: {', '.join(self.settable(name)) or 'none'})")
        why = self.unused(name).get(key)
        if why is not None:
            raise ParamError(f"{name}.{key} is not used by this chain: {why}")
        try:
            new = check_param(node, key, value)
        except (TypeError, ValueError) as exc:
            raise ParamError(str(exc)) from None
        old = getattr(node, key)
        setattr(node, key, new)
        changes = {k: dict(v) for k, v in self.changes.items()}
        changes.setdefault(name, {})[key] = new
        self.changes = changes
        self.version += 1
        change = {"node": name, "key": key, "value": new, "old": old, "version": self.version}
        self.unapplied.append(change)
        return change

    def config_text(self) -> str | None:
        """The config's text with the changes in force (each in the first [[node]] of its
        kind), as a scan started now is processed from its first point; None while
        nothing was changed."""
        if not self.version:
            return None
        data = dict(self.config.data)
        data["node"] = [dict(t) for t in data["node"]]
        for name, values in self.changes.items():
            next(t for t in data["node"] if t["kind"] == name).update(values)
        return dump_toml(data)

    def take_unapplied(self) -> list[dict[str, Any]]:
        """The changes made since the last accepted point (now applying from the next)."""
        out, self.unapplied = self.unapplied, []
        return out

    @staticmethod
    def _params(node: Any) -> dict[str, Any]:
        """Scalars as they are; arrays as a short description."""
        out: dict[str, Any] = {}
        for key in node_params(type(node)):
            if not hasattr(node, key):
                continue
            value = getattr(node, key)
            if isinstance(value, np.ndarray):
                value = f"array {list(value.shape)} {value.dtype}"
            elif isinstance(value, np.generic):
                value = value.item()
            elif value is not None and not isinstance(value, bool | int | float | str):
                value = repr(value)
            out[key] = value
        return out
