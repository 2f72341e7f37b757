"""Maps of 2D scans: the map grid and writer, building from an output, rendering, diffmap."""
