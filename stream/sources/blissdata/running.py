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


def superseded(store: Any, key: str, session: str | None) -> str:
    """A scan of `session` Bliss created after the scan `key`, or "": a Bliss that died
    mid-scan never closes its scan, and its next scan says the old one is over (Bliss
    runs one scan of a session at a time)."""
    from blissdata.redis_engine.scan import scan_creation_stream

    newer = []
    for _, data in store._redis.xrevrange(scan_creation_stream, count=RECENT):
        other = data[b"key"].decode()
        if other == key:
            break
        newer.append(other)
    sessions = store._redis.json().mget(newer, "id.session") if newer else []
    return next((k for k, s in zip(newer, sessions, strict=True) if s == session), "")
