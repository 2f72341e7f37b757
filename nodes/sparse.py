"""Which nodes act on a frame that arrives sparse, and what the others leave undone.

A sparse frame (our own output or an ImageD11 sparse file replayed, a frame
sent with `encoding: "sparse"`) has no dense frame. Its pixels go through the
nodes of the chain that can act on pixels alone, in the chain's order:

* threshold: keeps the pixels above its cut or cut_map (raised past
  max_pixels and flagged as for a frame);
* normalise: scales the intensities, unless the recording's pixels are
  normalised already (our own output of a chain with a normalise node: the
  start's meta `sparse_normalised`), which would scale them twice;
* correct: its mask drops the masked pixels; its dark and flat are not
  applied (the pixels were cut before any dark came off);
* roi_sums after a threshold: sums the kept pixels, as on a frame;
* label, properties: as on a frame.

The others need the dense frame (frame, background, integrate, ptyd, and a
roi_sums before the threshold, whose sums are of the whole frame): they are
not run. `sparse_chain` says which run and words what is left undone, for
the warning and the file's event at the first sparse frame of a scan.
"""

from __future__ import annotations

from typing import Any

SPARSE_NORMALISED = "sparse_normalised"  # start meta: {"counter", "reference"} applied already


def sparse_chain(nodes: list[Any], meta: dict[str, Any]) -> tuple[list[Any], list[str]]:
    """(the nodes to run on a sparse frame, in order; what the chain does not do to one)."""
    run: list[Any] = []
    notes: list[str] = []
    thresholded = False
    normalised = meta.get(SPARSE_NORMALISED)
    for node in nodes:
        kind = node.kind
        if kind == "correct":
            if any(getattr(node, k, None) is not None for k in ("dark", "flat", "flatfield")):
                notes.append("correct: dark and flat are not applied to sparse pixels "
                             "(its mask is: masked pixels are dropped)")
            if node.mask is not None:
                run.append(node)
        elif kind == "normalise" and normalised:
            notes.append(f"normalise: the recording's pixels are normalised already "
                         f"({_normalised(normalised)}); not scaled again")
        elif kind in ("threshold", "normalise", "label", "properties") or (
                kind == "roi_sums" and thresholded):
            run.append(node)
        elif kind == "roi_sums":
            notes.append("roi_sums (before the threshold): its sums are of the whole frame; "
                         "not run on sparse frames")
        else:
            notes.append(f"{kind}: needs the dense frame; not run on sparse frames")
        thresholded = thresholded or kind == "threshold"
    return run, notes


def _normalised(value: Any) -> str:
    if isinstance(value, dict):
        return f"counter {value.get('counter')!r}, reference {value.get('reference')!r}"
    return str(value)


def normalised_by(node_tables: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The normalisation a config's `[[node]]` tables applied to the pixels it kept, or
    None (for the start's meta of a replay of its output: `SPARSE_NORMALISED`)."""
    for table in node_tables:
        if isinstance(table, dict) and table.get("kind") == "normalise":
            return {"counter": table.get("counter", "monitor"),
                    "reference": float(table.get("reference", 1.0))}
    return None
