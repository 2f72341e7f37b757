"""The page around the Bokeh plots: a header of plain HTML elements with stable ids
(`ps-scan`, `ps-state`, `ps-progress`, `ps-bar`, `ps-details`, `ps-live`, `ps-last`,
`ps-frame`, `ps-map`, `ps-cliques`) that scripts, tests and screen readers find without entering
Bokeh's shadow DOM, kept current by `psUpdate` from the document's header model."""

from __future__ import annotations

from typing import Any

from bokeh.layouts import column
from bokeh.plotting import figure
from jinja2 import Template

W, H = 560, 330  # a plot's size in px
COLOURS = {"npeaks": "#1f77b4", "intensity": "#e6550d", "latest": "#3182bd",
           "average": "#31a354", "clicked": "#d62728"}


def plot_figure(title: str, tools: str = "pan,wheel_zoom,box_zoom,reset,save", **kw: Any
                ) -> figure:
    """A plot of the page, in its look."""
    p = figure(title=title, width=W, height=H, toolbar_location="right", tools=tools, **kw)
    p.title.text_font_size = "13px"
    p.border_fill_color = "#ffffff"
    p.background_fill_color = "#fbfcfd"
    p.grid.grid_line_color = "#e3e8ee"
    return p


def card(*children: Any) -> Any:
    """Plots and widgets on a white card."""
    return column(*children, styles={"background": "#ffffff", "padding": "8px",
                                     "border-radius": "6px",
                                     "box-shadow": "0 1px 3px rgba(0,0,0,.12)"})


# psUpdate(json) is called by the document (CustomJS) with the header's texts; a watchdog
# turns the live light stale when the server has not spoken for `stale` ms. Every 2 s the
# page asks ps-alive: when another web view answers (restarted), the page reloads, whether
# or not Bokeh's own reconnect (5 tries) found the new server.
TEMPLATE = Template("""{% extends base %}
{% block title %}peakstream live{% endblock %}
{% block postamble %}
<style>
  body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
         background: #eef1f5; color: #1d2733; }
  .ps-head { display: flex; align-items: center; gap: 28px; padding: 10px 22px;
             background: #1d2b3a; color: #f4f7fa; box-shadow: 0 2px 6px rgba(0,0,0,.25); }
  .ps-brand { font-size: 19px; font-weight: 650; letter-spacing: .3px; }
  .ps-brand span { color: #7fc4ff; font-weight: 400; }
  .ps-field { display: flex; flex-direction: column; min-width: 90px; }
  .ps-field label { font-size: 10px; text-transform: uppercase; letter-spacing: 1px;
                    color: #9db2c7; }
  .ps-field > span { font-size: 16px; font-weight: 600; white-space: nowrap; }
  .ps-grow { flex: 1; }
  .ps-track { height: 8px; background: #34475c; border-radius: 4px; margin: 4px 0 3px;
              overflow: hidden; }
  #ps-bar { height: 100%; width: 0%; background: linear-gradient(90deg,#3fa7ff,#53d3a0);
            transition: width .3s; }
  #ps-details { font-size: 12px; color: #c3d1de; }
  .ps-live { padding: 5px 14px; border-radius: 14px; font-weight: 700; font-size: 13px;
             background: #5b6b7c; color: #fff; }
  .ps-live.live { background: #1f9d55; }
  .ps-live.live::before { content: "\\25CF  "; }
  .ps-live.stale { background: #c0392b; }
  .ps-sub { display: flex; gap: 26px; padding: 5px 22px; font-size: 12px; color: #4b5b6b;
            background: #dde3ea; }
  .ps-sub b { color: #1d2733; }
</style>
<script>
  window.psLastUpdate = Date.now();
  window.psUpdate = function (text) {
    let h; try { h = JSON.parse(text); } catch (e) { return; }
    window.psLastUpdate = Date.now();
    window.psStale = (h.stale_after || 3) * 1000 + 2000;
    const set = (id, v) => { const e = document.getElementById(id);
                             if (e && e.textContent !== String(v)) e.textContent = v; };
    set("ps-scan", h.scan); set("ps-state", h.state); set("ps-progress", h.progress);
    set("ps-details", h.details); set("ps-last", h.last); set("ps-frame", h.frame);
    set("ps-map", h.map); set("ps-cliques", h.cliques);
    const bar = document.getElementById("ps-bar");
    if (bar) bar.style.width = (100 * h.fraction).toFixed(1) + "%";
    const live = document.getElementById("ps-live");
    if (live) { live.textContent = h.live; live.className = "ps-live " + h.live; }
  };
  setInterval(function () {
    if (Date.now() - window.psLastUpdate > (window.psStale || 5000)) {
      const live = document.getElementById("ps-live");
      if (live) { live.textContent = "stale"; live.className = "ps-live stale"; }
    }
  }, 1000);
  setInterval(function () {
    fetch("ps-alive", {cache: "no-store"}).then(r => r.ok ? r.text() : null)
      .then(t => { if (t && "{{ instance }}" && t !== "{{ instance }}")
                     window.location.reload(); })
      .catch(() => {});
  }, 2000);
</script>
{% endblock %}
{% block inner_body %}
<div class="ps-head">
  <div class="ps-brand">peakstream <span>live</span></div>
  <div class="ps-field"><label>scan</label><span id="ps-scan">-</span></div>
  <div class="ps-field"><label>state</label><span id="ps-state">waiting</span></div>
  <div class="ps-field ps-grow"><label>points linked</label>
    <span id="ps-progress">0 linked</span>
    <div class="ps-track"><div id="ps-bar"></div></div>
    <span id="ps-details"></span></div>
  <div id="ps-live" class="ps-live">no data</div>
</div>
<div class="ps-sub"><span>latest point <b id="ps-last">-</b></span>
  <span>frame <b id="ps-frame">-</b></span><span>map <b id="ps-map">-</b></span>
  <span>cliques closed <b id="ps-cliques">0</b></span>
  <span>live lane <b>{{ live_endpoint }}</b></span></div>
{{ super() }}
{% endblock %}
""")
