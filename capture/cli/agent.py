"""`capture agent`: run the desktop agent and its local page."""

from __future__ import annotations

import sys
from typing import Any

import click

from capture import video
from capture.cli._common import say, stop_on_signals
from capture.cli.obs import obs_connection_options, obs_settings_from


@click.command()
@click.option("--backend", type=click.Choice(video.backend_names()), default=None,
              help="Video backend (default: [agent] backend in the config file, else builtin).")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="Port of the local page on 127.0.0.1 (default: any free port).")
@click.option("--no-browser", is_flag=True, help="Do not open the page in the browser.")
@click.option("--display", default=None, help="X display to watch (default: $DISPLAY).")
@obs_connection_options
@click.option("--print-config", is_flag=True,
              help="Print a config file with every agent setting documented, and exit.")
def agent(backend: str | None, port: int | None, no_browser: bool, display: str | None,
          print_config: bool, **obs_options: Any) -> None:
    """Run the desktop agent: records consented games only while you play them.

    It waits for a game you consented to, records it while its window has focus (pausing when
    another window has focus or after a while without input), splits long play into segments,
    checks each segment right after it is recorded, and stops when the game exits. It serves a
    page on 127.0.0.1 (a one-time sign-in address is printed on a line of its own; press Enter
    for a new one) to give or withdraw consent and to see, check and delete recordings. Stop it
    with Ctrl-C.
    """
    from dataclasses import replace

    from capture.agent.settings import documented_config, load_agent_settings

    if print_config:
        click.echo(documented_config(), nl=False)
        return
    from capture.agent.agent import Agent
    from capture.agent.web import WebServer

    settings = load_agent_settings()
    settings = replace(settings, backend=backend or settings.backend,
                       port=settings.port if port is None else port,
                       open_browser=settings.open_browser and not no_browser,
                       display=display or settings.display)
    obs_settings = obs_settings_from(obs_options) if settings.backend == "obs" else None
    the_agent = Agent(settings, say=say, video_options=obs_settings)
    server = WebServer(the_agent, port=settings.port)
    server.start()
    try:
        click.echo(server.login_url())
        say(f"Open the address above (it works once, within a minute); then {server.url} "
            "is the page. Press Enter here for a new address.")
        server.hand_out_login_urls(sys.stdin, click.echo)
        if settings.open_browser:
            server.open_browser()
        the_agent.run(stop_on_signals())
    finally:
        server.stop()
