"""Helpers shared by the command modules: signals, scope parsing, session references."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import click

from capture.consent.records import RETIRED_SCOPE_KINDS, SCOPE_KINDS


def say(message: str) -> None:
    """Progress and notes go to stderr, so stdout stays for what a script reads."""
    click.echo(message, err=True)


def stop_on_signals() -> threading.Event:
    """An event set by Ctrl-C or SIGTERM, so recordings finalise cleanly."""
    stop = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        click.echo(f"\n{signal.Signals(signum).name}: stopping and finalising ...", err=True)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def parse_record_scope(value: str) -> frozenset[str]:
    """The kinds `capture record --scope` asks for; a kind nothing records is refused."""
    kinds = [k.strip().lower() for k in value.split(",") if k.strip()]
    retired = [k for k in kinds if k in RETIRED_SCOPE_KINDS]
    if retired:
        kind = retired[0]
        raise click.BadParameter(f"{kind!r} cannot be recorded: {RETIRED_SCOPE_KINDS[kind]}; "
                                 f"choose from {', '.join(SCOPE_KINDS)}")
    bad = [k for k in kinds if k not in SCOPE_KINDS]
    if bad or not kinds:
        raise click.BadParameter(f"unknown kind(s) {bad or value!r}; choose from "
                                 + ", ".join(SCOPE_KINDS))
    return frozenset(kinds)


def resolve_sessions(refs: tuple[str, ...]) -> list[Path]:
    """Session directories from ids, unique id prefixes or paths (each checked, in order)."""
    from capture.session import store

    return [store.resolve(ref) for ref in refs]
