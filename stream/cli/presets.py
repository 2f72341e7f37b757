"""The configs shipped with peakstream (configs/NAME.toml), usable as --preset NAME."""

from __future__ import annotations

from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def presets() -> list[str]:
    """The names of the shipped configs."""
    return sorted(p.stem for p in CONFIGS.glob("*.toml")) if CONFIGS.is_dir() else []
