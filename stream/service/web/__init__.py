"""The live view in the browser (`peakstream web`, docs/web.md): adapters (live messages
as plot data), state (what the server keeps), page (a Bokeh document), server (the Bokeh
server and the CLI command), process (the daemon's child process). Bokeh is imported
only by page and server (the optional extra `[web]`)."""
