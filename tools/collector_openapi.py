"""Regenerate schemas/collector-openapi.v1.json from the collector's API (run after changing it)."""

from __future__ import annotations

from capture.collector.openapi import checked_in_path, document, render


def main() -> None:
    path = checked_in_path()
    path.write_text(render(document()), encoding="utf-8")
    print(path)


if __name__ == "__main__":
    main()
