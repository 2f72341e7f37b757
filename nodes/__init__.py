"""Processing nodes: the registry of kinds a config may name, and the dense-pass fusion."""

from __future__ import annotations

from nodes.background import Background
from nodes.correct import Correct
from nodes.decode import Decode
from nodes.dense import DensePass
from nodes.frame import Frame
from nodes.integrate import FusedIntegrate, Integrate
from nodes.label import Label
from nodes.normalise import Normalise
from nodes.properties import Properties
from nodes.ptyd import Ptyd
from nodes.roi import RoiSums
from nodes.threshold import Threshold

NODES: dict[str, type] = {
    "frame": Frame,
    "correct": Correct,
    "normalise": Normalise,
    "integrate": Integrate,
    "background": Background,
    "threshold": Threshold,
    "label": Label,
    "properties": Properties,
    "roi_sums": RoiSums,
    "ptyd": Ptyd,
}

__all__ = ["NODES", "fuse", "Correct", "Normalise", "Threshold", "DensePass", "Decode",
           "Label", "Properties", "Frame", "Integrate", "FusedIntegrate", "Background",
           "RoiSums", "Ptyd"]

# nodes that read a dense frame but not a compressed one: a chain that starts with
# one of them (not fused into a DensePass) gets a Decode node first
NEEDS_DENSE = ("correct", "normalise", "frame", "integrate", "background", "ptyd")


# nodes that work on the dense frame only: after a threshold (sparse frames from there
# on) each would do nothing or fail on every point, so a config may not put one there
# (`stream.config.base.check_chain`); normalise and roi_sums take sparse frames too
DENSE_ONLY = {
    "correct": "its dark and flat would not be applied to the pixels the threshold kept "
               "(only its mask, nodes.sparse)",
    "frame": "a sparse frame cannot be cropped, rotated or rebinned (every point would fail)",
    "integrate": "a sparse frame cannot be integrated (every point would fail)",
    "background": "its cut map is for a threshold after it (every point would fail)",
    "ptyd": "it stores the dense frame (every point would fail)",
}


def _kind(node) -> str | None:
    return getattr(node, "kind", None)


def fuse(chain: list) -> list:
    """Fuse the dense steps that can share a pass over the raw frame.

    * [correct][normalise] threshold -> one DensePass;
    * [correct][normalise] integrate... then threshold or the end of the chain ->
      each integrate applies the corrections inside its own pass on the raw frame
      (`FusedIntegrate`), then the DensePass (or nothing: no other node needs the
      corrected frame); followed by anything else, the corrections stay unfused
      and integrate reads the corrected frame;
    * after a background node nothing is fused: its per-frame cut map is for the
      plain threshold node (the DensePass would not see it); a background node
      with no threshold after it makes no cut map (`to_threshold`).

    The fused nodes keep the original node objects, so later parameter changes
    (threshold.cut) still apply. A chain that then starts with a node that needs
    the dense frame gets a `Decode` first (compressed frames; DensePass and
    Threshold decode them themselves).
    """
    for n, node in enumerate(chain):  # a cut map only where a threshold will take it
        if _kind(node) == "background":
            node.to_threshold = any(_kind(m) == "threshold" for m in chain[n + 1:])
    out = []
    i = 0
    background = False
    while i < len(chain):
        background = background or _kind(chain[i]) == "background"
        j = i
        parts = {}
        for kind in ("correct", "normalise"):
            if j < len(chain) and _kind(chain[j]) == kind:
                parts[kind] = chain[j]
                j += 1
        k = j
        while k < len(chain) and _kind(chain[k]) == "integrate":
            k += 1
        after = _kind(chain[k]) if k < len(chain) else None
        if parts and not background and k > j and after in ("threshold", None):
            out += [FusedIntegrate(node, **parts, flag=after is None) for node in chain[j:k]]
            if after == "threshold":
                out.append(DensePass(**parts, threshold=chain[k]))
            i = k + 1
        elif parts and not background and after == "threshold" and k == j:
            out.append(DensePass(**parts, threshold=chain[j]))
            i = j + 1
        else:
            out.append(chain[i])
            i += 1
    if out and _kind(out[0]) in NEEDS_DENSE:
        out.insert(0, Decode())
    return out
