"""The `capture` command line (click): the group in main.py, one module per command group."""

from capture.cli.main import cli, main

__all__ = ["cli", "main"]
