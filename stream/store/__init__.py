"""The HDF5 scan file: columns and rows, checkpoints (journal), state, resume, naming, reader."""
