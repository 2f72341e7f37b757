"""The configs shipped with peakstream (configs/NAME.toml), usable as --preset NAME."""

from __future__ import annotations

import sys
from pathlib import Path


def _configs() -> Path:
    """configs/ of the checkout (an editable install), else as a plain install puts it
    (PREFIX/share/peakstream/configs, pyproject's data-files)."""
    checkout = Path(__file__).resolve().parents[2] / "configs"
    return checkout if checkout.is_dir() else Path(sys.prefix) / "share" / "peakstream" / "configs"


CONFIGS = _configs()


def presets() -> list[str]:
    """The names of the shipped configs."""
    return sorted(p.stem for p in CONFIGS.glob("*.toml")) if CONFIGS.is_dir() else []
