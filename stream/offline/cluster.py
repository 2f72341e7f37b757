"""Batch replay on dask.distributed: many scans as tasks on a cluster engine.

`peakstream replay INPUTS --output DIR --cluster SPEC` runs one task per scan
(`scanjob.run_job`) on a LocalCluster of processes (`local[:N]`), an existing
scheduler (`tcp://HOST:8786`) or SLURM jobs started by dask-jobqueue (`slurm`).
Each task writes its own scan file, the one a serial replay writes (the same
`replay_scan`), through a partial file renamed when the scan has ended. A scan
whose file exists with status success is skipped, so a rerun does only what is
left; dask runs the task of a killed worker again elsewhere (`retries`), and
that attempt replaces the killed one's partial file.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stream.config.schema import Config
from stream.core.threads import usable_cores
from stream.offline.scanjob import ScanJob, output_path, run_job, source_identity

log = logging.getLogger(__name__)

START_METHOD_ENV = "DASK_DISTRIBUTED__WORKER__MULTIPROCESSING_METHOD"
RETRIES = 2  # a task whose worker died runs again elsewhere, up to this many times
WATCH_EVERY = 1.0  # s between two looks at the running tasks (points, lost workers)
# a chunk's own links are not kept (the merge links the whole scan), and a range of an
# interlaced or grid scan is no scan of that kind: chunks are replayed as plain sweeps
CHUNK_TRAJECTORY = {"kind": "sweep"}
FINISHED = ("success", "incomplete")  # a scan file a rerun keeps; the exit code is 0


@dataclass
class ClusterSpec:
    """Where the tasks run: `local` (N processes), `scheduler` (address) or `slurm`."""

    kind: str
    workers: int = 0
    address: str = ""
    slurm: dict[str, Any] = field(default_factory=dict)


def parse_cluster(text: str, slurm: dict[str, Any] | None = None) -> ClusterSpec:
    """`local`, `local:N`, `tcp://HOST:PORT` (a running dask scheduler) or `slurm`."""
    if text == "local" or text.startswith("local:"):
        n = text.partition(":")[2]
        if n and (not n.isdigit() or int(n) < 1):
            raise ValueError(f"--cluster {text}: local:N needs N >= 1 worker processes")
        return ClusterSpec("local", int(n) if n else 0)
    if text.startswith(("tcp://", "tls://")):
        return ClusterSpec("scheduler", address=text)
    if text == "slurm":
        return ClusterSpec("slurm", slurm=dict(slurm or {}))
    raise ValueError(f"--cluster {text!r}: local[:N], tcp://HOST:PORT (a dask scheduler) "
                     f"or slurm")


@contextlib.contextmanager
def open_client(spec: ClusterSpec | None) -> Iterator[Any]:
    """A dask Client on the cluster the spec names (None for `spec` None: nothing to
    run); the cluster is closed after."""
    if spec is None:
        yield None
        return
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise ImportError("--cluster needs dask.distributed: pip install -e "
                          "'.[cluster]'") from None
    if not log.isEnabledFor(logging.INFO):  # dask's own INFO lines only with -v
        for name in ("distributed", "dask_jobqueue"):
            logging.getLogger(name).setLevel(logging.WARNING)
    if spec.kind == "scheduler":
        with Client(spec.address, timeout="30s") as client:
            yield client
        return
    with local_start_method(spec.kind):  # read at every worker (re)start: for the whole run
        if spec.kind == "local":
            cluster = LocalCluster(n_workers=spec.workers or usable_cores(), threads_per_worker=1,
                                   processes=True, dashboard_address=":0",
                                   silence_logs=logging.WARNING)
        else:
            cluster = slurm_cluster(spec.slurm)
            submit_jobs(cluster, int(spec.slurm.get("jobs") or 1))
        with cluster, Client(cluster) as client:
            yield client


def local_start_method(kind: str) -> contextlib.AbstractContextManager:
    """Local worker processes forked from this one on Linux, not spawned: a spawned
    worker imports Python, numpy, numba, dask and the kernels afresh (~2.5 s of a
    cold `--cluster local:2` run over 8 scans, measured), a forked one has them.
    This process holds no open file or socket a task would share at that time. dask's
    own setting wins when the user gives it (DASK_DISTRIBUTED__WORKER__MULTIPROCESSING_METHOD)."""
    import dask

    if kind != "local" or not hasattr(os, "fork") or START_METHOD_ENV in os.environ:
        return contextlib.nullcontext()
    return dask.config.set({"distributed.worker.multiprocessing-method": "fork"})


def slurm_cluster(opts: dict[str, Any]) -> Any:
    """dask-jobqueue SLURM jobs of `cores` single-threaded worker processes each (not
    submitted yet: `scale(jobs=N)` does that)."""
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        raise ImportError("--cluster slurm needs dask-jobqueue: pip install -e "
                          "'.[cluster]'") from None
    cores = int(opts.get("cores") or 1)
    cluster = SLURMCluster(
        queue=opts.get("queue") or None, account=opts.get("account") or None,
        cores=cores, processes=cores, memory=opts.get("memory") or "4GB",
        walltime=opts.get("walltime") or "01:00:00",
        job_extra_directives=list(opts.get("job_extra") or ()),
        log_directory=opts.get("log_directory") or None,
        job_script_prologue=[f"export {k}=1" for k in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS")],
        scheduler_options={"dashboard_address": ":0"})
    log.info("SLURM job script:\n%s", cluster.job_script())
    return cluster


class ClusterStartError(RuntimeError):
    """The cluster's workers cannot be started (sbatch refused the job)."""


def submit_jobs(cluster: Any, jobs: int) -> None:
    """Submit the worker jobs and wait for sbatch's answers: dask-jobqueue submits them
    in the background and only logs a refusal, after which the driver waited for
    workers forever. A refusal is a ClusterStartError with sbatch's message."""
    while len(cluster.worker_spec) < jobs:  # what scale(jobs=N) does, then submits them
        cluster.worker_spec.update(cluster.new_worker_spec())  # in a background callback
    try:
        cluster.sync(cluster._correct_state)
    except Exception as exc:
        from distributed.core import Status

        for job in cluster._created:  # never submitted: what close() takes for failed
            if job.status == Status.created:
                job.status = Status.failed
        cluster.close()
        text = str(exc)
        said = [line.strip() for line in text.splitlines() if "error" in line.lower()]
        raise ClusterStartError(f"the SLURM worker job was refused: "
                                f"{'; '.join(said) or text}") from None


def plan(jobs: list[ScanJob], config: Config, directory: str | Path,
         not_opened: list[dict[str, Any]] | None = None) -> list[ScanJob]:
    """Each job's scan_id, points and output file, from its start message (opened
    here, not processed). Two scans that would write one file are a ValueError. With
    `not_opened`, a scan of a batch that cannot be opened (an entry without the motor
    dataset given) is left out and appended there as a result row,
    as a serial replay skips it; without, or for a lone scan, the error is raised."""
    from stream.core.messages import start_to_json
    from stream.sources.files import open_recording

    seen: dict[Path, str] = {}
    kept = []
    for job in jobs:
        try:
            start, points = open_recording(job.inputs, **job.options)
        except (OSError, ValueError) as exc:
            if not_opened is None or len(jobs) == 1:
                raise
            not_opened.append({"scan_id": job.name, "status": "not opened",
                               "reason": f"{exc}"})
            continue
        kept.append(job)
        close = getattr(points, "close", None)
        if close is not None:
            close()
        job.scan_id, job.npoints = start.scan_id, start.npoints
        job.start_json = start_to_json(start)
        job.identity = source_identity(job.inputs, job.options)
        job.path = output_path(directory, config["output"]["pattern"], start.scan_id,
                               start.meta)
        where = ", ".join(job.inputs or job.options.get("images") or [job.name])
        if job.path in seen:  # the inputs as given, directories too: s1/ and s2/sample.h5
            raise ValueError(f"{seen[job.path]} and {where} would both write {job.path} "
                             f"(scan_id {start.scan_id!r}); give them other scan ids, or "
                             f"replay them into other --output directories")
        seen[job.path] = where
    return kept


def finished(path: Path | None, config_text: str | None = None,
             identity: str | None = None) -> dict[str, Any] | None:
    """The summary of `path` if it is a scan file that ended with status success or
    incomplete (and, given `config_text` and `identity`, was made by that processing from
    that input). An incomplete scan is finished too, as for a serial replay's exit code:
    replayed again from the same recording it would be the same file (a Lima file gone
    for good would make a rerun do it, and exit 1, forever); `replay --fill` completes it
    when its frames turn up."""
    from stream.store.reader import summary

    try:
        s = summary(path) if path is not None and path.exists() else None
    except (OSError, ValueError, KeyError):
        return None
    if s is None or s["status"] not in FINISHED:
        return None
    if config_text is not None and made_otherwise(path, config_text, identity or ""):
        return None
    return s


def made_otherwise(path: Path, config_text: str, identity: str) -> str:
    """Why the scan file `path` is not what this processing of this input makes ("" if
    it is): another config (`processing_hash`) or another recording (`source_identity`)."""
    import json

    import h5py

    from stream.offline.scanjob import SOURCE_ATTR
    from stream.store.identity import processing_hash

    with h5py.File(path, "r", locking=False) as f:
        proc = f["entry/process"]
        theirs = proc["config"].asstr()[()]
        made_from = proc.attrs.get(SOURCE_ATTR)
    if processing_hash(theirs) != processing_hash(config_text):
        return "it was made with another config (its [node], [linker] or trajectory differ)"
    if made_from is None:
        return "it records no input it was made from (not written by replay --cluster)"
    if str(made_from) != identity:
        def files(text: str) -> str:
            try:
                return "; ".join(" ".join(map(str, f)) for f in json.loads(text)["files"])
            except (ValueError, KeyError, TypeError):
                return text
        return (f"it was made from another recording or with other options ({files(made_from)}"
                f"; now: {files(identity)})")
    return ""


def stale_files(jobs: list[ScanJob], config: Config) -> list[str]:
    """A line for each job whose file is finished (`finished`) but was made by another
    processing or from another input: neither skipped nor overwritten (a serial replay
    refuses an output file that exists, too)."""
    out = []
    for job in jobs:
        if finished(job.path) is not None:
            why = made_otherwise(job.path, config.text(), job.identity)
            if why:
                out.append(f"{job.path} exists for {job.name} but {why}; remove it or choose "
                           f"another --output")
    return out


def skipped(jobs: list[ScanJob], config: Config) -> dict[int, dict[str, Any]]:
    """The jobs whose scan is finished already (by index): their files' summaries. A
    file made otherwise (`stale_files`) is a ValueError."""
    stale = stale_files(jobs, config)
    if stale:
        raise ValueError("\n".join(stale))
    out = {}
    for i, job in enumerate(jobs):
        s = finished(job.path, config.text(), job.identity)
        if s is not None:
            why = "finished on an earlier run" if s["status"] == "success" else \
                f"finished {s['status']} on an earlier run: {s['reason']}"
            out[i] = {**s, "status": "skipped", "was": s["status"], "reason": why,
                      "seconds": 0.0}
    return out


def _keys(fut: Any, key_of: dict[Any, list[str]]) -> list[str]:
    return [fut.key, *key_of.get(fut, ())]


def run_batch(client: Any, jobs: list[ScanJob], config: Config, *, per_point: bool = False,
              chunk: int = 0, say: Callable[[str], None] = print,
              progress: Callable[..., None] | None = None) -> list[dict[str, Any]]:
    """Every job not finished yet as a task (`client` may be None if all are), a scan
    of more than `chunk` points (if > 0) as chunks and a merge; a line per scan (`say`)
    and per task whose worker was lost, `progress(points_done)` every WATCH_EVERY s with
    the points of the running tasks. One summary per job, in order."""
    results = skipped(jobs, config)
    for i in results:
        was = results[i]["was"]
        say(f"{jobs[i].scan_id}: skipped, {jobs[i].path} is finished already"
            f"{f' ({was}: replay --fill completes it)' if was != 'success' else ''}")
    todo = [i for i in range(len(jobs)) if i not in results]
    if not todo:
        return [results[i] for i in range(len(jobs))]
    from dask.distributed import wait

    from stream.offline.watch import TaskWatch, report_result

    futures = {}
    key_of: dict[Any, list[str]] = {}  # the keys of a scan's tasks (its chunks, its merge)
    for i in todo:
        job, key = jobs[i], f"replay-{jobs[i].scan_id}-{os.getpid()}-{i}"
        cut = bool(chunk) and (job.npoints or 0) > chunk
        if cut and not chunkable(job):
            cut = False
            say(f"{job.name}: replayed whole, not in chunks (chunks are frame ranges: not "
                f"with --first / --last, nor for a file series)")
        if cut:
            fut = submit_chunks(client, job, config, chunk, key, per_point)
            key_of[fut] = [f"{key}-chunk{k}" for k in range(-(-(job.npoints or 0) // chunk))]
        else:
            fut = client.submit(run_job, config.text(), str(config.base), job.inputs,
                                job.options, str(job.path), per_point, job.identity,
                                pure=False,
                                retries=RETRIES, key=key)
        futures[fut] = i
    done_points = 0
    keys = {str(k): jobs[futures[f]].scan_id for f in futures for k in _keys(f, key_of)}
    watch = TaskWatch(client, keys, say)
    pending = set(futures)
    try:
        while pending:
            try:  # a short wait, then the running tasks' points and lost workers
                done = wait(list(pending), timeout=WATCH_EVERY,
                            return_when="FIRST_COMPLETED").done
            except TimeoutError:
                done = set()
            watch.poll()
            for fut in done:
                pending.discard(fut)
                for k in _keys(fut, key_of):
                    watch.finished(str(k))
                done_points += report_result(fut, jobs[futures[fut]], results, futures[fut], say)
            if progress is not None:
                running = watch.running()
                progress(done_points + running, force=bool(done),
                         extra=f"({len(pending)} scan(s) running)" if pending else "")
    finally:
        watch.close()
    return [results[i] for i in range(len(jobs))]


def chunkable(job: ScanJob) -> bool:
    """Chunks are frame ranges (--first/--last): not for a range given already, nor for
    file series, whose --first/--last are file numbers."""
    from stream.sources.files import detect_format

    if job.options.get("first") is not None or job.options.get("last") is not None:
        return False
    fmt = job.options.get("format") or "auto"
    return (fmt if fmt != "auto" else detect_format((job.inputs or ["x::"])[0])) != "fabio"


def submit_chunks(client: Any, job: ScanJob, config: Config, size: int, key: str,
                  per_point: bool = False) -> Any:
    """The chunk tasks of a long scan (a chunk finished on an earlier run is kept) and
    the merge task that links them into the scan's file; the merge's future. A chunk of
    a sparse recording is replayed in blocks, as the whole scan would be."""
    from stream.offline.chunks import chunk_path, chunk_ranges, merge_chunks

    ranges = chunk_ranges(job.npoints or 0, size)
    parts = []
    for k, (a, b) in enumerate(ranges):
        path = chunk_path(job.path, k)
        # its own scan id, so that its log lines say which chunk they are about, and its
        # points named by their ids in the scan (run_job: "scan s_1.1_points80-89 point 83
        # is bad"; in its file they count from 0, the merge shifts them)
        options = {**job.options, "first": a, "last": b, "trajectory": CHUNK_TRAJECTORY,
                   "scan_id": f"{job.scan_id}_points{a}-{b}"}
        identity = source_identity(job.inputs, options)
        done = finished(path, config.text(), identity)  # else made (again)
        parts.append({**done, "file": str(path), "seconds": 0.0} if done else client.submit(
            run_job, config.text(), str(config.base), job.inputs, options, str(path),
            per_point, identity, True, pure=False, retries=RETRIES, key=f"{key}-chunk{k}"))
    return client.submit(merge_chunks, parts, [a for a, _ in ranges], job.start_json,
                         config.text(), str(config.base), str(job.path), job.identity,
                         pure=False,
                         retries=RETRIES, key=f"{key}-merge")


def format_table(results: list[dict[str, Any]], seconds: float) -> str:
    """The summary table: scan, points, cliques, status, time; and the totals."""
    width = max([4, *(len(r["scan_id"]) for r in results)])
    lines = [f"{'scan':<{width}}  {'points':>8}  {'cliques':>8}  {'status':<8}  {'time':>8}"]
    for r in results:
        lines.append(f"{r['scan_id']:<{width}}  {r.get('points', 0):>8}  "
                     f"{r.get('cliques', 0):>8}  {r['status']:<8}  "
                     f"{r.get('seconds', 0.0):>7.1f}s")
    now = [r for r in results if r["status"] not in ("skipped", "not opened")]
    points = sum(r.get("points", 0) for r in now)
    before = sum(r["status"] == "skipped" for r in results)
    bad = len(results) - before - len(now)
    lines.append(f"{len(results)} scan(s), {before} skipped (finished before)"
                 f"{f', {bad} not opened' if bad else ''}; {len(now)} processed now: "
                 f"{points} points in {seconds:.1f} s ({points / max(seconds, 1e-9):.0f} "
                 f"points/s)")
    return "\n".join(lines)


def exit_status(results: list[dict[str, Any]]) -> bool:
    """True if every scan is finished (now or on an earlier run): success or incomplete,
    as for a serial replay's exit code 0."""
    return all(r["status"] in (*FINISHED, "skipped") for r in results)
