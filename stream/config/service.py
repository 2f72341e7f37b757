"""Checks of the config groups the daemon adds: the dectris keys of `[source]`, the
`[output] pattern`, `[daemon]`, `[control]`, `[live]` and `[web]` (called by `stream.config`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stream.config.base import PATTERN_FIELDS, SOURCE_KINDS, ConfigError
from stream.config.sources import validate_ecosystem, warn_foreign_keys
from stream.core.encoded import COMPRESSED
from stream.core.messages import DTYPES
from stream.wire.sockets import is_loopback


def validate_source(source: dict[str, Any], origin: str,
                    defaults: dict[str, Any] | None = None) -> None:
    """[source] kind and the keys of the dectris, blissdata and pva sources; a key set
    (other than its default) that the kind does not read is warned about."""
    if source["kind"] not in SOURCE_KINDS:
        raise ConfigError(f"{origin}: [source] kind must be one of {', '.join(SOURCE_KINDS)}, "
                          f"got {source['kind']!r}")
    if defaults is not None:
        warn_foreign_keys(source, defaults, origin)
    if source["stream_version"] not in (1, 2):
        raise ConfigError(f"{origin}: [source] stream_version must be 1 (SIMPLON legacy) "
                          f"or 2, got {source['stream_version']!r}")
    if not source["detector_endpoint"].startswith(("tcp://", "ipc://")):
        raise ConfigError(f"{origin}: [source] detector_endpoint must be tcp://HOST:PORT or "
                          f"ipc://PATH, got {source['detector_endpoint']!r}")
    for key in ("motors", "counters"):
        names = source[key]
        if not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
            raise ConfigError(f"{origin}: [source] {key} must be a list of distinct names, "
                              f"got {names!r}")
    for key in ("join_timeout", "series_timeout", "end_timeout", "point_timeout"):
        if not 0.0 < source[key] < float("inf"):
            raise ConfigError(f"{origin}: [source] {key} must be a number of seconds > 0, "
                              f"got {source[key]!r}")
    for spec in source["warmup"]:
        dtype, _, encoding = str(spec).partition("/")
        if dtype not in DTYPES or (encoding or "raw") not in ("raw", *COMPRESSED):
            raise ConfigError(f"{origin}: [source] warmup entries are DTYPE/ENCODING (dtype "
                              f"{', '.join(DTYPES)}; encoding raw, {', '.join(COMPRESSED)}), "
                              f"got {spec!r}")
    if not 0.0 < source["motor_limit"] <= float("inf"):
        raise ConfigError(f"{origin}: [source] motor_limit must be > 0, "
                          f"got {source['motor_limit']!r}")
    for name, lohi in source["motor_ranges"].items():
        if (not isinstance(lohi, list) or len(lohi) != 2
                or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in lohi)
                or not lohi[0] < lohi[1]):
            raise ConfigError(f"{origin}: [source] motor_ranges.{name} must be [low, high] "
                              f"with low < high, got {lohi!r}")
    dirs = source["ref_dirs"]
    if not all(isinstance(d, str) and d for d in dirs):
        raise ConfigError(f"{origin}: [source] ref_dirs must be a list of directories, "
                          f"got {dirs!r}")
    if source["allow_refs"] and not dirs:
        raise ConfigError(f"{origin}: [source] allow_refs needs ref_dirs: the directories "
                          f"frame references may name files in")
    check_trajectory(source, origin)
    validate_ecosystem(source, origin)


def check_trajectory(source: dict[str, Any], origin: str) -> None:
    """`[source] trajectory` as the start message's map is checked (kind, keys, types,
    motors among `motors` when given): a typo is a config error now, not every scan
    rejected later."""
    from stream.core.trajectory import TRAJECTORIES, make_trajectory

    trajectory = source["trajectory"]
    if not trajectory:
        return
    if not isinstance(trajectory.get("kind"), str):
        raise ConfigError(f"{origin}: [source] trajectory needs a 'kind' "
                          f"({', '.join(TRAJECTORIES)}), got {trajectory!r}")
    motors = source["motors"]
    named = [trajectory.get(k) for k in ("fast", "slow")] + [
        m for k in ("tolerance", "period") if isinstance(trajectory.get(k), dict)
        for m in trajectory[k]]
    unknown = [m for m in named if isinstance(m, str) and m not in motors]
    if motors and unknown:  # motors [] = from the scan: nothing to check against yet
        raise ConfigError(f"{origin}: [source] trajectory {trajectory!r} names "
                          f"{', '.join(map(repr, unknown))}, not among [source] motors "
                          f"({', '.join(motors)})")
    try:  # npoints 2: a stand-in, the scan's own is not known yet
        make_trajectory(dict(trajectory), 2, motors or None)
    except ValueError as exc:
        raise ConfigError(f"{origin}: [source] trajectory {trajectory!r}: {exc}") from None


def validate_service(data: dict[str, Any], origin: str) -> None:
    """[output] pattern, [daemon], [control], [live], [web]; [workers] keys off loopback."""
    check_pattern(data["output"]["pattern"], f"{origin}: [output] pattern")
    d = data["daemon"]
    for key in ("log_max_bytes", "log_backups"):
        if d[key] < 0:
            raise ConfigError(f"{origin}: [daemon] {key} must be >= 0")
    ep, keys = data["workers"]["endpoint"], data["workers"]["keys"]
    if ep and not keys and not is_loopback(ep):
        raise ConfigError(f"{origin}: [workers] endpoint {ep} is reachable from other hosts: "
                          f"give [workers] keys = \"DIR\" (CurveZMQ keys made by `peakstream "
                          f"keys DIR`) or a loopback address")
    for group in ("control", "live"):
        ep = data[group]["endpoint"]
        if ep and not ep.startswith(("tcp://", "ipc://", "inproc://")):
            raise ConfigError(f"{origin}: [{group}] endpoint must be tcp://HOST:PORT (port 0: "
                              f"any free port), ipc://PATH or \"\" (none), got {ep!r}")
    live = data["live"]
    for key in ("interval", "frame_rate"):
        if not 0.0 <= live[key] < float("inf"):
            raise ConfigError(f"{origin}: [live] {key} must be a number >= 0, got {live[key]!r}")
    if data["output"]["max_events"] < 0:
        raise ConfigError(f"{origin}: [output] max_events must be >= 0")
    flush = data["output"]["flush_interval"]
    if not 0.0 <= flush < float("inf"):  # below 0 was taken, silently, as 0
        raise ConfigError(f"{origin}: [output] flush_interval must be a number of seconds >= 0 "
                          f"(0: a checkpoint after every point), got {flush!r}")
    for key in ("frame_bin", "sndhwm", "max_map_cells"):
        if live[key] < 1:
            raise ConfigError(f"{origin}: [live] {key} must be >= 1")
    web = data["web"]
    if not -1 <= web["port"] <= 65535:
        raise ConfigError(f"{origin}: [web] port must be -1 (no web view), 0 (any free port) "
                          f"or a port number, got {web['port']!r}")
    if not web["address"]:
        raise ConfigError(f"{origin}: [web] address must be a host address, e.g. 127.0.0.1")
    if web["port"] >= 0 and not live["endpoint"]:
        raise ConfigError(f"{origin}: [web] needs the live lane: give [live] endpoint")


def check_pattern(pattern: str, where: str) -> None:
    """An output file name pattern: known fields only, formats that work, a name that
    stays below the output directory."""
    import string

    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(pattern) if f is not None]
    except ValueError as exc:
        raise ConfigError(f"{where}: {pattern!r}: {exc}") from None
    unknown = [f for f in fields if f not in PATTERN_FIELDS]
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown} in {pattern!r}; known: "
                          f"{', '.join('{' + f + '}' for f in PATTERN_FIELDS)}")
    try:
        name = pattern.format(scan_id="s", sample="x", scan_number=1, date="20260101",
                              time="120000")
    except (ValueError, IndexError, KeyError) as exc:
        raise ConfigError(f"{where}: {pattern!r}: {exc}") from None
    parts = Path(name).parts
    if not name or Path(name).is_absolute() or ".." in parts or not parts[-1].strip("."):
        raise ConfigError(f"{where}: {pattern!r} must name a file below the output directory")
