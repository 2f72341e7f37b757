"""Bliss (ESRF) as a source: scans read from its Redis data store with `blissdata`.

`make_source` builds a `BlissdataSource` from a `[source]` table with
kind = "blissdata"; the package needs the optional extra bliss (`pip install -e .[bliss]`)
only when such a source is made.
"""

from __future__ import annotations

from typing import Any

from stream.sources.blissdata.source import BlissdataSource

__all__ = ["BlissdataSource", "make_source"]


def make_source(src: dict[str, Any]) -> BlissdataSource:
    """A BlissdataSource from a validated `[source]` table."""
    return BlissdataSource(redis_url=src["redis_url"], motors=src["motors"],
                           counters=src["counters"], channels=src["channels"],
                           image=src["image"], session=src["session"],
                           trajectory=src["trajectory"], frame_timeout=src["frame_timeout"],
                           reconnect_timeout=src["reconnect_timeout"],
                           derive_points=src["derive_points"], rcvhwm=src["rcvhwm"],
                           quiet_warning=src["quiet_warning"])
