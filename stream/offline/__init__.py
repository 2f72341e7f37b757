"""Work on recorded scans and output files: block replay, relink, export, rocking curves, stats."""
