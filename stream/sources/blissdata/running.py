"""The scans Bliss was running when the source starts (a daemon restarted mid-scan):
they are followed from their start, as blissdata keeps every scan's streams in Redis;
a scan file a crash left open is then continued (`stream.run.resuming`)."""

from __future__ import annotations

from typing import Any

RECENT = 64  # scans looked at, newest first (blissdata's history keeps 2048)


def running_scans(store: Any, session: str) -> tuple[str, list[str]]:
    """(timetag, keys): the scan-creation timetag to wait for the next scans from, and
    the scans of `session` ("": every session) Bliss has not closed, oldest first. Only
    those newer than the session's newest closed scan: an older one never closed is a
    scan whose Bliss died, not one running (Bliss runs one scan at a time, or a group
    and the scans it runs)."""
    from blissdata.redis_engine.scan import ScanState, scan_creation_stream

    raw = store._redis.xrevrange(scan_creation_stream, count=RECENT)
    if not raw:
        return "0-0", []
    timetag = raw[0][0].decode()
    keys = [data[b"key"].decode() for _, data in raw]
    sessions = store._redis.json().mget(keys, "id.session")
    running = []
    for key, other in zip(keys, sessions, strict=True):
        if other is None or (session and other != session):
            continue  # deleted (expired), or another session's
        try:
            state = store.get_scans_state([key])[key]
        except Exception:  # expired meanwhile: no state stream
            continue
        if state >= ScanState.CLOSED:
            break
        running.append(key)
    return timetag, running[::-1]
