"""Synthetic scans with known truth: make, write, read and send them."""

from stream.sources.simulate.config import SimConfig
from stream.sources.simulate.file import read_scan, read_truth, write_scan
from stream.sources.simulate.simulation import Simulation, send_scan

__all__ = ["SimConfig", "Simulation", "send_scan", "write_scan", "read_scan", "read_truth"]
