"""OBS Studio backend: its websocket client, settings, config files and commands."""
