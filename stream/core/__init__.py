"""The shared vocabulary: items, messages, scan, node contract, columns, trajectories.

It imports nothing else from stream; nodes/ may import only this package.
"""
