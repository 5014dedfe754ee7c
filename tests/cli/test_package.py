"""The command line is the only click user, and consent does not reach up into sessions."""

from __future__ import annotations

import ast
from pathlib import Path

import capture

ROOT = Path(capture.__file__).resolve().parent


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def test_only_the_cli_package_imports_click() -> None:
    users = sorted(str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py")
                   if any(m.split(".")[0] == "click" for m in imported_modules(p)))
    assert users and all(u.startswith("cli/") for u in users), users


def test_consent_and_session_do_not_import_the_layers_above_them() -> None:
    above = {"capture.session": ("capture.withdrawal", "capture.agent", "capture.cli"),
             "capture.consent": ("capture.session", "capture.withdrawal", "capture.agent",
                                 "capture.cli")}
    wrong = []
    for package, forbidden in above.items():
        for path in (ROOT / package.split(".")[1]).rglob("*.py"):
            wrong += [f"{path.relative_to(ROOT)} imports {m}" for m in imported_modules(path)
                      if m.startswith(forbidden)]
    assert not wrong, wrong


def test_the_console_script_points_at_the_cli_package() -> None:
    import tomllib

    project = tomllib.loads((ROOT.parent / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["capture"] == "capture.cli:main"
    from capture.cli import main

    assert callable(main)
