"""Command-line faces (console entry points ``llast-*``): argument parsing over the library."""
