"""capture's one TOML config file: where it is, and typed reads that name file and key on error."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from capture.errors import CaptureError

# The file holds one table per part of capture, e.g.
#
#   [agent]
#   fps = 30
#   idle_pause_seconds = 30.0
#
# Add a table by naming it in OWN_TABLES (or, for a video backend, in its registry entry) and
# reading it with `config_table("name")` and its typed getters; a table the file has but nothing
# reads (a typo such as `[agnet]`) is refused.

OWN_TABLES: tuple[str, ...] = ("agent",)


def config_tables() -> tuple[str, ...]:
    """Every table the file may hold: capture's own and each video backend's."""
    from capture import video  # the registry lists each backend's table (its settings)

    return (*OWN_TABLES, *(e.config_table for e in video.BACKENDS.values() if e.config_table))


def config_path() -> Path:
    """`$CAPTURE_CONFIG` if set, else `<user config dir>/capture/config.toml`."""
    override = os.environ.get("CAPTURE_CONFIG")
    return Path(override) if override else Path(
        platformdirs.user_config_dir("capture")) / "config.toml"


def load_config(path: Path | None = None) -> dict[str, Any]:
    """The whole file as a dict ({} if it does not exist); only the tables of config_tables()."""
    path = path or config_path()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise CaptureError(f"cannot read the config file: {exc.strerror}", path) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise CaptureError(f"the config file is not UTF-8 text (byte 0x{data[exc.start]:02x} on "
                           f"line {line}); save it as UTF-8", path) from None
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CaptureError(f"not valid TOML: {exc}", path) from None
    tables = config_tables()
    unknown = sorted(set(config) - set(tables))
    if unknown:
        name = unknown[0]
        what = f"unknown table [{name}]" if isinstance(config[name], dict) else \
            f"`{name}` is outside any table"
        raise CaptureError(f"{what} (the tables are: "
                           + ", ".join(f"[{t}]" for t in tables) + ")", path)
    return config


@dataclass(frozen=True, slots=True)
class ConfigTable:
    """One `[name]` table of the config file, with getters that validate types."""

    path: Path
    name: str
    values: Mapping[str, Any] = field(default_factory=dict)

    def _problem(self, key: str, wants: str) -> CaptureError:
        return CaptureError(f"`{self.name}.{key}` must be {wants}, not {self.values[key]!r}",
                            self.path)

    def string(self, key: str) -> str | None:
        if key not in self.values:
            return None
        value = self.values[key]
        if not isinstance(value, str):
            raise self._problem(key, "a string")
        return value

    def integer(self, key: str, low: int, high: int) -> int | None:
        if key not in self.values:
            return None
        value = self.values[key]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self._problem(key, f"an integer {low}-{high}")
        return value

    def number(self, key: str, low: float, high: float) -> float | None:
        if key not in self.values:
            return None
        value = self.values[key]
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not low <= value <= high:
            raise self._problem(key, f"a number from {low:g} to {high:g}")
        return float(value)

    def boolean(self, key: str) -> bool | None:
        if key not in self.values:
            return None
        value = self.values[key]
        if not isinstance(value, bool):
            raise self._problem(key, "true or false")
        return value

    def choice(self, key: str, choices: tuple[str, ...]) -> str | None:
        value = self.string(key)
        if value is not None and value not in choices:
            raise self._problem(key, "one of " + ", ".join(repr(c) for c in choices))
        return value

    def reject_unknown(self, known: set[str]) -> None:
        unknown = sorted(set(self.values) - known)
        if unknown:
            raise CaptureError(f"unknown key `{self.name}.{unknown[0]}` (known: "
                               + ", ".join(sorted(known)) + ")", self.path)


def config_table(name: str, path: Path | None = None) -> ConfigTable:
    """The `[name]` table (empty if the file or the table is missing)."""
    if name not in config_tables():
        raise ValueError(f"[{name}] is not a config table: add it to OWN_TABLES first")
    path = path or config_path()
    values = load_config(path).get(name, {})
    if not isinstance(values, dict):
        raise CaptureError(f"`{name}` must be a table ([{name}])", path)
    return ConfigTable(path=path, name=name, values=values)
