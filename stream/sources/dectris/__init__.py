"""DECTRIS detectors (EIGER, PILATUS4, ...) as a source of our protocol's messages.

| module | what |
|---|---|
| `v2`     | SIMPLON stream v2: CBOR `start` / `image` / `end` (typed arrays, compression tag) |
| `v1`     | SIMPLON stream v1 ("legacy"): multipart JSON `dheader` / `dimage` / `dseries_end` |
| `common` | what both decode to (`SeriesStart`, `SeriesImage`, `SeriesEnd`), frame checks |
| `maps`   | flatfield / pixel mask decompression (once per series) |
| `join`   | images joined with the motor lane's points by point id, with a timeout |
| `series` | the series state machine and the translation to Start / Point / End |
| `source` | `DectrisSource` (the sockets, `receive`, `status`) and `make_source` |

Frames are never decompressed here: bslz4 and lz4 frames go on to the
workers as they came (`stream.encoded.EncodedFrame`).
"""

from stream.sources.dectris.common import DetectorError, SeriesEnd, SeriesImage, SeriesStart
from stream.sources.dectris.series import NO_HEADER, SeriesMachine
from stream.sources.dectris.source import DectrisSource, make_source
from stream.sources.dectris.v1 import decode_v1
from stream.sources.dectris.v2 import decode_v2

__all__ = ["DectrisSource", "make_source", "SeriesMachine", "SeriesStart", "SeriesImage",
           "SeriesEnd", "DetectorError", "NO_HEADER", "decode_v1", "decode_v2"]
