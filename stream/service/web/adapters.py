"""Live-lane messages (stream.service.live.unpack) as the page's plot data: pure functions
of their inputs, no Bokeh, no sockets, so they are tested without a browser.

Every function returns plain dicts of lists / arrays, ready for a ColumnDataSource's
`data` (or `stream`), or the short texts of the page's header.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from stream.store.rows import POINT_STATUS

FAST_MOTORS = ("omega", "rot", "theta", "phi", "chi")  # preferred x axis of a sweep
PEAK_COLUMNS = ("s_raw", "f_raw", "sum_intensity", "npx")  # of a point's peaks on the page


def fast_motor(motors: dict[str, Any], trajectory_fast: str | None = None) -> str:
    """The motor the per-point plot is drawn against ("point" when there is none)."""
    if trajectory_fast and trajectory_fast in motors:
        return trajectory_fast
    for name in FAST_MOTORS:
        if name in motors:
            return name
    return next(iter(motors), "point")


def point_row(body: dict[str, Any], fast: str) -> dict[str, Any]:
    """One `peaks` message as one row of the per-point plot."""
    x = body.get("motors", {}).get(fast, body["point_id"]) if fast != "point" else None
    intensity = body.get("sum_intensity")
    return {"point_id": int(body["point_id"]),
            "x": float(body["point_id"] if x is None else x),
            "npeaks": int(body.get("npeaks", 0)),
            "intensity": float(np.sum(intensity)) if intensity is not None else 0.0,
            "ok": body.get("status", "ok") == "ok"}


def peak_overlay(peaks: dict[str, Any] | None) -> dict[str, list]:
    """The 2D peaks of one point on the frame, in detector pixels (f across, s down); the
    marker's size grows with the peak's pixel count."""
    if not peaks or "s_raw" not in peaks:
        return {"s": [], "f": [], "size": [], "intensity": []}
    npx = np.asarray(peaks.get("npx", np.ones(len(peaks["s_raw"]))), float)
    return {"s": np.asarray(peaks["s_raw"], float).tolist(),
            "f": np.asarray(peaks["f_raw"], float).tolist(),
            "size": (6 + 2 * np.sqrt(npx)).clip(6, 30).tolist(),
            "intensity": np.asarray(peaks.get("sum_intensity", npx), float).tolist()}


def frame_image(body: dict[str, Any]) -> dict[str, Any]:
    """A `frame` message as an image in detector pixels: the binned image (rows down), its
    extent (dw, dh) and the suggested log colour limits (low, high): the 1st and 99.9th
    percentiles of the positive pixels."""
    image = np.asarray(body["image"], np.float32)
    b = int(body.get("bin", 1))
    positive = image[image > 0]
    if positive.size:
        low, high = np.percentile(positive, [1.0, 99.9])
    else:
        low, high = 1.0, 10.0
    low = max(float(low), 1e-3)
    high = max(float(high), low * 10)
    return {"image": image, "dw": image.shape[1] * b, "dh": image.shape[0] * b,
            "low": low, "high": high, "point_id": int(body.get("point_id", -1)), "bin": b}


def log_limits(low: float, high: float) -> tuple[float, float]:
    """The colour limits as the slider shows them (log10), rounded to 0.1."""
    return (math.floor(math.log10(low) * 10) / 10, math.ceil(math.log10(high) * 10) / 10)


def map_index(point_id: int, nfast: int, kind: str) -> tuple[int, int]:
    """(row, column) of a point in a 2D map (snake rows run backwards), as RunningMap."""
    row, col = divmod(int(point_id), nfast)
    if kind == "snake" and row % 2:
        col = nfast - 1 - col
    return row, col


def map_point(row: int, col: int, nfast: int, kind: str) -> int:
    """The point id of a map pixel (the inverse of map_index)."""
    if kind == "snake" and row % 2:
        col = nfast - 1 - col
    return row * nfast + col


def map_layout(body: dict[str, Any]) -> tuple[str, int, int] | None:
    """(kind, rows, nfast) of a 2D `map` message; None for a 1D (sweep) map."""
    values = np.asarray(body["sum_intensity"])
    if values.ndim != 2:
        return None
    return body.get("kind", "grid"), values.shape[0], values.shape[1]


def values_map(values: dict[int, float], layout: tuple[str, int, int]) -> np.ndarray:
    """A per-point quantity (point id -> value) laid out as the map; NaN where none."""
    kind, rows, nfast = layout
    out = np.full((rows, nfast), np.nan, np.float32)
    pids = np.fromiter(values.keys(), np.int64, len(values))
    vals = np.fromiter(values.values(), np.float64, len(values))
    r, c = np.divmod(pids, nfast)
    if kind == "snake":
        c = np.where(r % 2 == 1, nfast - 1 - c, c)
    keep = (pids >= 0) & (r < rows)
    out[r[keep], c[keep]] = vals[keep]
    return out


def map_image(image: np.ndarray) -> dict[str, Any]:
    """A 2D map as image data: one pixel per point, (0, 0) at the first point; the colour
    limits are those of the finite values."""
    finite = image[np.isfinite(image)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if high <= low:
        high = low + 1.0
    return {"image": image, "dw": image.shape[1], "dh": image.shape[0], "low": low,
            "high": high, "filled": int(finite.size)}


def radial_lines(latest: np.ndarray | None, total: np.ndarray | None, n: int,
                 axis: np.ndarray | None = None) -> dict[str, list]:
    """The latest radial pattern and the running average of `n` of them."""
    if latest is None:
        return {"x": [], "latest": [], "average": []}
    latest = np.asarray(latest, float)
    x = np.arange(latest.size, dtype=float) if axis is None else np.asarray(axis, float)
    average = (np.asarray(total, float) / n) if total is not None and n else latest
    return {"x": x.tolist(), "latest": latest.tolist(), "average": average.tolist()}


def clique_rows(body: dict[str, Any], fast: str) -> dict[str, list]:
    """A `cliques` message as table rows: id, fast motor centroid, s, f, intensity, points,
    and each clique's members as (point_id, row in the point's peaks, share) triples."""
    ids = np.asarray(body.get("clique_id", ()), np.int64)
    n = ids.size

    def col(name: str, default: float = math.nan) -> list:
        return np.asarray(body[name], float).tolist() if name in body else [default] * n

    first, last = col("first_point"), col("last_point")
    members: dict[int, list[tuple[int, int, float]]] = {int(c): [] for c in ids}
    if "member_clique_id" in body:
        for c, p, i, w in zip(*(np.asarray(body[k]).tolist() for k in (
                "member_clique_id", "member_point_id", "member_index", "member_share")),
                strict=True):
            members.setdefault(int(c), []).append((int(p), int(i), float(w)))
    return {"clique_id": ids.tolist(), "omega": col(fast), "s": col("s_raw"),
            "f": col("f_raw"), "intensity": col("sum_intensity"), "npx": col("npx"),
            "n2d": col("n2d"),
            "npoints": [int(b - a + 1) if math.isfinite(a) and math.isfinite(b) else 0
                        for a, b in zip(first, last, strict=True)],
            "first_point": first, "last_point": last,
            "members": [members[int(c)] for c in ids]}


def rocking_curve(clique: dict[str, Any], peaks: dict[int, dict[str, np.ndarray]],
                  xs: dict[int, float]) -> dict[str, list]:
    """A clique's rocking curve from its own member 2D peaks (never other spots at the
    same pixels on other rows of a 2D scan): one row per point with members, their summed
    intensity (times each member's share), against the motor; sorted by the motor. Points
    whose peaks the page no longer keeps are left out."""
    total: dict[int, float] = {}
    for pid, row, share in clique.get("members") or ():
        p = peaks.get(pid)
        if p is None or pid not in xs or row >= len(p["sum_intensity"]):
            continue
        total[pid] = total.get(pid, 0.0) + float(p["sum_intensity"][row]) * share
    order = sorted(total, key=lambda pid: (xs[pid], pid))
    return {"x": [float(xs[pid]) for pid in order],
            "intensity": [total[pid] for pid in order], "point_id": order}


def scan_counts(scan: dict[str, Any] | None, npoints_hint: int | None = None) -> dict[str, Any]:
    """linked / received / missing / bad out of npoints, and the fraction done (0..1)."""
    scan = scan or {}
    npoints = scan.get("npoints") or npoints_hint
    linked = int(scan.get("linked", 0))
    return {"linked": linked, "received": int(scan.get("received", 0)),
            "missing": int(scan.get("missing", 0)), "bad": int(scan.get("bad", 0)),
            "npoints": npoints, "lag": int(scan.get("lag", 0)),
            "fraction": min(linked / npoints, 1.0) if npoints else 0.0}


def header(scan_id: str, state: str, counts: dict[str, Any], rates: dict[str, float],
           age: float | None, stale_after: float) -> dict[str, Any]:
    """The header's texts: scan, state, progress (`linked/npoints`), details, live light."""
    of = f"/{counts['npoints']}" if counts.get("npoints") else ""
    live = age is not None and age <= stale_after
    return {
        "scan": scan_id or "-",
        "state": state or "waiting",
        "progress": f"{counts['linked']}{of} linked",
        "details": (f"{counts['received']} received \u00b7 {counts['missing']} missing \u00b7 "
                    f"{counts['bad']} bad \u00b7 lag {counts['lag']} \u00b7 "
                    f"{rates.get('received', 0.0):.0f}/s in \u00b7 "
                    f"{rates.get('linked', 0.0):.0f}/s linked"),
        "fraction": round(float(counts.get("fraction", 0.0)), 4),
        "live": "live" if live else ("stale" if age is not None else "no data"),
        "age": None if age is None else round(age, 1)}


def scan_row(summary: dict[str, Any], npoints: int | None = None) -> dict[str, Any]:
    """A row of the scans table from a scan's end summary (or its running status)."""
    linked = summary.get("linked", 0)
    return {"scan_id": summary.get("scan_id", "?"), "status": summary.get("status", "running"),
            "points": f"{linked}/{npoints}" if npoints else str(linked),
            "cliques": int(summary.get("cliques", 0)), "file": summary.get("file", ""),
            "reason": summary.get("reason") or ""}


def param_change_text(reply: dict[str, Any]) -> str:
    """A control `set` reply as one line: what changed, and from which point it applies."""
    if not reply.get("ok"):
        return f"refused: {reply.get('error')}"
    newest = reply.get("newest_received")
    since = (f"from the first point accepted after point {newest}" if newest is not None
             and newest >= 0 else "from the next scan's first point")
    return f"{reply['node']}.{reply['key']} = {reply['value']!r} (was {reply['old']!r}), {since}"


def param_applied_text(body: dict[str, Any]) -> str:
    """A live `param` message as one line: the change and the point it applies from."""
    return (f"{body.get('node')}.{body.get('key')} = {body.get('value')!r} (was "
            f"{body.get('old')!r}) applies from point {body.get('point_id')} of scan "
            f"{body.get('scan_id')}")


TABLE_STYLE = ("<style>table.ps{border-collapse:collapse;font:12px system-ui,sans-serif;"
               "width:100%}table.ps th{background:#eef2f6;color:#44566a;text-align:left;"
               "font-weight:600;padding:4px 6px;border-bottom:1px solid #cfd8e2}"
               "table.ps td{padding:3px 6px;border-bottom:1px solid #edf1f5;"
               "white-space:nowrap}table.ps tr:nth-child(even) td{background:#f8fafc}"
               "table.ps td.n{text-align:right;font-variant-numeric:tabular-nums}</style>")


def html_table(columns: list[tuple[str, str, str]], rows: list[dict[str, Any]],
               empty: str = "none yet") -> str:
    """Rows as an HTML table: columns are (key, title, format) with format '' for text
    (escaped) or a format spec for numbers ('.2f'); NaN shows as '-'."""
    import html

    head = "".join(f"<th>{html.escape(title)}</th>" for _, title, _ in columns)
    body = []
    for r in rows:
        cells = []
        for key, _, fmt in columns:
            v = r.get(key, "")
            if fmt and isinstance(v, int | float):
                text = "-" if isinstance(v, float) and math.isnan(v) else format(v, fmt)
                cells.append(f'<td class="n">{text}</td>')
            else:
                cells.append(f"<td>{html.escape(str(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    if not body:
        body.append(f'<tr><td colspan="{len(columns)}">{html.escape(empty)}</td></tr>')
    return f'{TABLE_STYLE}<table class="ps"><tr>{head}</tr>{"".join(body)}</table>'


def stored_messages(stored: dict[str, dict[str, np.ndarray]]
                    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A resumed scan's points before its restart, as its file holds them
    (`stream.store.reader.points_before`), as the live lane's messages: a `peaks` body
    per point received (ok or bad), and one `cliques` body of the file's cliques with
    their member 2D peaks (their `clique_id` in the file)."""
    points, peaks = stored["points"], stored["peaks"]
    motors = {k.split("/", 1)[1]: v for k, v in points.items() if k.startswith("motors/")}
    pids = np.asarray(peaks["point_id"], np.int64)
    first = np.searchsorted(pids, points["point_id"])
    last = np.searchsorted(pids, points["point_id"], side="right")
    bodies = []
    for i, pid in enumerate(points["point_id"].tolist()):
        name = POINT_STATUS[int(points["status"][i])]
        if name == "missing":
            continue
        a, b = int(first[i]), int(last[i])
        body = {"point_id": pid, "status": name, "npeaks": b - a,
                "motors": {m: float(v[i]) for m, v in motors.items()}}
        body.update({k: np.asarray(peaks[k][a:b]) for k in PEAK_COLUMNS if k in peaks})
        bodies.append(body)
    cliques = dict(stored["cliques"])
    member = np.asarray(peaks.get("clique_id", np.empty(0)), np.int64) >= 0
    rows = np.arange(pids.size) - np.searchsorted(pids, pids)  # a peak's row in its point's
    cliques.update(member_clique_id=np.asarray(peaks.get("clique_id", pids))[member],
                   member_point_id=pids[member], member_index=rows[member],
                   member_share=np.ones(int(member.sum())))
    return bodies, cliques
