"""One browser page (a Bokeh document) of the web view: its plots, tables and controls,
refreshed from the server's `LiveState` every `interval` s. Each refresh sends only what
changed since the page's last one (new points streamed, a new frame or map replaced),
so a 500 Hz scan costs the browser a few small updates a second."""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
from bokeh.events import DocumentReady, Tap
from bokeh.layouts import column, row
from bokeh.models import (
    Button,
    ColorBar,
    ColumnDataSource,
    CustomJS,
    Div,
    HoverTool,
    Legend,
    LinearAxis,
    LinearColorMapper,
    LogColorMapper,
    Range1d,
    RangeSlider,
    Select,
    Switch,
    TextInput,
)

from stream.service.web import adapters
from stream.service.web.state import LiveState
from stream.service.web.template import COLOURS, TEMPLATE, H, W
from stream.service.web.template import card as _card
from stream.service.web.template import plot_figure as _figure

CLIQUE_COLUMNS = [("clique_id", "clique", "d"), ("omega", "omega", ".2f"), ("s", "s", ".1f"),
                  ("f", "f", ".1f"), ("intensity", "intensity", ".0f"),
                  ("npoints", "points", "d"), ("npx", "pixels", ".0f")]
SCAN_COLUMNS = [("scan_id", "scan", ""), ("status", "status", ""), ("points", "points", ""),
                ("cliques", "cliques", "d"), ("file", "file", ""), ("reason", "reason", "")]
EMPTY_IMAGE: dict[str, list] = {"image": [], "dw": [], "dh": []}


class Page:
    """The models of one page and what it has already been sent."""

    def __init__(self, doc: Any, state: LiveState, control: Any = None,
                 interval: float = 0.25, live_endpoint: str = "", inbox: Any = None):
        self.doc, self.state, self.control, self.inbox = doc, state, control, inbox
        self.generation = -1
        self.sent: dict[str, int] = {}
        self.header_text = ""
        self.setting_limits = False
        self.clicked: int | None = None
        self.auto_pick = self.user_picked = False  # the clique menu: set by us, by a user
        self._build()
        doc.template = TEMPLATE
        doc.template_variables["live_endpoint"] = live_endpoint
        doc.title = "peakstream live"
        doc.add_periodic_callback(self.update, int(interval * 1000))
        self.update()

    # ------------------------------------------------------------ building

    def _build(self) -> None:
        self.header = Div(text="{}", visible=False)
        js = CustomJS(args={"h": self.header}, code="window.psUpdate && psUpdate(h.text)")
        self.header.js_on_change("text", js)
        self.doc.js_on_event(DocumentReady, js)

        self.points = ColumnDataSource({k: [] for k in ("point_id", "x", "npeaks",
                                                        "intensity")})
        pp = _figure("2D peaks and summed intensity per point")
        counts = pp.scatter("x", "npeaks", source=self.points, size=5,
                            color=COLOURS["npeaks"])
        pp.y_range.renderers = [counts]  # the right axis has its own range
        pp.extra_y_ranges = {"intensity": Range1d(0, 1)}
        pp.add_layout(LinearAxis(y_range_name="intensity", axis_label="summed intensity"),
                      "right")
        sums = pp.scatter("x", "intensity", source=self.points, size=5, marker="triangle",
                          color=COLOURS["intensity"], y_range_name="intensity")
        pp.yaxis[0].axis_label = "2D peaks"
        pp.add_layout(Legend(items=[("2D peaks", [counts]), ("summed intensity", [sums])],
                             orientation="horizontal", border_line_alpha=0), "above")
        pp.add_tools(HoverTool(tooltips=[("point", "@point_id"), ("x", "@x"),
                                         ("peaks", "@npeaks"), ("intensity", "@intensity")]))
        self.points_fig = pp

        self.frame = ColumnDataSource(EMPTY_IMAGE)
        self.overlay = ColumnDataSource(adapters.peak_overlay(None))
        self.clicked_overlay = ColumnDataSource(adapters.peak_overlay(None))
        self.frame_mapper = LogColorMapper(palette="Inferno256", low=1, high=1000,
                                           nan_color="#000000")
        fp = _figure("latest frame: none yet",
                     match_aspect=True, x_axis_label="f (px)", y_axis_label="s (px)")
        fp.y_range.flipped = True
        fp.image("image", x=0, y=0, dw="dw", dh="dh", source=self.frame,
                 color_mapper=self.frame_mapper)
        fp.scatter("f", "s", size="size", source=self.overlay, fill_alpha=0,
                   line_color="#39ff14", line_width=1.5)
        fp.scatter("f", "s", size="size", source=self.clicked_overlay, fill_alpha=0,
                   marker="square", line_color="#00e5ff", line_width=1.5)
        fp.add_layout(ColorBar(color_mapper=self.frame_mapper, width=10), "right")
        self.limits = RangeSlider(start=-1, end=6, value=(0, 3), step=0.1, width=W - 160,
                                  title="colour limits (log10 counts)")
        self.limits.js_on_change("value", CustomJS(args={"m": self.frame_mapper}, code="""
            m.low = Math.pow(10, cb_obj.value[0]); m.high = Math.pow(10, cb_obj.value[1]);"""))
        self.limits.on_change("value", self._limits_moved)
        self.auto = Switch(active=True)
        self.frame_fig = fp

        self.map = ColumnDataSource(EMPTY_IMAGE)
        self.map_mapper = LinearColorMapper(palette="Viridis256", nan_color="#f0f0f0")
        mp = _figure("map: none yet", x_axis_label="fast (point in row)",
                     y_axis_label="slow (row)", tools="pan,wheel_zoom,box_zoom,reset,save,tap")
        mp.image("image", x=0, y=0, dw="dw", dh="dh", source=self.map,
                 color_mapper=self.map_mapper)
        mp.add_layout(ColorBar(color_mapper=self.map_mapper, width=10), "right")
        mp.on_event(Tap, self._map_tapped)
        self.map_fig = mp
        self.map_what = Select(title="map of", value="2D peak intensity",
                               options=["2D peak intensity", "peak count"], width=200)
        self.map_what.on_change("value", lambda attr, old, new: self._send_map(force=True))
        self.clicked_text = Div(text="", width=W - 220)

        self.radial = ColumnDataSource(adapters.radial_lines(None, None, 0))
        self.radial_clicked = ColumnDataSource({"x": [], "y": []})
        rp = _figure("radial pattern",
                     x_axis_label="radial bin", y_axis_label="intensity")
        rp.line("x", "latest", source=self.radial, color=COLOURS["latest"],
                legend_label="latest point")
        rp.line("x", "average", source=self.radial, color=COLOURS["average"], line_width=2,
                legend_label="running average")
        rp.line("x", "y", source=self.radial_clicked, color=COLOURS["clicked"],
                line_dash="dashed", legend_label="clicked point")
        rp.legend.location = "top_right"
        rp.visible = False  # until a point brings a radial pattern
        self.radial_fig = rp
        self.radial_note = Div(text="<b>radial pattern</b>: none, the chain has no "
                                    "<code>integrate</code> node", width=W)

        self.cliques = Div(text=adapters.html_table(CLIQUE_COLUMNS, []), width=W,
                           height=H - 40, styles={"overflow-y": "auto", "width": f"{W}px"})
        self.clique_pick = Select(title="rocking curve of clique", options=[], width=W - 20)
        self.clique_pick.on_change("value", self._clique_picked)
        self.clique_rows: dict[str, dict[str, Any]] = {}
        self.rocking = ColumnDataSource({"x": [], "intensity": [], "point_id": []})
        rc = _figure("rocking curve: pick a clique", y_axis_label="intensity")
        rc.line("x", "intensity", source=self.rocking, color=COLOURS["intensity"], width=2)
        rc.scatter("x", "intensity", source=self.rocking, color=COLOURS["intensity"], size=6)
        rc.add_tools(HoverTool(tooltips=[("point", "@point_id"), ("intensity", "@intensity")]))
        self.rocking_fig = rc

        self.scans = Div(text=adapters.html_table(SCAN_COLUMNS, []), width=W, height=110,
                         styles={"overflow-y": "auto", "width": f"{W}px"})

        heading = {"font-size": "14px", "font-weight": "600", "color": "#1d2b3a"}
        scans = _card(Div(text="scans so far", styles=heading), self.scans)
        grid = column(
            row(_card(self.points_fig), _card(self.frame_fig, row(
                self.limits, Div(text="auto"), self.auto))),
            row(_card(self.map_fig, row(self.map_what, self.clicked_text)),
                _card(self.radial_fig, self.radial_note)),
            row(_card(Div(text="last closed cliques (newest first)", styles=heading),
                      self.cliques), _card(self.rocking_fig, self.clique_pick)),
            row(scans, self._controls()),
            styles={"padding": "10px 14px", "gap": "10px"})
        self.doc.add_root(self.header)
        self.doc.add_root(grid)

    def _controls(self) -> Any:
        heading = {"font-size": "14px", "font-weight": "600", "color": "#1d2b3a"}
        self.changes, self.nchanges = Div(text="", width=W - 20), 0  # every change, its point
        if self.control is None:
            return _card(Div(text="controls", styles=heading), Div(
                text="Off: start <code>peakstream web --allow-control</code> (or "
                     "<code>[web] allow_control = true</code>) to change parameters here.",
                width=W - 20), self.changes)
        options = self.control.settable()
        self.param = Select(title="parameter", options=options,
                            value=options[0] if options else "", width=220)
        self.value = TextInput(title="new value", width=140)
        apply = Button(label="apply from the next point", button_type="primary", width=190)
        apply.on_click(self._apply)
        return _card(Div(text="controls", styles=heading), row(self.param, self.value, apply),
                     self.changes)

    # ------------------------------------------------------------ callbacks

    def _limits_moved(self, attr: str, old: Any, new: Any) -> None:
        if not self.setting_limits:
            self.auto.active = False

    def _map_tapped(self, event: Any) -> None:
        view = self.state.scan
        layout = view.layout() if view else None
        if layout is None or event.x is None or event.y is None:
            return
        kind, rows, nfast = layout
        r, c = int(np.floor(event.y)), int(np.floor(event.x))
        if not (0 <= r < rows and 0 <= c < nfast):
            return
        self.clicked = adapters.map_point(r, c, nfast, kind)
        self._send_clicked()

    def _send_clicked(self) -> None:
        view, pid = self.state.scan, self.clicked
        if view is None or pid is None:
            return
        peaks = view.peaks.get(pid)
        self.clicked_overlay.data = adapters.peak_overlay(peaks)
        radial = view.radials.get(pid)
        self.radial_clicked.data = ({"x": list(range(radial.size)), "y": radial.tolist()}
                                    if radial is not None else {"x": [], "y": []})
        n = len(peaks["s_raw"]) if peaks else 0
        self.clicked_text.text = (f"clicked point <b>{pid}</b>: {n} 2D peaks"
                                  f"{'' if radial is not None else ' (no radial pattern)'}"
                                  if pid in view.seen else f"point {pid}: not received yet")

    def _clique_picked(self, attr: str, old: Any, new: Any) -> None:
        self.user_picked = self.user_picked or not self.auto_pick  # the user's pick stays
        self._send_rocking()

    def _send_rocking(self) -> None:
        view, clique = self.state.scan, self.clique_rows.get(self.clique_pick.value)
        if view is None or clique is None:
            self.rocking.data = {"x": [], "intensity": [], "point_id": []}
            self.rocking_fig.title.text = "rocking curve: pick a clique"
            return
        self.rocking.data = adapters.rocking_curve(clique, view.peaks, view.xs)
        self.rocking_fig.title.text = (f"rocking curve of clique {clique['clique_id']} "
                                       f"(its member 2D peaks)")
        self.rocking_fig.xaxis[0].axis_label = view.fast or "point"

    def _apply(self) -> None:
        node, _, key = self.param.value.partition(".")
        reply = self.control.set(node, key, self.value.value)
        self.state.add_change(adapters.param_change_text(reply))
        self._send_changes()

    # ------------------------------------------------------------ refresh

    def update(self) -> None:
        """Send what changed since the last refresh (what the live lane brought since the
        last drain first: one loop runs every page and the drains, so no lock)."""
        if self.inbox is not None:
            self.state.drain(self.inbox)
        view = self.state.scan
        if self.state.generation != self.generation:
            self.generation, self.sent, self.clicked = self.state.generation, {}, None
            self._reset(view)
        if view is not None:
            self._send_points(view)
            self._send_frame(view)
            self._send_map()
            self._send_radial(view)
            self._send_cliques(view)
        self._send_scans()
        self._send_header(view)
        self._send_changes()

    def _send_changes(self) -> None:
        if self.state.nchanges != self.nchanges:
            self.nchanges = self.state.nchanges
            self.changes.text = "<br>".join(self.state.changes[-8:])

    def _reset(self, view: Any) -> None:
        self.points.data = {k: [] for k in self.points.data}
        self.cliques.text = adapters.html_table(CLIQUE_COLUMNS, [])
        self.clique_rows = {}
        self.auto_pick, self.user_picked = True, False  # a new scan: the newest again
        self.clique_pick.update(options=[], value="")
        self.auto_pick = False
        self.rocking.data = {"x": [], "intensity": [], "point_id": []}
        for src in (self.overlay, self.clicked_overlay):
            src.data = adapters.peak_overlay(None)
        self.radial_clicked.data = {"x": [], "y": []}
        self.clicked_text.text = ""
        if view is not None:
            self.points_fig.xaxis[0].axis_label = view.fast or "point"

    def _changed(self, view: Any, what: str) -> bool:
        if self.sent.get(what) == view.version[what]:
            return False
        self.sent[what] = view.version[what]
        return True

    def _send_points(self, view: Any) -> None:
        n = self.sent.get("npoints", 0)
        if len(view.rows["point_id"]) == n:
            return
        self.points.stream({k: v[n:] for k, v in view.rows.items()})
        self.sent["npoints"] = len(view.rows["point_id"])
        self.points_fig.xaxis[0].axis_label = view.fast or "point"
        self.points_fig.extra_y_ranges["intensity"].update(
            start=0, end=max(view.max_intensity * 1.05, 1.0))

    def _send_frame(self, view: Any) -> None:
        if view.frame is None or not self._changed(view, "frame"):
            return
        img = adapters.frame_image(view.frame)
        self.frame.data = {"image": [img["image"]], "dw": [img["dw"]], "dh": [img["dh"]]}
        self.overlay.data = adapters.peak_overlay(view.peaks.get(img["point_id"]))
        self.frame_fig.title.text = (f"frame of point {img['point_id']} (binned {img['bin']}x"
                                     f"{img['bin']}); green: its peaks, cyan: a clicked "
                                     f"point's")
        if self.auto.active:
            lo, hi = adapters.log_limits(img["low"], img["high"])
            self.setting_limits = True
            self.limits.update(start=min(lo, self.limits.start),
                               end=max(hi, self.limits.end), value=(lo, hi))
            self.setting_limits = False
            self.frame_mapper.update(low=10 ** lo, high=10 ** hi)

    def _send_map(self, force: bool = False) -> None:
        view = self.state.scan
        if view is None or view.map is None:
            return
        options = ["2D peak intensity", *sorted(view.scalars)]
        if options != self.map_what.options:
            self.map_what.options = options
        what = self.map_what.value
        key = (view.version["map"], what, 0 if what == options[0] else view.version["points"])
        if not force and self.sent.get("map") == key:
            return
        self.sent["map"] = key
        layout = view.layout()
        if layout is None:
            self.map_fig.title.text = "map: a 1D scan (see the per-point plot)"
            return
        if what == options[0]:
            image = np.asarray(view.map["sum_intensity"], np.float32)
        else:
            image = adapters.values_map(view.scalars.get(what, {}), layout)
        m = adapters.map_image(image)
        self.map.data = {"image": [m["image"]], "dw": [m["dw"]], "dh": [m["dh"]]}
        self.map_mapper.update(low=m["low"], high=m["high"])
        self.map_fig.title.text = (f"map of {what}: {m['filled']} of "
                                   f"{image.size} points (click a pixel)")

    def _send_radial(self, view: Any) -> None:
        if not view.radial_n or not self._changed(view, "radial"):
            return
        self.radial.data = adapters.radial_lines(view.radial_latest, view.radial_total,
                                                 view.radial_n)
        self.radial_fig.visible, self.radial_note.visible = True, False
        self.radial_fig.title.text = f"radial pattern ({view.radial_name}): latest point " \
                                     f"and the average of {view.radial_n}"

    def _send_cliques(self, view: Any) -> None:
        if not self._changed(view, "cliques"):
            return
        rows = list(view.cliques)[::-1]
        self.cliques.text = adapters.html_table(CLIQUE_COLUMNS, rows[:100])
        self.clique_rows = {f"{r['clique_id']}: {view.fast or 'point'} {r['omega']:.2f}, "
                            f"s {r['s']:.1f}, f {r['f']:.1f}": r for r in rows}
        picked, newest = self.clique_pick.value, next(iter(self.clique_rows), "")
        self.clique_pick.options = list(self.clique_rows)
        self.user_picked = self.user_picked and picked in self.clique_rows
        if not self.user_picked and picked != newest:  # the newest, until one is picked
            self.auto_pick, self.clique_pick.value, self.auto_pick = True, newest, False
        elif picked:
            self._send_rocking()

    def _send_scans(self) -> None:
        text = adapters.html_table(SCAN_COLUMNS, list(self.state.scans.values())[::-1])
        if text != self.scans.text:
            self.scans.text = text

    def _send_header(self, view: Any) -> None:
        h = self.state.header()
        h["stale_after"] = self.state.stale_after
        h["last"] = "-"
        h["frame"] = "-"
        h["map"] = "-"
        h["cliques"] = view.ncliques if view is not None else 0
        if view is not None and view.rows["point_id"]:
            h["last"] = f"{view.rows['point_id'][-1]}: {view.rows['npeaks'][-1]} peaks"
        if view is not None and view.frame is not None:
            h["frame"] = f"point {view.frame.get('point_id')}"
        if view is not None and view.map is not None:
            filled = int(np.isfinite(np.asarray(view.map["sum_intensity"])).sum())
            h["map"] = f"{filled} points"
        h["beat"] = int(time.monotonic())
        text = json.dumps(h, sort_keys=True)
        if text != self.header_text:
            self.header_text = text
            self.header.text = text
