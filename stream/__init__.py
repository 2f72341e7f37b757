"""peakstream runtime: how points arrive, flow, are collected and stored."""

__version__ = "0.1.0"
