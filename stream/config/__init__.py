"""Configuration: TOML loading and validation, the service tables, PONI geometry."""
