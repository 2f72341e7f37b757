"""What a Bliss scan says about itself, in our words: its id, which channels are our
motors and counters, which stream holds the frames, and its trajectory.

Bliss's fast scans (the `fscan` package) describe themselves in the scan info,
under `fscan_parameters` (also found as `instrument/fscan_parameters`):
`fscan` / `f2scan` (`motor`, `start_pos`, `step_size`, `npoints`) sweep one
motor; `fscan2d` (`fast_motor`, `fast_npoints`, `slow_motor`, `fast_motor_mode`
REWIND or ZIGZAG) is a grid or a snake. Anything else has no description: the
source derives the trajectory from the first points' positions.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from stream.core.derive import TURN, derive_trajectory
from stream.core.messages import Start
from stream.core.trajectory import make_trajectory

log = logging.getLogger(__name__)

# Bliss's timer channels that date a scan's points: s since 1970, s since the scan's start
CLOCKS = ("epoch", "elapsed_time")


def scan_id(name: str, number: int, session: str | None) -> str:
    """`session_number_name` (Bliss numbers scans per session), or `number_name`."""
    base = f"{number}_{name}"
    return f"{session}_{base}" if session else base


def short(channel: str) -> str:
    """A channel's short name: "axis:diffrz" -> "diffrz"."""
    return channel.rsplit(":", 1)[-1]


def match_channels(available: list[str], names: list[str], channels: dict[str, str]
                   ) -> tuple[dict[str, str], list[str]]:
    """Our name -> the Bliss channel for each of `names` (configured in `channels`, or
    the channel whose full or short name is ours), and the names with no channel."""
    found: dict[str, str] = {}
    missing: list[str] = []
    for name in names:
        wanted = channels.get(name, name)
        hits = [c for c in available if c == wanted] or \
               [c for c in available if short(c) == short(wanted)]
        if len(hits) == 1:
            found[name] = hits[0]
        else:
            missing.append(name if not hits else f"{name} (ambiguous: {', '.join(hits)})")
    return found, missing


def clock_of(names: list[str], info: dict[str, Any]) -> tuple[str, float] | None:
    """(channel, offset): the channel whose value at a point's index, plus offset, is
    when Bliss acquired that point (s since 1970): its `timer:epoch` (offset 0), else
    its `timer:elapsed_time` plus the scan's `start_time`. None: neither, or no
    readable start time. Its data is in Redis, so a point read again from the scan's
    start has the time it had when it first came."""
    for clock in CLOCKS:
        hits = [n for n in names if n == f"timer:{clock}"] or \
               [n for n in names if short(n) == clock]
        if len(hits) != 1:
            continue
        if clock == "epoch":
            return hits[0], 0.0
        try:
            start = datetime.fromisoformat(str(info.get("start_time")))
        except ValueError:
            continue
        if start.tzinfo is not None:  # a naive time is not a moment: not guessed
            return hits[0], start.timestamp()
    return None


def image_channels(streams: dict[str, Any]) -> list[str]:
    """The streams that can hold frames: 2D arrays (Lima's, or frames in the stream)."""
    return [n for n, s in streams.items()
            if getattr(s, "kind", None) == "array" and len(getattr(s, "shape", ())) == 2]


def pick_image(streams: dict[str, Any], wanted: str) -> str | None:
    """The stream of the frames: `wanted` itself; a name without a prefix also as the
    short name or the controller of one image channel ("image", "eiger"); "" the first
    image channel. None: not there (yet). ValueError: more than one matches, as
    "frelon:image" must never stand for "eiger:image"."""
    images = image_channels(streams)
    if not wanted:
        return images[0] if images else None
    if wanted in streams or ":" in wanted:
        return wanted if wanted in streams else None
    hits = [n for n in images if short(n) == wanted or n.split(":")[0] == wanted]
    if len(hits) > 1:
        raise ValueError(f"[source] image {wanted!r} matches {', '.join(hits)}: give the "
                         f"full name of one")
    return hits[0] if hits else None


def fscan_parameters(info: dict[str, Any]) -> dict[str, Any]:
    pars = info.get("fscan_parameters")
    if not isinstance(pars, dict):
        pars = (info.get("instrument") or {}).get("fscan_parameters")
    return pars if isinstance(pars, dict) else {}


def trajectory_from_info(info: dict[str, Any], motors: dict[str, str]) -> dict[str, Any]:
    """The trajectory map the scan's description gives ({} when it gives none);
    `motors`: our motor name -> its Bliss channel."""
    pars = fscan_parameters(info)
    ours = {short(ch): name for name, ch in motors.items()}

    def our(key: str) -> str | None:
        motor = pars.get(key)
        return ours.get(short(motor)) if isinstance(motor, str) else None

    if "fast_motor" in pars:
        fast, slow, nfast = our("fast_motor"), our("slow_motor"), pars.get("fast_npoints")
        if fast is None or not isinstance(nfast, int) or nfast < 1:
            return {}
        mode = str(pars.get("fast_motor_mode", "REWIND")).upper()
        spec: dict[str, Any] = {"kind": "snake" if mode == "ZIGZAG" else "grid",
                                "nfast": nfast, "fast": fast}
        if slow is not None:
            spec["slow"] = slow
        return spec
    fast = our("motor")
    if fast is None:
        return {}
    spec = {"kind": "sweep", "fast": fast}
    step, n = pars.get("step_size"), pars.get("npoints")
    if isinstance(step, (int, float)) and isinstance(n, int) and step:
        if abs(abs(step) * n - TURN) < abs(step) / 2:  # whole turn: the last links the first
            spec["wrap"] = True
    return spec


def npoints_of(info: dict[str, Any]) -> int | None:
    """The scan's number of points (None: open-ended, or not said)."""
    n = info.get("npoints")
    if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
        n = fscan_parameters(info).get("npoints")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None


def end_status(info: dict[str, Any]) -> tuple[str, str]:
    """Our end status and reason from Bliss's `end_reason` (SUCCESS, USER_ABORT,
    FAILURE, DELETION)."""
    reason = str(info.get("end_reason", "SUCCESS"))
    if reason == "SUCCESS":
        return "success", ""
    return "abort", f"bliss end_reason {reason}"


def derived(start: Start, positions: dict[str, Any], n: int) -> Start:
    """The start with the trajectory derived from the motors' `positions` at the first
    `n` points (those held back)."""
    positions = {k: v[:n] for k, v in positions.items()}
    spec = derive_trajectory(positions) if start.motors else {"kind": "sweep"}
    try:
        make_trajectory(dict(spec), start.npoints, start.motors)
    except ValueError as exc:
        log.warning("scan %s: derived trajectory %s unusable (%s); a sweep",
                    start.scan_id, spec, exc)
        spec = {"kind": "sweep", **({"fast": start.motors[0]} if start.motors else {})}
    log.info("scan %s: trajectory derived from %d points: %s", start.scan_id, n, spec)
    return Start(start.scan_id, start.detectors, start.motors, start.counters,
                 start.npoints, spec, start.meta)
