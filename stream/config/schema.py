"""TOML configuration: load, validate, override, and write back as provenance.

Groups: `[source]`, `[[node]]` (the chain, in order, each with `kind`;
none given: `DEFAULT_CHAIN`), `[linker]`, `[output]`, `[workers]`, and for
`peakstream daemon` `[daemon]`, `[control]`, `[live]`, `[web]`. Unknown
groups or keys and wrong types are a `ConfigError` naming the key and the
file. Node tables are checked against the node class's constructor (its
keyword arguments and type hints); a string given for an array parameter is
a file name that is loaded here (`.npy`, or `file.h5::/path/in/file`),
relative to the config file, so nodes only ever see arrays.
"""

from __future__ import annotations

import copy
import inspect
import tomllib
import typing
from pathlib import Path
from typing import Any

import numpy as np

from stream.config.arrays import load_array
from stream.config.base import ConfigError, check_chain, members, wants_array
from stream.config.detector import poni_node_values
from stream.config.service import validate_service, validate_source
from stream.config.sources import SOURCE_DEFAULTS
from stream.core.node import check_param

DEFAULTS: dict[str, dict[str, Any]] = {
    "source": {
        "kind": "zmq", "listen": "tcp://127.0.0.1:5555",
        "detector": "",  # "" = the first detector of the start message
        "max_frame_bytes": 64 * 1024 * 1024, "reorder_window": 64,
        "point_timeout": 5.0, "end_timeout": 30.0, "rcvhwm": 64,
        # the processing lane is lossless: when the queues are full the receiver stops
        # reading and ZeroMQ's high-water mark pushes back to the sender ("block"), or
        # the scan is aborted once the lag (newest received - newest linked) exceeds
        # max_lag points ("abort")
        "overrun": "block", "max_lag": 1000,
        # kind = "dectris" (stream.sources.dectris): frames from the detector's PUSH
        # (SIMPLON stream v1 or v2); motors and counters from our protocol's point
        # messages without frames on `listen` (the motor lane), joined by image number
        "detector_endpoint": "tcp://127.0.0.1:31001",
        "stream_version": 2,
        "motors": [],
        "counters": [],
        "join_timeout": 2.0,  # s a frame waits for its motors (and the reverse)
        "series_timeout": 30.0,  # s without a message before an open series ends itself
        "trajectory": {},  # the scan's trajectory map ({} = a sweep in the first motor)
        "warmup": ["uint16/bslz4", "uint32/bslz4", "uint16/raw"],  # docs/first-start*.md
        # limits checked as a message arrives, frame references (docs/security.md)
        "max_points": 10_000_000, "max_gap": 100_000, "motor_limit": 1e9, "motor_ranges": {},
        "allow_refs": False, "ref_dirs": [],
        **SOURCE_DEFAULTS,  # kind = "blissdata" / "pva": stream.config.sources
    },
    # per-point nodes run in `count` workers (0: threads one per core, processes one per
    # core less one); the linker and the store stay in the main process
    "workers": {
        "kind": "threads", "count": 0,  # inline | threads (kernels release the GIL) | processes
        "endpoint": "",  # processes: ROUTER endpoint ("" = an ipc:// path of our own)
        "queue": 0,  # points between receiver and collector (0: 2 per worker + 1, at least 5)
        "heartbeat": 0.5,  # s between worker heartbeats
        "heartbeat_timeout": 5.0,  # s of silence after which a worker's points go elsewhere
        "keys": "",  # CurveZMQ key directory (`peakstream keys`): needed off loopback
    },
    "cluster": {"queue": "", "account": "", "cores": 1, "memory": "4GB",  # --cluster slurm
                "walltime": "01:00:00", "jobs": 1, "job_extra": [], "log_directory": ""},
    # criterion: a name or a list of names that must all hold (nodes/link/criteria.py).
    # "fraction" 0.2 keeps links of blobs that truly overlap; any_pixel is ImageD11's rule.
    # split "local_max": each clique is cut, as it closes, at its significant maxima in
    # 3D: a maximum whose highest saddle to a higher one is lower by at least
    # max(prominence * peak, prominence_sigma * sqrt(peak + saddle)) stays a clique of
    # its own (nodes/link/linker.py); "none" keeps every linked pair together (ImageD11).
    # "pixels": a clique's pixels divided between its spots (nodes/link/separate.py; slow)
    # and fit_intensity from a 3D Gaussian, net of `background` (the level under the spots)
    "linker": {"criterion": "fraction", "fraction": 0.2, "distance": 3.0,
               "split": "local_max", "prominence": 0.1, "prominence_sigma": 3.0, "background": 0.0},
    # pattern: the file of each scan in `directory`, with the fields {scan_id},
    # {sample} (the start message's meta, "unknown" if absent), {scan_number} (1 + the
    # highest number already in the directory under this pattern), {date} (YYYYMMDD)
    # and {time} (HHMMSS); a name taken gets -1, -2, ... (never overwritten)
    # resume: a start (or, after a restart, a point) of a scan whose file a crash left
    # open, written with the same config, continues that file from its last checkpoint
    "output": {"directory": ".", "flush_interval": 1.0, "pattern": "{scan_id}.h5",
               "resume": True, "max_events": 100_000, "shared_directory": False},  # security.md
    "replay": {"trajectory": {}},  # of recordings that declare none ({}: from the motors)
    # peakstream daemon: its log file ("" = DIRECTORY/peakstream.log), rotated at
    # log_max_bytes (0: never) keeping log_backups old files
    "daemon": {"log_file": "", "log_max_bytes": 10 << 20, "log_backups": 5},
    # control requests (PROTOCOL.md): a ROUTER bound here ("" = none)
    # set / stop / checkpoint need the token in token_file ("" = DIR/.peakstream-control-token)
    "control": {"endpoint": "tcp://127.0.0.1:5557", "token_file": ""},
    # live lane (PROTOCOL.md): a PUB bound here ("" = none); progress at most every
    # `interval` s, frame previews at most `frame_rate` a second binned by `frame_bin`
    "live": {"endpoint": "tcp://127.0.0.1:5556", "interval": 0.5, "frame_rate": 2.0,
             "frame_bin": 8, "sndhwm": 16, "max_map_cells": 4_000_000},
    # web view (`peakstream web`, docs/web.md) started by the daemon: port -1 none, 0 any
    # free port; another address than loopback is an explicit choice
    "web": {"port": -1, "address": "127.0.0.1", "allow_control": False},
}
GROUPS = ("source", "node", "linker", "output", "workers", "cluster", "replay", "daemon",
          "control", "live", "web")
OVERRUN = ("block", "abort")
WORKER_KINDS = ("inline", "threads", "processes")
# The chain when a config names none: a global cut, 8-connected labels, moments.
DEFAULT_CHAIN = [{"kind": "threshold", "cut": 50.0}, {"kind": "label", "min_pixels": 2},
                 {"kind": "properties"}]


class Config:
    """A validated configuration; `text()` is the effective TOML."""

    def __init__(self, data: dict[str, Any], origin: str = "<config>", base: Path | None = None):
        self.origin = origin
        self.base = base or Path.cwd()
        self.data = _validate(data, origin)
        self._calibration: dict[str, Any] | None = None  # as the first chain loaded it

    @classmethod
    def load(cls, path: str | Path | None) -> Config:
        """Read a TOML file (None: the built-in defaults, no nodes)."""
        if path is None:
            return cls({}, "<defaults>")
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
        return cls.from_text(text, str(path), path.resolve().parent)

    @classmethod
    def from_text(cls, text: str, origin: str = "<config>", base: str | Path | None = None
                  ) -> Config:
        """A config from its TOML text (workers get the effective config this way)."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{origin}: not valid TOML: {exc}") from None
        return cls(data, origin, Path(base) if base is not None else None)

    def __getitem__(self, group: str) -> Any:
        return self.data[group]

    def override(self, group: str, key: str, value: Any) -> None:
        """Apply a command-line option (validated like the file's own values)."""
        data = copy.deepcopy(self.data)
        data[group][key] = value
        self.data = _validate(data, f"{self.origin} (command line {group}.{key})")

    def text(self) -> str:
        return dump_toml(self.data)

    def calibration(self) -> dict[str, Any]:
        """The files the chain loads and their sha256 (`stream.config.calibration`), as
        they were when this config first built its chain: a process keeps the arrays it
        loaded then (the workers' chains), so a file rewritten later is not what it uses."""
        from stream.config.calibration import calibration

        if self._calibration is None:
            self._calibration = calibration(self)
        return self._calibration

    def build_nodes(self) -> list[Any]:
        """Instantiate the node chain, loading array files."""
        from nodes import NODES  # the registry: stream builds nodes, never the reverse
        from nodes.decode import warm_encodings

        # setup compiles the decoders of the frame kinds warmed up (`[source] warmup`) only
        warm_encodings({k.partition("/")[2] or "raw" for k in self.data["source"]["warmup"]})
        self.calibration()  # the files' contents as this first chain loads them
        chain = []
        for i, table in enumerate(self.data["node"]):
            where = f"{self.origin}: [[node]] #{i + 1} ({table['kind']})"
            cls = NODES[table["kind"]]
            kwargs = {}
            hints = typing.get_type_hints(cls.__init__)
            for key, value in table.items():
                if key in ("kind", "poni"):
                    continue
                if isinstance(value, str) and wants_array(hints[key]):
                    value = load_array(value, self.base, f"{where}: {key}")
                kwargs[key] = value
            if "poni" in table:  # the PONI file's geometry; keys the table gives win
                kwargs = poni_node_values(self.base / table["poni"], where, kwargs,
                                          "detector" in hints)
            try:
                node = cls(**kwargs)
                for key in getattr(node, "ranges", {}):  # the bounds `set` holds it to
                    check_param(node, key, getattr(node, key))
                chain.append(node)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{where}: {exc}") from None
        return chain


# ---------------------------------------------------------------- validation


def _validate(data: dict[str, Any], origin: str) -> dict[str, Any]:
    unknown = set(data) - set(GROUPS)
    if unknown:
        raise ConfigError(f"{origin}: unknown group(s) {sorted(unknown)}; "
                          f"known: {', '.join(GROUPS)}")
    out: dict[str, Any] = {}
    for group, defaults in DEFAULTS.items():
        given = data.get(group, {})
        if not isinstance(given, dict):
            raise ConfigError(f"{origin}: [{group}] must be a table")
        out[group] = dict(defaults)
        for key, value in given.items():
            if key not in defaults:
                raise ConfigError(f"{origin}: [{group}] unknown key {key!r}; "
                                  f"known: {', '.join(defaults)}")
            want = object if (group, key) == ("linker", "criterion") else type(defaults[key])
            out[group][key] = _check(value, want, f"{origin}: [{group}] {key}")
    nodes = data.get("node", copy.deepcopy(DEFAULT_CHAIN))
    if not isinstance(nodes, list):
        raise ConfigError(f"{origin}: node must be an array of tables ([[node]])")
    out["node"] = check_chain([_validate_node(t, i, origin) for i, t in enumerate(nodes)], origin)
    _validate_linker(out["linker"], origin)
    for key in ("reorder_window", "max_frame_bytes", "rcvhwm", "max_points", "max_gap"):
        if out["source"][key] < 1:
            raise ConfigError(f"{origin}: [source] {key} must be >= 1")
    _validate_flow(out["source"], out["workers"], origin)
    validate_source(out["source"], origin, DEFAULTS["source"])
    validate_service(out, origin)
    return out


def _validate_flow(source: dict[str, Any], workers: dict[str, Any], origin: str) -> None:
    """[source] overrun / max_lag and the [workers] group."""
    if source["overrun"] not in OVERRUN:
        raise ConfigError(f"{origin}: [source] overrun must be one of {', '.join(OVERRUN)}, "
                          f"got {source['overrun']!r}")
    if source["max_lag"] <= source["reorder_window"]:
        raise ConfigError(f"{origin}: [source] max_lag ({source['max_lag']}) must be more than "
                          f"reorder_window ({source['reorder_window']}): a gap may hold "
                          f"that many points back")
    if workers["kind"] not in WORKER_KINDS:
        raise ConfigError(f"{origin}: [workers] kind must be one of {', '.join(WORKER_KINDS)}, "
                          f"got {workers['kind']!r}")
    for key in ("count", "queue"):
        if workers[key] < 0:
            raise ConfigError(f"{origin}: [workers] {key} must be >= 0 (0: automatic)")
    if not workers["heartbeat"] > 0:
        raise ConfigError(f"{origin}: [workers] heartbeat must be > 0 s")
    if not workers["heartbeat_timeout"] >= 2 * workers["heartbeat"]:
        raise ConfigError(f"{origin}: [workers] heartbeat_timeout must be at least twice "
                          f"the heartbeat ({workers['heartbeat']:g} s)")
    endpoint = workers["endpoint"]
    if endpoint and not endpoint.startswith(("ipc://", "tcp://")):
        raise ConfigError(f"{origin}: [workers] endpoint must be ipc://PATH or "
                          f"tcp://HOST:PORT (port 0: any free port), got {endpoint!r}")


def _validate_linker(linker: dict[str, Any], origin: str) -> None:
    """criterion: one name or a list of names (all must hold); fraction, distance;
    split, prominence, prominence_sigma."""
    from nodes.link.criteria import CRITERIA

    names = linker["criterion"]
    names = [names] if isinstance(names, str) else names
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{origin}: [linker] criterion must be a name or a list of names "
                          f"(of: {', '.join(CRITERIA)}), got {linker['criterion']!r}")
    for n in names:
        if n not in CRITERIA:
            raise ConfigError(f"{origin}: [linker] criterion {n!r} not one of: "
                              f"{', '.join(CRITERIA)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"{origin}: [linker] criterion names one twice: {names}")
    if not 0.0 < linker["fraction"] <= 1.0:
        raise ConfigError(f"{origin}: [linker] fraction must be in (0, 1], "
                          f"got {linker['fraction']!r}")
    if not 0.0 <= linker["distance"] < float("inf"):
        raise ConfigError(f"{origin}: [linker] distance must be >= 0 pixels, "
                          f"got {linker['distance']!r}")
    from nodes.link.linker import SPLITS

    if linker["split"] not in SPLITS:
        raise ConfigError(f"{origin}: [linker] split {linker['split']!r} not one of: "
                          f"{', '.join(SPLITS)}")
    for key in ("prominence", "prominence_sigma", "background"):
        if not 0.0 <= linker[key] < float("inf"):
            raise ConfigError(f"{origin}: [linker] {key} must be a number >= 0, "
                              f"got {linker[key]!r}")


def _validate_node(table: Any, i: int, origin: str) -> dict[str, Any]:
    from nodes import NODES

    where = f"{origin}: [[node]] #{i + 1}"
    if not isinstance(table, dict) or "kind" not in table:
        raise ConfigError(f"{where}: needs a 'kind' (one of {', '.join(NODES)})")
    kind = table["kind"]
    if kind not in NODES:
        raise ConfigError(f"{where}: unknown kind {kind!r}; known: {', '.join(NODES)}")
    params = node_params(NODES[kind])
    out = {"kind": kind}
    for key, value in table.items():
        if key == "kind":
            continue
        if key == "poni" and {"dist", "poni1", "poni2"} <= set(params):
            out[key] = _check(value, str, f"{where} ({kind}): poni")  # read in build_nodes
            continue
        if key not in params:
            raise ConfigError(f"{where} ({kind}): unknown key {key!r}; "
                              f"known: {', '.join(params) or 'none'}")
        hint = params[key]
        if wants_array(hint) and isinstance(value, str):
            out[key] = value
            continue
        out[key] = _check(value, _scalar_type(hint), f"{where} ({kind}): {key}")
    return out


def node_params(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls.__init__)
    sig = inspect.signature(cls.__init__)
    return {n: hints.get(n, Any) for n, p in sig.parameters.items()
            if n != "self" and p.kind is p.KEYWORD_ONLY}


def _scalar_type(hint: Any) -> type:
    for t in (bool, int, float, str):
        if t in members(hint):
            return t
    return object


def _check(value: Any, want: type, where: str) -> Any:
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    is_bool_for_int = want is int and isinstance(value, bool)
    if want is object or (isinstance(value, want) and not is_bool_for_int):
        return value
    raise ConfigError(f"{where} must be {want.__name__}, got {type(value).__name__} {value!r}")


# ---------------------------------------------------------------- TOML


def dump_toml(data: dict[str, Any]) -> str:
    """Write our config structure (tables of scalars, [[node]] list) as TOML."""
    lines: list[str] = []
    for group in GROUPS:
        if group == "node":
            for table in data.get("node", []):
                lines += ["[[node]]", *(_toml_kv(k, v) for k, v in table.items()), ""]
        elif group in data:
            lines += [f"[{group}]", *(_toml_kv(k, v) for k, v in data[group].items()), ""]
    return "\n".join(lines)


def _toml_key(key: str) -> str:
    return key if key and all(c.isalnum() or c in "_-" for c in key) and key.isascii() \
        else _toml_value(key)


def _toml_kv(key: str, value: Any) -> str:
    return f"{key} = {_toml_value(value)}"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if np.isfinite(value) else ("nan" if value != value else
                                                       ("inf" if value > 0 else "-inf"))
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(_toml_kv(_toml_key(k), v) for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")
