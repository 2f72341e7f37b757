"""The command line: argument parsing (main) and the commands behind it."""
