"""The scans Bliss was running when the source starts (a daemon restarted mid-scan):
they are followed from their start, as blissdata keeps every scan's streams in Redis;
a scan file a crash left open is then continued (`stream.run.resuming`)."""

from __future__ import annotations

from typing import Any

RECENT = 64  # scans looked at, newest first (blissdata's history keeps 2048)
DEPTH = 8  # sequences within sequences looked through


def running_scans(store: Any, session: str) -> tuple[str, list[str]]:
    """(timetag, keys): the scan-creation timetag to wait for the next scans from, and
    the scans of `session` ("": every session) Bliss has not closed, oldest first. Only
    those newer than the session's newest closed scan: an older one never closed is a
    scan whose Bliss died, not one running (Bliss runs one scan at a time, or a
    sequence and the scans it runs). A closed child of a sequence (its info `group`)
    does not end the look: its sequence, older, may still run (then it is taken, and
    nothing older)."""
    from blissdata.redis_engine.scan import ScanState, scan_creation_stream

    raw = store._redis.xrevrange(scan_creation_stream, count=RECENT)
    if not raw:
        return "0-0", []
    timetag = raw[0][0].decode()
    keys = [data[b"key"].decode() for _, data in raw]
    sessions = store._redis.json().mget(keys, "id.session")
    groups = store._redis.json().mget(keys, "info.group")
    running: list[str] = []
    parents: set[str] = set()  # sequences of closed children, not yet reached
    closed = False
    for key, other, group in zip(keys, sessions, groups, strict=True):
        if other is None or (session and other != session):
            continue  # deleted (expired), or another session's
        try:
            state = store.get_scans_state([key])[key]
        except Exception:  # expired meanwhile: no state stream
            continue
        if state >= ScanState.CLOSED:
            if not group:
                break
            closed = True
            parents.add(group)
            continue
        if closed:
            if key not in parents:
                continue  # older than a closed scan, and not its sequence: Bliss died
            parents.discard(key)
            if group:
                parents.add(group)
        running.append(key)
        if closed and not parents:
            break
    return timetag, running[::-1]


def quiet_text(sid: str, key: str, url: str, quiet: float) -> str:
    """What status and the log say of a scan without data for `quiet` s that Bliss keeps
    open: blissdata cannot tell a pause from a Bliss that died (no heartbeat of the
    writer, no expiry while it is open; the memory tracker deletes such a scan after a
    day, by default), so it is said, with the way to end it, never decided."""
    when = f"{quiet:.0f} s" if quiet < 120 else f"{quiet / 60:.0f} min"
    close = f'DataStore("{url}").delete_scan("{key}", force=True)'
    return (f"Bliss scan {sid} has had no data for {when} and Bliss has not closed it: a "
            f"pause (a refill, long exposures), or its Bliss died (blissdata does not say "
            f"which; a newer scan of the session would end it). If it died, close it in "
            f"Redis, as blissdata's memory tracker does after a day, and peakstream ends it "
            f"abort: python -c 'from blissdata.redis_engine.store import DataStore; "
            f"{close}'")


def superseded(store: Any, key: str, session: str | None) -> str:
    """A scan of `session` Bliss created after the scan `key`, or "": a Bliss that died
    mid-scan never closes its scan, and its next scan says the old one is over (Bliss
    runs one scan of a session at a time). A scan that `key` runs (a child of the
    sequence `key`, its info `group`, or a child's child) is no such scan."""
    from blissdata.redis_engine.scan import scan_creation_stream

    newer = []
    for _, data in store._redis.xrevrange(scan_creation_stream, count=RECENT):
        other = data[b"key"].decode()
        if other == key:
            break
        newer.append(other)
    if not newer:
        return ""
    sessions = store._redis.json().mget(newer, "id.session")
    groups = dict(zip(newer, store._redis.json().mget(newer, "info.group"), strict=True))
    for other, other_session in zip(newer, sessions, strict=True):
        if other_session == session and not _runs_in(store, other, key, groups):
            return other
    return ""


def _runs_in(store: Any, other: str, key: str, groups: dict[str, str | None]) -> bool:
    """Is the scan `other` run by the sequence `key` (its child, its child's child ...)?
    `groups`: scan -> its sequence, as known (completed here from Redis)."""
    for _ in range(DEPTH):
        if other not in groups:
            groups[other] = store._redis.json().mget([other], "info.group")[0]
        parent = groups[other]
        if not parent:
            return False
        if parent == key:
            return True
        other = parent
    return False
