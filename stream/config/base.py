"""What every part of the config package shares: its error, the value sets, and which
node parameters take arrays."""

import types
import typing
from typing import Any

SOURCE_KINDS = ("zmq", "dectris", "blissdata", "pva")
PATTERN_FIELDS = ("scan_id", "sample", "scan_number", "date", "time")


class ConfigError(ValueError):
    """A configuration that cannot be used; the text names the key and the file."""


def check_chain(nodes: list[dict], origin: str) -> list[dict]:
    """The chain must end in 2D peaks, a label node then a properties node: the linker,
    the collector and the output file are built on them. Without, every point failed
    later (the warm-up's "linker: point 0 needs a labelled frame and its peaks", or
    each point written bad, "no sparse frame"). No node that works on the dense frame
    only may come after the first threshold (`nodes.DENSE_ONLY`): a correct node there
    did nothing, silently."""
    kinds = [t["kind"] for t in nodes]
    label = kinds.index("label") if "label" in kinds else -1
    props = kinds.index("properties") if "properties" in kinds else -1
    if label < 0 or props < label:
        raise ConfigError(
            f"{origin}: the [[node]] chain ({', '.join(kinds) or 'empty'}) makes no 2D peaks: "
            f"it must hold a label node and, after it, a properties node (for detector "
            f"frames after a threshold: threshold, label, properties), on which the linker "
            f"and the output file are built; other nodes (integrate, roi_sums, ...) go "
            f"before them")
    threshold = kinds.index("threshold") if "threshold" in kinds else -1
    if threshold >= 0:
        from nodes import DENSE_ONLY  # the node kinds and what each needs are nodes' own

        for i, kind in enumerate(kinds[threshold + 1:], threshold + 1):
            if kind in DENSE_ONLY:
                raise ConfigError(
                    f"{origin}: [[node]] #{i + 1} ({kind}) comes after the threshold "
                    f"([[node]] #{threshold + 1}), from where frames are sparse, and {kind} "
                    f"works on the dense frame only: {DENSE_ONLY[kind]}; put it before the "
                    f"threshold")
    return nodes


def wants_array(hint: Any) -> bool:
    """Does a node parameter of this type hint take an array (a file name in TOML)?"""
    import numpy as np  # (not at import: a control client reads ConfigError without it)

    return np.ndarray in members(hint)


def members(hint: Any) -> tuple:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return typing.get_args(hint)
    return (hint,)
