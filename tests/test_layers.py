"""The layers import in one direction only (docs/architecture.md):

    api, rest → edge → domain → store        api, rest → changes → domain → store

Read from every import statement in the package (those inside functions too); a new
arrow the wrong way fails here, naming the module and what it imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "src" / "customer_management"

ENTRY = {"server", "cli", "observability"}
"""The entry point and wiring, which import every layer."""
FORBIDDEN = {
    "store": {"domain", "changes", "edge", "api", "rest", "config", *ENTRY},
    "domain": {"changes", "edge", "api", "rest", *ENTRY},
    "changes": {"edge", "api", "rest", *ENTRY},
    "edge": {"changes", "api", "rest", "store", *ENTRY},
    "api": {"rest", "store", "server", "cli"},
    "rest": {"api", "store", *ENTRY},
}
"""By layer, the parts of the package it must not import."""


def imports(path: Path) -> set[str]:
    """The modules of the package that `path` imports, as dotted names under it."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found.update(
            name.removeprefix("customer_management.")
            for name in names
            if name.startswith("customer_management.")
        )
    return found


def layer_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_the_package_is_read() -> None:
    layers = {layer_of(path) for path in MODULES}
    assert set(FORBIDDEN) <= layers
    assert imports(PACKAGE / "api" / "handlers.py") >= {"edge.callers", "domain.errors"}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_import_goes_up_a_layer(path: Path) -> None:
    forbidden = FORBIDDEN.get(layer_of(path), set())
    wrong = sorted(name for name in imports(path) if name.split(".")[0] in forbidden)
    assert not wrong, f"{path.relative_to(PACKAGE)} imports {wrong}"


@pytest.mark.parametrize(
    "path",
    sorted((PACKAGE / "store" / "migrations" / "versions").glob("*.py")),
    ids=lambda p: p.name,
)
def test_migrations_import_no_live_code(path: Path) -> None:
    """A migration must keep doing what it did when the code it ran with changes: it
    imports nothing of the package (the generated messages are kept compatible by
    `buf breaking`)."""
    assert not imports(path), f"{path.name} imports {sorted(imports(path))}"
