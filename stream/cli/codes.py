"""The exit codes of every peakstream command: 0 done, 1 a scan failed or was aborted,
2 bad usage or config."""

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
