"""What every part of the config package shares: its error and the value sets."""

SOURCE_KINDS = ("zmq", "dectris", "blissdata", "pva")
PATTERN_FIELDS = ("scan_id", "sample", "scan_number", "date", "time")


class ConfigError(ValueError):
    """A configuration that cannot be used; the text names the key and the file."""
