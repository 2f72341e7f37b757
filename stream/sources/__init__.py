"""Where points come from: our ZeroMQ protocol, DECTRIS streams, recorded files, the simulator."""
