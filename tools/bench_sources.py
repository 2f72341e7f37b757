"""The rate each control-system source sustains with 512x512 frames on loopback.

    python tools/bench_sources.py                  # 300 frames, 5 repeats per source
    python tools/bench_sources.py --points 100 --repeats 5 --json sources.json

A publisher in a child process (this script with --publish) sends `--points`
512 x 512 uint16 frames (Poisson background 10, a few spots; `--distinct` of
them cycled) as fast as it can; the source runs in this process and its
messages are taken as the runner takes them (`receive`). Rate: points / (time
from the start message to the end message). Sources:

* zmq: our protocol, PUSH -> ZmqSource over tcp loopback (the reference every
  other figure is a ratio to, measured in the same run);
* blissdata-lima: a Bliss-like publisher (blissdata's writer API) saving the
  frames in Lima HDF5 files (100 a file) and publishing the positions and the
  Lima status every 10 frames; the source reads each frame from its file
  (valkey + RedisJSON/RediSearch);
* blissdata-stream: the frames in a blissdata array stream itself;
* pva-raw, pva-bslz4: a p4p server posting NTNDArray updates (raw, or
  bitshuffle-LZ4 as areaDetector's codec plugin writes them); pvAccess drops
  updates a slow client does not take: `dropped` says how many.

`publisher`: the median rate the publisher itself achieved (its own time to
publish the scan, for blissdata including creating the scan in Redis, which
the source's figure does not count); on a 2-core machine the publisher and
the source share the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from benchinfo import cpu_model, package_version

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHAPE = (512, 512)
SOURCES = ("zmq", "blissdata-lima", "blissdata-stream", "pva-raw", "pva-bslz4")


def frames(distinct: int) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    out = []
    for _ in range(distinct):
        f = rng.poisson(10, SHAPE).astype(np.uint16)
        for r, c in rng.integers(20, 490, (10, 2)):
            f[r - 2:r + 3, c - 2:c + 3] += 500
        out.append(f)
    return out


# ------------------------------------------------------------------ publishers (child)


def publish(kind: str, address: str, n: int, distinct: int, directory: str) -> None:
    """Publish one scan; print the seconds the publishing took (the publisher's own rate)."""
    fr = frames(distinct)
    t0 = time.perf_counter()
    if kind == "zmq":
        import zmq

        from stream.core.messages import DetectorInfo, End, Point, Start
        from stream.wire.codec import encode

        sock = zmq.Context.instance().socket(zmq.PUSH)
        sock.setsockopt(zmq.SNDHWM, 64)
        sock.connect(address)
        t0 = time.perf_counter()
        sock.send_multipart(encode(Start("b", {"eiger": DetectorInfo(SHAPE, "uint16")},
                                         ["omega"], [], n)))
        for i in range(n):
            sock.send_multipart(encode(Point("b", i, 0.0, {"omega": i * 0.1}, {},
                                             {"eiger": fr[i % distinct]})), copy=False)
        sock.send_multipart(encode(End("b", "success", n)))
        sock.close(linger=-1)
        zmq.Context.instance().term()  # returns once every message is out
        print(json.dumps({"publish": time.perf_counter() - t0}), flush=True)
    elif kind.startswith("blissdata"):
        from tests.support.bliss import FakeBliss

        omega = list(np.arange(n) * 0.1)
        bliss = FakeBliss(address, Path(directory), session="bench")
        t0 = time.perf_counter()
        bliss.scan(
            "fscan", int(time.time() * 1000) % 10**9, [fr[i % distinct] for i in range(n)],
            {"diffrz": omega}, info={"fscan_parameters": {"motor": "diffrz", "npoints": n}},
            frames_per_file=100, lima=kind.endswith("lima"), batch=10)
        print(json.dumps({"publish": time.perf_counter() - t0}), flush=True)
    else:
        from tests.support.pva import AreaDetector

        ad = AreaDetector("BENCH:")
        print(json.dumps(ad.env), flush=True)
        sys.stdin.readline()  # the source has connected
        codec = "bslz4" if kind.endswith("bslz4") else ""
        bodies = [ad.compress(f, codec) for f in fr] if codec else []  # as the IOC would
        t0 = time.perf_counter()
        for i in range(n):
            ad.post(fr[i % distinct], i + 1, {"OMEGA": i * 0.1}, codec=codec,
                    body=bodies[i % distinct] if codec else None)
        print(json.dumps({"publish": time.perf_counter() - t0}), flush=True)
        sys.stdin.readline()  # the source is done
        ad.close()


# ------------------------------------------------------------------ the source (here)


def take(source, n: int) -> tuple[float, int]:
    """Seconds from the start message to the end message, and the points received."""
    from stream.core.messages import End, Point, Start
    from stream.wire.codec import decode

    t0, points = None, 0
    while True:
        for parts in source.receive(0.05):
            msg = decode(parts)
            if isinstance(msg, Start) and t0 is None:
                t0 = time.perf_counter()
            elif isinstance(msg, Point):
                points += 1
            elif isinstance(msg, End):
                return time.perf_counter() - t0, points


def child(kind: str, address: str, args, directory: str, **kw) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--publish", kind, "--address", address,
           "--points", str(args.points), "--distinct", str(args.distinct),
           "--directory", directory]
    return subprocess.Popen(cmd, cwd=ROOT, **kw)


def one(kind: str, args, redis_url: str, directory: str) -> dict:
    if kind == "zmq":
        from stream.sources.zmq import ZmqSource

        src = ZmqSource("tcp://127.0.0.1:0", 64)
        src.receive = lambda t=0.0, _r=src.receive: _r(t, limit=16)
        p = child(kind, src.endpoint, args, directory, stdout=subprocess.PIPE, text=True)
        seconds, points = take(src, args.points)
        published = json.loads(p.communicate()[0])["publish"]
        src.close()
        return {"seconds": seconds, "points": points, "publish": published}
    if kind.startswith("blissdata"):
        from stream.sources.blissdata import BlissdataSource

        src = BlissdataSource(redis_url=redis_url, motors=["omega"], counters=[],
                              channels={"omega": "axis:diffrz"}, session="bench")
        p = child(kind, redis_url, args, directory, stdout=subprocess.PIPE, text=True)
        seconds, points = take(src, args.points)
        published = json.loads(p.communicate()[0])["publish"]
        src.close()
        return {"seconds": seconds, "points": points, "publish": published}
    from stream.sources.pva import PvaSource

    p = child(kind, "", args, directory, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
              text=True)
    os.environ.update(json.loads(p.stdout.readline()))
    src = PvaSource(pv="BENCH:Pva1:Image", motors=["omega"], counters=[],
                    channels={"omega": "OMEGA"}, series_timeout=1.0, queue_size=16)
    while not src.status()["connected"]:
        src.receive(0.05)
    p.stdin.write("go\n")
    p.stdin.flush()
    seconds, points = take(src, args.points)
    dropped = src.status()["dropped"]
    seconds -= 1.0  # the scan ends series_timeout (1 s) after its last frame
    published = json.loads(p.stdout.readline())["publish"]
    p.stdin.write("done\n")
    p.stdin.flush()
    p.wait()
    src.close()
    return {"seconds": seconds, "points": points, "dropped": dropped, "publish": published}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--points", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--distinct", type=int, default=8)
    ap.add_argument("--sources", nargs="*", default=list(SOURCES), choices=SOURCES)
    ap.add_argument("--json", help="write the figures here too")
    ap.add_argument("--publish", help=argparse.SUPPRESS)
    ap.add_argument("--address", help=argparse.SUPPRESS)
    ap.add_argument("--directory", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.publish:
        publish(args.publish, args.address, args.points, args.distinct, args.directory)
        return 0
    print(f"machine: {os.cpu_count()} cores, {cpu_model()}; python {platform.python_version()}; "
          f"blissdata {package_version('blissdata')}, p4p {package_version('p4p')}, "
          f"pyzmq {package_version('pyzmq')}, h5py {package_version('h5py')}")
    print(f"{args.points} frames {SHAPE[0]}x{SHAPE[1]} uint16 per run, {args.repeats} runs "
          f"per source, loopback")
    from tests.support.redis import redis_server

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp, redis_server(Path(tmp)) as redis:
        for kind in args.sources:
            runs = [one(kind, args, redis.url, tmp) for _ in range(args.repeats)]
            rates = [r["points"] / r["seconds"] for r in runs]
            results[kind] = {"rates": rates, "points": [r["points"] for r in runs],
                             "publisher": [args.points / r["publish"] for r in runs],
                             "dropped": [r.get("dropped", 0) for r in runs]}
    ref = statistics.median(results["zmq"]["rates"]) if "zmq" in results else None
    print(f"{'source':18s} {'min':>8s} {'median':>8s} {'max':>8s}  frames/s   "
          f"{'vs zmq':>7s}  {'publisher':>9s}  points received (dropped)")
    for kind, r in results.items():
        lo, med, hi = min(r["rates"]), statistics.median(r["rates"]), max(r["rates"])
        ratio = f"{med / ref:7.2f}" if ref else "      -"
        got = ", ".join(f"{p}" + (f" ({d})" if d else "") for p, d in
                        zip(r["points"], r["dropped"], strict=True))
        pub = statistics.median(r["publisher"])
        print(f"{kind:18s} {lo:8.0f} {med:8.0f} {hi:8.0f}  frames/s  {ratio}  {pub:9.0f}  {got}")
        r.update({"min": lo, "median": med, "max": hi, "ratio_to_zmq": med / ref if ref else None})
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
