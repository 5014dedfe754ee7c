"""The desktop agent: watches for consented games, records them, serves the local page."""
