"""What makes two scan files the same processing, and how big their chunks are."""

from __future__ import annotations

import hashlib
import json
from typing import Any

# the parts of a config that decide the results: a resumed or filled file must have been
# written with the same; endpoints, output, logging, workers and live settings may differ
PROCESSING = {"node": None, "linker": None, "source": ("detector", "trajectory"),
              "replay": ("trajectory",)}


def processing_hash(text: str) -> str:
    """sha256 of the processing part of a config's TOML text (`PROCESSING`)."""
    import tomllib

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return hashlib.sha256(text.encode()).hexdigest()
    part = {}
    for group, keys in PROCESSING.items():
        value = data.get(group, [] if group == "node" else {})
        part[group] = value if keys is None else {k: value.get(k) for k in keys
                                                  if k in value}
    return hashlib.sha256(json.dumps(part, sort_keys=True, default=str).encode()).hexdigest()


GIVEN = "given_processing_sha256"  # attribute of /entry/process/config (`continued_with`)


def continued_with(proc: Any) -> set[str]:
    """The processing hashes of the configs that may continue a scan file (its
    /entry/process group): its config's, which holds the values in force at its first
    point, and for a scan started after a control `set`, that of the config the process
    was given (`GIVEN`): a restart with it sets the file's values again (its events)."""
    config = proc["config"]
    out = {processing_hash(config.asstr()[()])}
    if GIVEN in config.attrs:
        out.add(str(config.attrs[GIVEN]))
    return out


def recorded_calibration(proc: Any) -> dict[str, Any] | None:
    """The calibration a scan file's `/entry/process` group records
    (`stream.config.calibration`); None for a file written before it was recorded."""
    if "calibration" not in proc:
        return None
    try:
        return json.loads(proc["calibration"].asstr()[()])
    except ValueError:
        return None


def calibration_changes(recorded: dict[str, Any] | None, current: dict[str, Any],
                        then: str = "when the file was written") -> list[str]:
    """Each calibration file whose content is not what the file `recorded` (its dark,
    flat, mask, ... taken again since), one line each naming the node, key and path;
    [] when they all match, or the file records none (older files). `then` says when
    the recorded content was read."""
    if recorded is None:
        return []
    now = {(f["node"], f["key"]): f for f in current.get("files", [])}
    out = []
    for was in recorded.get("files", []):
        cur = now.get((was["node"], was["key"]), {})
        if cur.get("sha256") == was["sha256"] and was["sha256"]:
            continue
        where = f"[[node]] #{was['node']} ({was['kind']}) {was['key']} = {was['file']!r}"
        if not cur:
            out.append(f"{where}: not in this config")
        elif cur.get("error"):
            out.append(f"{where}: {cur['path']} cannot be read now ({cur['error']})")
        else:
            out.append(f"{where}: {cur['path']} holds another content now (sha256 "
                       f"{cur['sha256'][:12]}..., {was['sha256'][:12] or 'unread'}... {then}, "
                       f"from {was['path']})")
    return out


def chunk_sizes(start_json: str) -> tuple[int, int, int]:
    """Rows per chunk of the point, peak (and clique) and pixel tables: the full sizes,
    or for a scan that announces fewer points sizes to match (a chunk is allocated
    whole, so a tiny scan's file would otherwise take ~6 MB)."""
    try:
        npoints = json.loads(start_json).get("npoints")
    except (ValueError, AttributeError):
        npoints = None
    if not isinstance(npoints, int) or npoints <= 0:
        return 4096, 16384, 65536

    def fit(rows: int, full: int) -> int:
        return int(min(full, max(64, 1 << (max(rows, 1) - 1).bit_length())))

    return fit(npoints, 4096), fit(16 * npoints, 16384), fit(512 * npoints, 65536)
