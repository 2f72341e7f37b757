"""The `[source]` keys of the control-system sources: Bliss (`kind = "blissdata"`,
`stream.sources.blissdata`) and EPICS areaDetector over pvAccess (`kind = "pva"`,
`stream.sources.pva`). `motors`, `counters`, `trajectory` and `series_timeout` are
shared with the dectris source."""

from __future__ import annotations

import logging
from typing import Any

from stream.config.base import ConfigError

log = logging.getLogger(__name__)

SOURCE_DEFAULTS: dict[str, Any] = {
    # our motor / counter name -> the control system's name for it: a Bliss channel
    # ("axis:diffrz") or an NDAttribute ("OMEGA"); a name not given is looked up as is
    # (for Bliss: also as a channel's short name, the part after the last ":")
    "channels": {},
    # blissdata: the Redis data store, the Bliss session to follow ("" = every
    # session), the channel of the frames ("" = the scan's first 2D stream)
    "redis_url": "redis://127.0.0.1:6379",
    "session": "",
    "image": "",
    "frame_timeout": 10.0,  # s a frame file may stay unreadable before its points are bad
    "reconnect_timeout": 30.0,  # s to get Redis back mid-scan before the scan aborts
    # s a scan Bliss keeps open may give no data before status and the log say so, and
    # how to end it if its Bliss died (never ended for it: blissdata cannot tell)
    "quiet_warning": 600.0,
    # points held back to derive the trajectory from their positions when neither
    # `trajectory` nor the scan's description gives one
    "derive_points": 50,
    # pva: the NTNDArray PV; optional start / end from an acquire PV (1 = acquiring)
    # and the number of images of the scan from images_pv; else a scan starts at the
    # first frame and ends after series_timeout s without one
    "pv": "",
    "acquire_pv": "",
    "images_pv": "",
    # ArrayCounter (""= ACQUIRE_PV's prefix + "ArrayCounter_RBV"): point 0 of an
    # acquisition is uniqueId ArrayCounter + 1, ArrayCounter read as Acquire goes to 1
    "counter_pv": "",
    "queue": 16,  # pvAccess monitor queue (updates held for us before it drops)
}


# [source] keys only some kinds read (the others are read by every kind); the effective
# config carries every key, so a key is "set" when it differs from its default
KIND_KEYS: dict[str, tuple[str, ...]] = {
    "listen": ("zmq", "dectris"),
    **dict.fromkeys(("detector_endpoint", "stream_version", "join_timeout"), ("dectris",)),
    **dict.fromkeys(("motors", "counters", "trajectory"), ("dectris", "blissdata", "pva")),
    "series_timeout": ("dectris", "pva"),
    "channels": ("blissdata", "pva"),
    **dict.fromkeys(("redis_url", "session", "image", "frame_timeout", "reconnect_timeout",
                     "quiet_warning", "derive_points"), ("blissdata",)),
    **dict.fromkeys(("pv", "acquire_pv", "images_pv", "counter_pv", "queue"), ("pva",)),
}


_SAID: set[tuple[str, str, str]] = set()


def warn_foreign_keys(source: dict[str, Any], defaults: dict[str, Any], origin: str) -> None:
    """Warn of keys set for another kind of source (kind = "zmq" with pv, --listen with
    blissdata): valid keys, but this source never reads them."""
    kind = source["kind"]
    for key, kinds in KIND_KEYS.items():
        said = (kind, key, repr(source.get(key)))
        if kind not in kinds and source.get(key) != defaults.get(key) and said not in _SAID:
            _SAID.add(said)  # once a process: a config is validated again on each override
            log.warning("%s: [source] %s = %r is not read by kind %s (only by %s): ignored",
                        origin, key, source[key], kind, ", ".join(kinds))


def validate_ecosystem(source: dict[str, Any], origin: str) -> None:
    """The blissdata / pva keys: names that make sense, positive timeouts."""
    channels = source["channels"]
    bad = [k for k, v in channels.items() if not (isinstance(v, str) and v)]
    if bad:  # TOML puts every key after [source.channels] in that table
        raise ConfigError(f"{origin}: [source] channels must map our names to the control "
                          f"system's names (strings), got {channels!r}: "
                          f"{', '.join(f'{k} = {channels[k]!r}' for k in bad)} is not a name "
                          f"and probably belongs in [source] (write it before "
                          f"[source.channels]: every key after that header is a channel)")
    ours = [*source["motors"], *source["counters"]]
    unknown = [k for k in channels if k not in ours]
    if unknown:  # a typo would leave the motor unmapped and NaN in every point
        raise ConfigError(f"{origin}: [source] channels names {', '.join(map(repr, unknown))}, "
                          f"not among motors ({', '.join(source['motors']) or 'none'}) or "
                          f"counters ({', '.join(source['counters']) or 'none'})")
    for key in ("frame_timeout", "reconnect_timeout", "quiet_warning"):
        if not 0.0 < source[key] < float("inf"):
            raise ConfigError(f"{origin}: [source] {key} must be a number of seconds > 0, "
                              f"got {source[key]!r}")
    if source["derive_points"] < 2:
        raise ConfigError(f"{origin}: [source] derive_points must be >= 2")
    if source["queue"] < 1:
        raise ConfigError(f"{origin}: [source] queue must be >= 1")
    if source["kind"] == "blissdata" and not source["redis_url"].startswith(
            ("redis://", "rediss://", "unix://")):
        raise ConfigError(f"{origin}: [source] redis_url must be redis://HOST:PORT, "
                          f"got {source['redis_url']!r}")
    if source["kind"] == "pva" and not source["pv"]:
        raise ConfigError(f"{origin}: [source] kind pva needs pv (the NTNDArray PV, e.g. "
                          f"\"13SIM1:Pva1:Image\")")
    for key in ("images_pv", "counter_pv"):
        if source[key] and not source["acquire_pv"]:
            raise ConfigError(f"{origin}: [source] {key} needs acquire_pv too")
