"""The incremental linker: 2D peaks of neighbouring points joined into cliques."""
