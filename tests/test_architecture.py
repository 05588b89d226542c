"""The package's shape (docs/architecture.md), read from the source with `ast`: every import of every module,
absolute or relative, at the top or inside a function. No import circles; stage two never imports stage one;
each part imports only the layers below it; no module much over 300 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vqa_cache"

# Top to bottom. A module may import its own part (the top-level module or package under vqa_cache/ it
# belongs to) and the parts of the layers below; never a part of its own layer or of a layer above.
LAYERS = [
    {"__main__", "__init__"},  # `python -m vqa_cache`; the package's face, the API re-exported
    {"cli"},  # click commands and printing
    {"demo"},  # the Gradio page of `vqa-cache demo`, over the API
    {"api"},  # the Python API: the commands as functions
    {"report"},  # a page about a run, through predict and runs
    {"model"},  # a trained model ready to answer: load, export, a finetune run live
    {"explain"},  # where a model looked (ask --json/--explain, the report)
    {"finetuning", "search", "predict", "run_table"},  # built on stage two; run_table: a table of run directories
    {"extraction", "training"},  # stage one, stage two
    {"rundir"},  # the run contract: every file of a run directory (takes cache's Lock)
    {"cache"},  # the contract between the stages
    {"metrics", "submission"},  # submission: predictions as a competition's CSV
    {"data", "encoders", "heads"},
    {"answers"},
    {"options"},
    {
        "digest",
        "device",
        "recipes",
        "distributed",
        "progress",
        "version",
        "threads",
        "plot_text",
        "tracking",
        "messages",
    },  # messages: the `vqa_cache` logger every library line goes through
    {"errors"},
]
STAGE_TWO = {"training", "finetuning", "search", "predict"}
MAX_LINES = 400  # "about 300" lines of code, counted after `ruff format` (one name a line in long imports)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str) -> set[str]:
    """The vqa_cache modules that module `name` imports: `import a.b`, `from a import b` (b a module or a
    name in a), `from . import b`, `from ..a import b`, wherever the statement stands."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: imports_of(name) for name in MODULES}


def part(name: str) -> str:
    """The top-level module or package a module belongs to: vqa_cache.training.loop -> train."""
    return name.split(".")[1] if "." in name else "__init__"


def layer(name: str) -> int:
    return next(i for i, parts in enumerate(LAYERS) if part(name) in parts)


def test_the_walk_sees_relative_absolute_and_function_level_imports():
    assert "vqa_cache.training.loop" in GRAPH["vqa_cache.training.cached"]  # from .loop import ...
    assert "vqa_cache.cache.plan" in GRAPH["vqa_cache.training.features"]  # from ..cache.plan import ...
    assert "vqa_cache.extraction.stage" in GRAPH["vqa_cache.api.calls"]  # inside a function
    assert "vqa_cache.data.csvdata" in GRAPH["vqa_cache.data.dispatch"]  # from . import csvdata
    assert "vqa_cache.cache.samples" in GRAPH["vqa_cache.cache.plan"]  # from .samples import ...


def test_no_import_circles():
    cycles, state = [], {}

    def visit(name, path):
        state[name] = "open"
        for other in sorted(GRAPH[name]):
            if state.get(other) == "open":
                cycles.append(path[path.index(other) :] + [other])
            elif other not in state:
                visit(other, path + [other])
        state[name] = "done"

    for name in MODULES:
        if name not in state:
            visit(name, [name])
    assert cycles == [], "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_stage_two_never_imports_stage_one():
    wrong = [(a, b) for a in MODULES for b in GRAPH[a] if part(a) in STAGE_TWO and part(b) == "extraction"]
    assert wrong == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_go_down_the_layers(name):
    assert part(name) in set().union(*LAYERS), f"{name}: its part {part(name)!r} is in no layer: place it"
    upward = sorted(b for b in GRAPH[name] if part(b) != part(name) and layer(b) <= layer(name))
    assert upward == [], f"{name} (layer {layer(name)}: {part(name)}) imports {upward}"


def test_modules_stay_small():
    big = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert big == {}


def test_the_version_is_written_once():
    """pyproject.toml reads the version from vqa_cache/version.py (`__version__`, recorded in manifests)."""
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        import tomli as tomllib
    project = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "vqa_cache.version.__version__"}


def test_no_library_module_prints():
    """Only cli/ prints; the library reports through messages.py (the `vqa_cache` logger) and progress.py, so
    that a program (and the API's verbose=False, a log level) decides what shows."""
    printing = sorted(
        f"{name}:{node.lineno}"
        for name, path in MODULES.items()
        if part(name) != "cli"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"
    )
    assert printing == [], "print() outside cli/ (use messages.info / messages.warning): " + ", ".join(printing)
