"""The shape of the code: layers import only downwards, no private names cross modules, the
manifest is read only through its record, OBS is named only by its backend and the registry."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "capture"

# Lowest first. A module may import its own layer and the layers below it, never above.
# (docs/architecture.md draws the same picture.)
LAYERS: list[set[str]] = [
    {"capture", "clock", "errors", "paths", "formats", "journal", "sizes", "processes",
     "xserver", "clockface"},
    {"consent", "inputs", "video", "config"},
    {"session"},
    {"align", "export", "withdrawal"},
    {"agent", "collector", "uploader", "demo"},
    {"cli", "__main__"},
]
# Modules that declare a file format and import nothing heavy: they sit with the base layer
# although they live next to the code that writes the format.
FORMAT_MODULES = {"capture.export.vocabulary", "capture.export.layout"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(module: str, path: Path) -> list[tuple[str, list[str], int]]:
    """(imported module, imported names, line) for every import of a capture module."""
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "capture":
                found.append((target, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names
                      if a.name.split(".")[0] == "capture"]
    return found


def _layer(module: str) -> int:
    if module in FORMAT_MODULES:
        return 0
    name = module.split(".")[1] if "." in module else module
    for index, members in enumerate(LAYERS):
        if name in members:
            return index
    raise AssertionError(f"{module} is in no layer: add it to LAYERS and docs/architecture.md")


def test_every_module_is_in_a_layer() -> None:
    for module in _modules():
        _layer(module)


def test_lower_layers_never_import_higher_ones() -> None:
    modules = _modules()
    wrong = []
    for module, path in modules.items():
        for target, names, line in _imports(module, path):
            # `from capture.x import y` may name a submodule y: judge by the deepest module.
            candidates = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules]
            for imported in candidates or [target]:
                if imported in modules and _layer(imported) > _layer(module):
                    wrong.append(f"{path.relative_to(ROOT.parent)}:{line} imports {imported}")
    assert wrong == []


def test_no_module_imports_a_private_name_of_another() -> None:
    modules = _modules()
    wrong = []
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        for target, names, line in _imports(module, path):
            private_module = any(p.startswith("_") and not p.startswith("__")
                                 for p in target.split("."))
            target_package = target.rsplit(".", 1)[0]
            if private_module and not (target_package == package
                                       or target_package.startswith(package + ".")):
                wrong.append(f"{path.relative_to(ROOT.parent)}:{line} imports {target}")
            wrong += [f"{path.relative_to(ROOT.parent)}:{line} imports {target}.{n}"
                      for n in names if n.startswith("_") and not n.startswith("__")
                      and not (f"{target}.{n}" in modules and target == package)]
    assert wrong == []


MANIFEST_SUBSCRIPT = re.compile(
    r"""\bmanifest\s*\[|\bmanifest\.get\(|\[["'](qa|consent|clock|backend|recovery)["']\]""")


def test_the_manifest_is_read_only_through_its_record() -> None:
    wrong = []
    for module, path in _modules().items():
        if module == "capture.session.manifest":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if MANIFEST_SUBSCRIPT.search(line):
                wrong.append(f"{path.relative_to(ROOT.parent)}:{number}: {line.strip()}")
    assert wrong == []


OBS_NAME = re.compile(r"\bobs\b", re.IGNORECASE)
OBS_ALLOWED = ("capture/video/obs/", "capture/video/__init__.py", "capture/cli/")


def test_obs_is_named_only_by_its_backend_the_registry_and_the_cli() -> None:
    wrong = []
    for path in _modules().values():
        relative = path.relative_to(ROOT.parent).as_posix()
        if relative.startswith(OBS_ALLOWED):
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if OBS_NAME.search(line):
                wrong.append(f"{relative}:{number}: {line.strip()}")
    assert wrong == []
