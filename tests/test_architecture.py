"""The import rule of docs/ARCHITECTURE.md, parsed from the source: no module imports a layer
above its own, no imports form a cycle, only ``sfd.cli`` imports click; and the size limits of
STYLE.md (files <= 400 lines, functions <= 60)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# Lowest first; a module belongs to the longest prefix that names it (docs/ARCHITECTURE.md).
LAYERS: tuple[tuple[str, ...], ...] = (
    (
        "sfd.errors", "sfd.config", "sfd.distributed", "sfd.locks", "sfd.hardware",
        "sfd.recipes", "sfd.data.shards", "sfd.latents.composite",
    ),
    ("sfd.data",),
    ("sfd.latents", "sfd.model", "sfd.flow"),
    ("sfd.training", "sfd.eval", "sfd.generate", "sfd.figures"),
    (
        "sfd.api", "sfd.sampling", "sfd.extract", "sfd.upstream", "sfd.bench", "sfd.ecosystem",
    ),
    ("sfd.pipeline",),
    # entry points; the benchmark's workers report which `sfd` package they imported
    ("sfd.cli", "sfd.__main__", "sfd", "sfd.bench_compare", "sfd.bench_worker"),
)  # fmt: skip
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, Path]:
    mods = {}
    for path in sorted((SRC / "sfd").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    """Every sfd module ``path`` imports (at module level or inside a function)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for a in node.names:  # `from sfd.x import y`: y may be a module
                sub = f"{node.module}.{a.name}"
                found.add(sub if sub in MODULES else node.module)
    return {m for m in found if m in MODULES}


def _owner(module: str) -> tuple[int, str]:
    """(layer, the prefix that places ``module``)."""
    best = max(
        ((i, p) for i, layer in enumerate(LAYERS) for p in layer
         if module == p or module.startswith(p + ".")),
        key=lambda ip: len(ip[1]),
    )  # fmt: skip
    return best


def test_every_module_has_a_layer():
    for module in MODULES:
        assert _owner(module), module


def test_no_module_imports_a_layer_above_its_own():
    upward = []
    for module, path in MODULES.items():
        layer = _owner(module)[0]
        for target in _imports(path):
            if _owner(target)[0] > layer:
                upward.append(f"{module} (layer {layer}) imports {target} ({_owner(target)[0]})")
    assert not upward, "\n".join(upward)


def test_imports_form_no_cycle():
    graph = {m: _imports(p) - {m} for m, p in MODULES.items()}
    done: set[str] = set()

    def visit(module: str, stack: list[str]) -> None:
        if module in stack:
            cycle = stack[stack.index(module) :] + [module]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if module in done:
            return
        for target in sorted(graph[module]):
            visit(target, [*stack, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])


def test_same_layer_units_import_each_other_one_way_only():
    edges = {
        (_owner(m)[1], _owner(t)[1])
        for m, p in MODULES.items()
        for t in _imports(p)
        if _owner(m)[1] != _owner(t)[1]
    }
    both = sorted(f"{a} <-> {b}" for a, b in edges if (b, a) in edges and a < b)
    assert not both, both


def test_only_the_cli_imports_click():
    users = [
        m
        for m, p in MODULES.items()
        if not (m == "sfd.cli" or m.startswith("sfd.cli."))
        and any(
            (isinstance(n, ast.Import) and any(a.name.split(".")[0] == "click" for a in n.names))
            or (isinstance(n, ast.ImportFrom) and (n.module or "").split(".")[0] == "click")
            for n in ast.walk(ast.parse(p.read_text()))
        )
    ]
    assert not users, users


def test_files_and_functions_fit_on_a_screen():
    too_long = []
    for module, path in MODULES.items():
        text = path.read_text()
        lines = len(text.splitlines())
        if lines > MAX_FILE_LINES:
            too_long.append(f"{module}: {lines} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    too_long.append(f"{module}.{node.name}: {n} lines")
    assert not too_long, "\n".join(too_long)
