"""A resumed scan goes on with the parameters in force at its checkpoint.

A `set` on the control socket is recorded in the scan's file (event `params` at
point 0: the session's changes when the scan started; event `param`: a change from
that point on). After a crash the restarted process has the config's values; the
file's events say what the points before the checkpoint were processed with, so a
resume sets those values again (logged, and recorded as event `param` from the
next point taken), and the rest of the scan is processed as the file says.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from stream.core.table import read_table
from stream.run.params import ParamError

log = logging.getLogger(__name__)


def params_in_file(resumed: Any) -> dict[tuple[str, str], Any]:
    """(node, key) -> value: the parameter changes the file's events record as in force
    at its checkpoint (the later event of a key wins)."""
    events = read_table(resumed.store.file["entry/process/events"])
    out: dict[tuple[str, str], Any] = {}
    for kind, message in zip(events["kind"], events["message"], strict=True):
        kind = kind.decode() if isinstance(kind, bytes) else str(kind)
        if kind not in ("params", "param"):
            continue
        try:
            data = json.loads(message)
        except (TypeError, ValueError):
            continue
        if kind == "params":  # {node: {key: value}}
            for node, values in data.items():
                out.update({(node, key): value for key, value in values.items()})
        else:  # {"node", "key", "value", "old", "version"}
            out[(data["node"], data["key"])] = data["value"]
    return out


def restore_params(resumed: Any, params: Any, scan_id: str) -> None:
    """Set the parameters the resumed file was being processed with again, where the
    process's own differ; each logged, and recorded in the file from the next point."""
    for (node, key), value in params_in_file(resumed).items():
        try:
            if params.get(node, key)[key] == value:
                continue
            params.set(node, key, value)
        except ParamError as exc:
            log.warning("scan %s: parameter %s.%s = %r of the resumed file not set again: "
                        "%s", scan_id, node, key, value, exc)
            continue
        log.warning("scan %s: resumed with %s.%s = %r, in force at its checkpoint (the "
                    "file's param events; this process had another value)", scan_id, node, key,
                    value)
