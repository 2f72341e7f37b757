"""The service: daemon, control socket, live lane and their clients."""
