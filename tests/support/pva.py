"""An areaDetector stand-in for the pva source's tests: a p4p server in the test
process serving an NTNDArray image PV, Acquire and NumImages on loopback only."""

from __future__ import annotations

import numpy as np


class AreaDetector:
    """PVs `<prefix>Pva1:Image`, `<prefix>cam1:Acquire`, `<prefix>cam1:NumImages`,
    `<prefix>cam1:ArrayCounter_RBV`."""

    def __init__(self, prefix: str = "SIM1:"):
        from p4p.nt import NTNDArray, NTScalar
        from p4p.server import Server
        from p4p.server.thread import SharedPV

        self.image_pv, self.acquire_pv = f"{prefix}Pva1:Image", f"{prefix}cam1:Acquire"
        self.images_pv = f"{prefix}cam1:NumImages"
        self.counter_pv = f"{prefix}cam1:ArrayCounter_RBV"
        self.nt = NTNDArray()
        self.image = SharedPV(initial=self.nt.wrap(np.zeros((4, 4), np.uint16)))
        self.acquire = SharedPV(nt=NTScalar("i"), initial=0)
        self.images = SharedPV(nt=NTScalar("i"), initial=0)
        self.counter = SharedPV(nt=NTScalar("i"), initial=0)
        self.server = Server(providers=[{self.image_pv: self.image,
                                         self.acquire_pv: self.acquire,
                                         self.images_pv: self.images,
                                         self.counter_pv: self.counter}],
                             conf={"EPICS_PVAS_INTF_ADDR_LIST": "127.0.0.1",
                                   "EPICS_PVAS_BEACON_ADDR_LIST": "127.0.0.1",
                                   "EPICS_PVAS_AUTO_BEACON_ADDR_LIST": "NO",
                                   "EPICS_PVA_SERVER_PORT": "0",
                                   "EPICS_PVA_BROADCAST_PORT": "0"}, useenv=False)
        conf = self.server.conf()
        self.env = {"EPICS_PVA_ADDR_LIST": f"127.0.0.1:{conf['EPICS_PVA_BROADCAST_PORT']}",
                    "EPICS_PVA_AUTO_ADDR_LIST": "NO"}

    def post(self, frame: np.ndarray, unique_id: int, attrs: dict | None = None,
             codec: str = "", body: np.ndarray | None = None) -> None:
        """One frame as areaDetector's PVA plugin posts it (after its codec plugin;
        `body`: the frame already compressed by `compress`)."""
        value = self.nt.wrap(frame, attrib=dict(attrs or {}))
        if codec:
            body = self.compress(frame, codec) if body is None else body
            nd_type = ["int8", "uint8", "int16", "uint16", "int32", "uint32"].index(
                frame.dtype.name)
            value["value"] = ("ubyteValue", body)
            value["codec.name"] = codec
            value["codec.parameters"] = nd_type
            value["compressedSize"] = len(body)
        value["uniqueId"] = unique_id
        self.image.post(value)

    @staticmethod
    def compress(frame: np.ndarray, codec: str) -> np.ndarray:
        """The frame as the codec plugin compresses it: bshuf_compress_lz4 blocks
        (bslz4), or one LZ4 block of the whole frame (lz4), without a header."""
        if codec == "bslz4":
            import bitshuffle

            body = bitshuffle.compress_lz4(np.ascontiguousarray(frame).reshape(-1), 0)
        else:
            import lz4.block

            body = np.frombuffer(lz4.block.compress(np.ascontiguousarray(frame).tobytes(),
                                                    store_size=False), np.uint8)
        return np.asarray(body, np.uint8)

    def close(self) -> None:
        self.server.stop()
