"""The architecture holds: no import circles between our modules, and each layer imports only what
DESIGN.md's arrows allow (ml -> nothing of ours; store -> ml; services -> ml, store; jobs -> services;
api -> services, jobs; routes never import other routes).

Every import counts, also the ones inside functions and under ``if TYPE_CHECKING``. An import that
must stay out of the circle check says why on its own line: ``# import-cycle: <reason>``.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "vision_trainer"
SRC = Path(__file__).resolve().parents[1] / "src"
MARKER = re.compile(r"#\s*import-cycle:\s*\S")

# Layer -> the layers of ours it may not import (and, for services, the frameworks it may not import).
FORBIDDEN = {
    "ml": ("store", "services", "api", "jobs", "settings", "cli", "web"),
    "store": ("services", "api", "jobs", "cli"),
    "services": ("api", "jobs", "cli"),
}
SERVICES_FRAMEWORKS = ("celery", "fastapi", "starlette")


@dataclass(frozen=True)
class Import:
    source: str
    target: str  # a module of ours, or a top-level name of a third-party package
    line: int
    exempt: bool  # carries an ``import-cycle:`` reason


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted((SRC / PACKAGE).rglob("*.py"))}


def _base(module: str, path: Path, level: int) -> list[str]:
    parts = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    return parts[: len(parts) - (level - 1)] if level > 1 else parts


def imports_of(module: str, text: str | None = None) -> list[Import]:
    """The imports of ``module`` (its file, or ``text`` as if it were its source)."""
    path = MODULES[module]
    text = path.read_text(encoding="utf-8") if text is None else text
    lines = text.splitlines()
    found: list[Import] = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            package = ".".join([*_base(module, path, node.level), *([node.module] if node.module else [])])
            if node.level == 0:
                package = node.module or ""
            # ``from pkg import sub`` imports the submodule ``pkg.sub`` when there is one.
            subs = [f"{package}.{alias.name}" for alias in node.names if f"{package}.{alias.name}" in MODULES]
            targets = subs or [package]
        else:
            continue
        span = "\n".join(lines[node.lineno - 1 : (node.end_lineno or node.lineno)])
        exempt = bool(MARKER.search(span))
        for target in targets:
            ours = target if target in MODULES else next((m for m in _parents(target) if m in MODULES), None)
            name = ours or target.split(".")[0]
            if name != module:
                found.append(Import(module, name, node.lineno, exempt))
    return found


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:n]) for n in range(len(parts) - 1, 0, -1)]


IMPORTS = {module: imports_of(module) for module in MODULES}


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def is_route(module: str) -> bool:
    return module.startswith(f"{PACKAGE}.api.routes.") and module in MODULES


def circles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), over non-exempt imports."""
    graph = {m: sorted({i.target for i in IMPORTS[m] if i.target in MODULES and not i.exempt}) for m in MODULES}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_walk_sees_the_package() -> None:
    assert f"{PACKAGE}.ml.backbones" in MODULES and f"{PACKAGE}.api.routes.train" in MODULES
    targets = {i.target for i in IMPORTS[f"{PACKAGE}.api.routes.train"]}
    assert f"{PACKAGE}.services.training" in targets and "fastapi" in targets


def test_no_import_circles() -> None:
    found = circles()
    assert not found, "import circles (break them, or mark a deferred import '# import-cycle: <reason>'):\n" + (
        "\n".join(" <-> ".join(c) for c in found)
    )


def breaches() -> list[str]:
    found = []
    for module, imports in IMPORTS.items():
        for item in imports:
            where = f"{MODULES[module].relative_to(SRC)}:{item.line} imports {item.target}"
            own = layer(item.target) if item.target in MODULES else None
            if own is not None and own in FORBIDDEN.get(layer(module), ()):
                found.append(where)
            elif own is None and layer(module) == "services" and item.target in SERVICES_FRAMEWORKS:
                found.append(where)
            elif is_route(module) and is_route(item.target):
                found.append(f"{where} (routes share code through a non-route module of api/)")
    return found


def test_each_layer_imports_only_what_the_design_allows() -> None:
    found = breaches()
    assert not found, "layer breaches:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from ...services import storage\n", "vision_trainer.services.storage"),
        ("from ...services.errors import InvalidRequest\n", "vision_trainer.services.errors"),
        ("from ..schemas import ERROR_RESPONSES\n", "vision_trainer.api.schemas"),
        ("from . import datasets\n", "vision_trainer.api.routes.datasets"),
        ("import vision_trainer.ml.images\n", "vision_trainer.ml.images"),
        ("def f():\n    from .train import router\n", "vision_trainer.api.routes.train"),
        ("if TYPE_CHECKING:\n    from ...services.context import Services\n", "vision_trainer.services.context"),
    ],
)
def test_relative_late_and_typing_imports_resolve(source: str, expected: str) -> None:
    found = imports_of("vision_trainer.api.routes.compare", source)
    assert [i.target for i in found] == [expected]
    assert not found[0].exempt


def test_a_marked_import_leaves_the_circle_check() -> None:
    source = "def f():\n    from .train import router  # import-cycle: built lazily on first use\n"
    assert imports_of("vision_trainer.api.routes.compare", source)[0].exempt
    assert not imports_of("vision_trainer.api.routes.compare", "from .train import router  # import-cycle:\n")[0].exempt
