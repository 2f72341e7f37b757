"""The runtime: runner, dispatch to workers, pipeline, reorder buffer and collector."""
