"""Processing nodes: the registry of kinds a config may name, and the dense-pass fusion."""

from __future__ import annotations

from .correct import Correct
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

__all__ = ["NODES", "fuse", "Correct", "Normalise", "Threshold", "DensePass", "Label",
           "Properties"]


def fuse(chain: list) -> list:
    """Replace each adjacent [correct][normalise]threshold run by one DensePass.

    The run needs at least one of correct or normalise before the threshold.
    The DensePass keeps the original node objects, so later parameter
    changes (threshold.cut) still apply.
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
    return out
