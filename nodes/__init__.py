"""Processing nodes: the registry of kinds a config may name, and the dense-pass fusion."""

from __future__ import annotations

from .correct import Correct
from .decode import Decode
from .dense import DensePass
from .label import Label
from .normalise import Normalise
from .properties import Properties
from .threshold import Threshold

NODES: dict[str, type] = {
    "correct": Correct,
    "normalise": Normalise,
    "threshold": Threshold,
    "label": Label,
    "properties": Properties,
}

__all__ = ["NODES", "fuse", "Correct", "Normalise", "Threshold", "DensePass", "Decode",
           "Label", "Properties"]

# nodes that read a dense frame but not a compressed one: a chain that starts with
# one of them (not fused into a DensePass) gets a Decode node first
NEEDS_DENSE = ("correct", "normalise")


def fuse(chain: list) -> list:
    """Replace each adjacent [correct][normalise]threshold run by one DensePass.

    The run needs at least one of correct or normalise before the threshold.
    The DensePass keeps the original node objects, so later parameter
    changes (threshold.cut) still apply. A chain that then starts with a
    node that needs the dense frame gets a `Decode` first (compressed frames;
    DensePass and Threshold decode them themselves).
    """
    out = []
    i = 0
    while i < len(chain):
        j = i
        parts = {}
        for kind in ("correct", "normalise"):
            if j < len(chain) and getattr(chain[j], "kind", None) == kind:
                parts[kind] = chain[j]
                j += 1
        if parts and j < len(chain) and getattr(chain[j], "kind", None) == "threshold":
            out.append(DensePass(**parts, threshold=chain[j]))
            i = j + 1
        else:
            out.append(chain[i])
            i += 1
    if out and getattr(out[0], "kind", None) in NEEDS_DENSE:
        out.insert(0, Decode())
    return out
