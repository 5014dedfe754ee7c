"""Talking to a collector over HTTP: one client setup, and its answers as plain-word errors."""

from __future__ import annotations

from typing import Any

import httpx

from capture.errors import CaptureError

TIMEOUT = httpx.Timeout(30.0, connect=10.0)


class CollectorError(CaptureError):
    """The collector answered with an error (status, short code and its reason)."""

    def __init__(self, status: int, code: str, reason: str, body: dict[str, Any]) -> None:
        super().__init__(f"the collector refused: {reason}")
        self.status, self.code, self.reason, self.body = status, code, reason, body


class Unreachable(CaptureError):
    """The collector could not be reached (network down, collector stopped)."""


def client(base_url: str, token: str | None = None, *, verify: bool | str = True) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=TIMEOUT,
                        verify=verify, follow_redirects=False)


def call(http: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """Send a request; raise Unreachable on network failure, CollectorError on an error answer."""
    try:
        response = http.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        raise Unreachable(f"cannot reach the collector at {http.base_url} "
                          f"({type(exc).__name__}: {exc})") from None
    if response.status_code >= 500:
        raise Unreachable(f"the collector at {http.base_url} failed (HTTP "
                          f"{response.status_code}); try again later")
    if response.status_code >= 400:
        raise error_from(response)
    return response


def error_from(response: httpx.Response) -> CollectorError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    reason = str(body.get("reason") or f"HTTP {response.status_code}")
    return CollectorError(response.status_code, str(body.get("error", "")), reason, body)
