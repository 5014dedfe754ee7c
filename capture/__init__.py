"""capture: consent-first gameplay recorder producing frame-aligned video + action datasets."""

__version__ = "0.1.0"
