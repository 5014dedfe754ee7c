"""`capture demo`: record the bundled game played by a script, export and verify a dataset."""

from __future__ import annotations

from pathlib import Path

import click

from capture.cli._common import say


@click.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("capture-demo"), show_default=True,
              help="Where the demo puts its data dir, session and dataset.")
@click.option("--duration", type=float, default=20.0, show_default=True)
@click.option("--display", default=None,
              help="Use this X display instead of starting a private Xvfb.")
def demo(out: Path, duration: float, display: str | None) -> None:
    """Record a bundled game driven by a scripted player, export and verify a dataset.

    Runs on a private Xvfb (so it never moves your own mouse) under a demo consent that is
    marked synthetic, in its own data dir under --out.
    """
    from capture.demo.run import run_demo

    run_demo(out, duration_s=duration, display=display, say=say)
