"""What a DECTRIS detector sends, for the emulator (`stream.sources.dectris.emulator`):
SIMPLON stream v2 messages (CBOR with typed arrays and the compression tag) and
stream v1 messages (multipart JSON headers and frames, raw, lz4 or bslz4)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from typing import Any

import cbor2
import numpy as np

from stream.core.encoded import compress

TYPED_TAGS = {"uint8": 64, "uint16": 69, "uint32": 70, "int16": 77, "int32": 78,
              "float32": 85, "float64": 86}
SELF_DESCRIBE = 55799

# ------------------------------------------------------------------ stream v2 (CBOR)


def v2_array(arr: np.ndarray, encoding: str = "raw") -> cbor2.CBORTag:
    """Tag 40 [[rows, cols], typed array], the bytes raw or in tag 56500."""
    arr = np.ascontiguousarray(arr, dtype=np.asarray(arr).dtype.newbyteorder("<"))
    tag = TYPED_TAGS[arr.dtype.name]
    if encoding == "raw":
        payload: Any = arr.tobytes()
    else:
        data = bytes(compress(arr, encoding).buffer)
        payload = cbor2.CBORTag(56500, [encoding, arr.itemsize if encoding == "bslz4" else 0,
                                        data])
    return cbor2.CBORTag(40, [list(arr.shape), cbor2.CBORTag(tag, payload)])


def _v2(msg: dict) -> bytes:
    return cbor2.dumps(cbor2.CBORTag(SELF_DESCRIBE, msg))


def v2_start(series_id: int, *, channels: Iterable[str], shape: tuple[int, int],
             nimages: int | None, unique_id: str | None = None,
             flatfield: Mapping[str, np.ndarray] | None = None,
             pixel_mask: Mapping[str, np.ndarray] | None = None,
             flatfield_enabled: bool = False, **fields: Any) -> bytes:
    msg: dict[str, Any] = {"type": "start", "series_id": series_id,
                           "series_unique_id": unique_id or f"emu-{series_id}",
                           "arm_date": dt.datetime.now(dt.UTC),
                           "channels": list(channels), "image_size_x": shape[1],
                           "image_size_y": shape[0], "count_time": 0.01, "frame_time": 0.01,
                           "incident_energy": 43500.0,
                           "detector_description": "Dectris EIGER2 Si 4M",
                           "detector_serial_number": "E-08-0000",
                           "flatfield_enabled": flatfield_enabled,
                           "pixel_mask_enabled": False, **fields}
    if nimages is not None:
        msg["number_of_images"] = nimages
    for key, maps in (("flatfield", flatfield), ("pixel_mask", pixel_mask)):
        if maps:
            msg[key] = {ch: v2_array(a) for ch, a in maps.items()}
    return _v2(msg)


def v2_image(series_id: int, image_id: int, frames: Mapping[str, np.ndarray], *,
             encoding: str = "raw", unique_id: str | None = None,
             frame_time: tuple[int, int] = (1, 100)) -> bytes:
    num, den = frame_time
    return _v2({"type": "image", "series_id": series_id,
                "series_unique_id": unique_id or f"emu-{series_id}", "image_id": image_id,
                "real_time": [num, den], "start_time": [image_id * num, den],
                "stop_time": [(image_id + 1) * num, den],
                "series_date": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
                "data": {ch: v2_array(f, encoding) for ch, f in frames.items()}})


def v2_end(series_id: int, unique_id: str | None = None) -> bytes:
    return _v2({"type": "end", "series_id": series_id,
                "series_unique_id": unique_id or f"emu-{series_id}"})


# ------------------------------------------------------------------ stream v1 (JSON multipart)


def _json(d: dict) -> bytes:
    return json.dumps(d).encode()


def v1_header(series_id: int, *, header_detail: str = "basic", shape: tuple[int, int],
              dtype: str = "uint16", nimages: int | None = None,
              flatfield: np.ndarray | None = None, pixel_mask: np.ndarray | None = None,
              flatfield_applied: bool = False, appendix: Any = None,
              config: Mapping[str, Any] | None = None) -> list[bytes]:
    """1, 2 or 8 parts (none, basic, all), one more with an appendix; `config`: more
    keys of the detector configuration (part 2), e.g. omega_start, omega_increment."""
    parts = [_json({"htype": "dheader-1.0", "series": series_id,
                    "header_detail": header_detail})]
    if header_detail in ("basic", "all"):
        config = {**(config or {}), "x_pixels_in_detector": shape[1],
                  "y_pixels_in_detector": shape[0],
                  "bit_depth_image": np.dtype(dtype).itemsize * 8, "count_time": 0.01,
                  "frame_time": 0.01, "nimages": nimages or 1, "ntrigger": 1,
                  "photon_energy": 43500.0, "description": "Dectris EIGER2 Si 4M",
                  "detector_number": "E-08-0000",
                  "flatfield_correction_applied": flatfield_applied,
                  "pixel_mask_applied": False}
        parts.append(_json(config))
    if header_detail == "all":
        flat = np.ones(shape, np.float32) if flatfield is None else flatfield
        mask = np.zeros(shape, np.uint32) if pixel_mask is None else pixel_mask
        table = np.arange(1000, dtype=np.float32).reshape(1, 1000)
        for htype, arr, typ in (("dflatfield-1.0", flat, "float32"),
                                ("dpixelmask-1.0", mask, "uint32"),
                                ("dcountrate_table-1.0", table, "float32")):
            arr = np.ascontiguousarray(arr, dtype=np.dtype(typ).newbyteorder("<"))
            parts += [_json({"htype": htype, "shape": [arr.shape[1], arr.shape[0]],
                             "type": typ}), arr.tobytes()]
    if appendix is not None:
        parts.append(_json(appendix))
    return parts


def v1_data(frame: np.ndarray, encoding: str) -> tuple[str, bytes]:
    """(the v1 encoding string, the data part) of a frame."""
    frame = np.ascontiguousarray(frame, dtype=frame.dtype.newbyteorder("<"))
    if encoding == "raw":
        return "<", frame.tobytes()
    if encoding == "lz4":
        import lz4.block

        return "lz4<", lz4.block.compress(frame.tobytes(), store_size=False)
    return f"bs{8 * frame.itemsize}-lz4<", bytes(compress(frame, "bslz4").buffer)


def v1_image(series_id: int, frame_id: int, frame: np.ndarray, *, encoding: str = "raw",
             appendix: Any = None) -> list[bytes]:
    enc, data = v1_data(frame, encoding)
    parts = [_json({"htype": "dimage-1.0", "series": series_id, "frame": frame_id,
                    "hash": ""}),
             _json({"htype": "dimage_d-1.0", "shape": [frame.shape[1], frame.shape[0]],
                    "type": frame.dtype.name, "encoding": enc, "size": len(data)}),
             data,
             _json({"htype": "dconfig-1.0", "start_time": frame_id * 10_000_000,
                    "stop_time": frame_id * 10_000_000 + 9_000_000, "real_time": 9_000_000})]
    if appendix is not None:
        parts.append(_json(appendix))
    return parts


def v1_end(series_id: int) -> list[bytes]:
    return [_json({"htype": "dseries_end-1.0", "series": series_id})]
