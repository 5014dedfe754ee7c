"""Frame sizes given as text: 'WxH' with positive, even width and height (as H.264 needs)."""

from __future__ import annotations


def parse_size(text: str) -> tuple[int, int]:
    """(width, height) from 'WxH'; ValueError with a plain message otherwise."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"{text!r} is not WxH (e.g. 1280x720)") from None
    if width <= 0 or height <= 0 or width % 2 or height % 2:
        raise ValueError(f"{text!r}: width and height must be positive and even")
    return width, height
