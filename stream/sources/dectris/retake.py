"""Images again, and series that end without their end message.

A copy of an image that did not fit the scan (its shape or dtype are not those of the
series' frames) is refused by the runner on arrival; a later copy that fits is taken
(the runner records it as `replaced`, docs/security.md), not dropped as a duplicate.

The series remembers such image ids (`Series.misfits`, with the motors the refused copy
went on with, so the copy that replaces it needs not wait for them again).
"""

from __future__ import annotations

from typing import Any

from stream.sources.dectris.common import SeriesImage


def fits(cur: Any, img: SeriesImage) -> bool:
    """The image's frames have the shape and dtype of the series' (any, before our Start)."""
    for ch, frame in img.frames.items():
        want = cur.kinds.get(ch)
        if want is not None and want != (tuple(frame.shape), frame.dtype.name):
            return False
    return True


def note(cur: Any, img: SeriesImage) -> None:
    """A new image: remember it if it does not fit (a later copy may replace it)."""
    if not fits(cur, img):
        cur.misfits[img.image_id] = None


def retake(cur: Any, img: SeriesImage) -> bool:
    """An image seen before: True if it replaces a copy that did not fit (the joiner
    forgets that copy, keeping its motors)."""
    if img.image_id not in cur.misfits or not fits(cur, img):
        return False
    cur.joiner.forget(img.image_id, cur.misfits.pop(img.image_id))
    return True


def no_end(cur: Any, timeout: float, ended: str, timed_out: str) -> tuple[str, str]:
    """(state, reason) of a series with no end for `timeout` s: `ended` (our scan a
    success, the reason saying the end never came) if every announced image came, else
    `timed_out` (abort, reason "timeout: ...")."""
    n = cur.start.npoints
    if n is not None and all(cur.joiner.seen(i) for i in range(n)):
        return ended, (f"no end of series {cur.label} within {timeout:g} s of its last "
                       f"message, but all {n} images came: taken as ended")
    return timed_out, (f"timeout: no end of series {cur.label} within {timeout:g} s of its "
                       f"last message")
