"""The wire: the message codec (PROTOCOL.md) and ZeroMQ socket helpers."""
