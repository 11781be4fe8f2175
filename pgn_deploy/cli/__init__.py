"""Command-line tools: thin layers that parse, call one API function and print."""
