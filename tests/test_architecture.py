"""The package structure, read from the source: no import circles between modules, and no import running up the
layering `ni` <- `evaluation` <- `trainer` <- `launcher` (docs/architecture.md). Function-local imports count too:
they only keep costly libraries off light paths (and each one must), they do not make a circle acceptable. And the
light paths stay light: importing the command lines or any module of ni, evaluation and launcher loads no torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Collection
from pathlib import Path

import pytest

from tests.conftest import REPO

LAYERS = ("ni", "evaluation", "trainer", "launcher")  # each may import only those before it (and itself)
HEAVY = ("torch", "transformers", "accelerate", "deepspeed")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for layer in LAYERS for p in sorted((REPO / layer).rglob("*.py"))}


def owner(name: str, modules: Collection[str]) -> str | None:
    """The project module an imported name belongs to (`a.b.c` -> `a.b` when a.b is a module), None outside."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_names(node: ast.Import | ast.ImportFrom) -> list[str]:
    """`a.b` for `import a.b`, `a.b.c` for `from a.b import c` (c a module or a name in a.b)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    assert node.level == 0 and node.module, f"line {node.lineno}: relative import; import by full name"
    return [f"{node.module}.{a.name}" for a in node.names]


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The project modules `path` imports anywhere in its body."""
    names = [n for node in ast.walk(ast.parse(path.read_text(), filename=str(path)))
             if isinstance(node, ast.Import | ast.ImportFrom) for n in import_names(node)]
    return {m for m in (owner(n, modules) for n in names) if m is not None}


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {m: imported_modules(p, set(modules)) - {m} for m, p in modules.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    return [f"{m} imports {o}" for m, out in sorted(graph.items()) for o in sorted(out)
            if rank[o.split(".")[0]] > rank[m.split(".")[0]]]


def test_the_graph_sees_every_kind_of_import() -> None:
    """The reader itself: module-level, function-local, `import a.b` and `from a import module` all count."""
    graph = import_graph()
    assert "trainer.hf" in graph["trainer.run"]  # module level
    assert "evaluation.report" in graph["evaluation.cli"]  # function-local, for one subcommand
    assert "launcher.backends.slurm" in graph["launcher.backends"]  # `from launcher.backends import slurm`
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert upward_imports({"ni.x": {"trainer.y"}, "trainer.y": {"ni.x"}}) == ["ni.x imports trainer.y"]


def test_no_import_circles() -> None:
    found = circles(import_graph())
    assert not found, "import circles (break each by moving the shared piece below both): " + "; ".join(
        " <-> ".join(c) for c in found)


@pytest.mark.parametrize("layer", LAYERS)
def test_no_import_runs_up_the_layering(layer: str) -> None:
    graph = {m: out for m, out in import_graph().items() if m.split(".")[0] == layer}
    assert upward_imports(graph) == []


def test_light_paths_load_no_torch() -> None:
    """`--help`, `plan`, `status`, `report` and the launcher's backends start in a fraction of a second: the heavy
    libraries are imported inside the functions that need them (in a fresh interpreter: this one may hold them)."""
    light = ["trainer.cli", *(m for m in project_modules()
                              if m.split(".")[0] != "trainer" and not m.endswith("__main__"))]
    code = (f"import importlib, sys\nfor m in {light!r}:\n    importlib.import_module(m)\n"
            f"print(' '.join(sorted(h for h in {HEAVY!r} if h in sys.modules)))")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "", f"loaded on import: {r.stdout.strip()}"


# What a function-local import may keep off a light path: a library whose import costs tens of milliseconds or more
# (`python -X importtime`: torch ~1.6 s, pydantic ~40 ms plus the schemas of the models built on it).
COSTLY = (*HEAVY, "datasets", "submitit", "beaker", "matplotlib", "requests", "urllib3", "nltk", "numpy", "rich",
          "huggingface_hub", "pydantic", "tokenizers", "safetensors.torch")
SIDE_EFFECT_ONLY = {"readline"}  # imported for what it does to input(), only in a terminal


def _scoped_imports(tree: ast.Module) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The names a module imports when it is loaded (module level, `if TYPE_CHECKING:` blocks left out), and its
    function-local imports as (line, names), each name as `import_names` gives it."""
    top: list[str] = []
    local: list[tuple[int, list[str]]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and ast.unparse(child.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
                visit(ast.Module(body=child.orelse, type_ignores=[]), in_function)
                continue
            if isinstance(child, ast.Import | ast.ImportFrom):
                if in_function:
                    local.append((child.lineno, import_names(child)))
                else:
                    top.extend(import_names(child))
            visit(child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda))

    visit(tree, False)
    return top, local


def needless_local_imports(sources: dict[str, str]) -> list[str]:
    """Function-local imports that keep nothing costly off the path of loading their module: everything they would
    load that is in COSTLY, the module (with what it imports at module level, transitively) loads already."""
    scoped = {m: _scoped_imports(ast.parse(src)) for m, src in sources.items()}

    def costly(names: list[str]) -> set[str]:
        seen: set[str] = set()
        found: set[str] = set()
        todo = list(names)
        while todo:
            name = todo.pop()
            module = owner(name, scoped)
            if module is None:
                found |= {c for c in COSTLY if name == c or name.startswith(c + ".")}
                continue
            parts = module.split(".")  # importing a.b.c runs a and a.b first
            for prefix in (".".join(parts[:i]) for i in range(1, len(parts) + 1)):
                if prefix in scoped and prefix not in seen:
                    seen.add(prefix)
                    todo += scoped[prefix][0]
        return found

    found = []
    for module, (_, local) in sorted(scoped.items()):
        already = costly([module])
        for line, names in local:
            if set(names) & SIDE_EFFECT_ONLY:
                continue
            if not costly(names) - already:
                found.append(f"{module}:{line} imports {', '.join(names)} inside a function: it keeps nothing costly "
                             "off the path of loading the module; import it at the top")
    return found


def test_the_local_import_check_tells_a_costly_import_from_a_needless_one() -> None:
    sources = {
        "ni": "",
        "ni.a": "import os\ndef f():\n    import json\n",  # stdlib: never costly
        "ni.b": "def g():\n    import torch\n",  # keeps torch off loading ni.b
        "ni.c": "import torch\ndef h():\n    from transformers import AutoConfig\n    import torch.nn\n",
        "ni.d": "def k():\n    from ni.c import h\n",  # ni.c brings torch
        "ni.e": "from ni.c import h\ndef r():\n    from ni.b import g\n",  # ni.b brings nothing ni.e lacks
        "ni.f": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import numpy\ndef s():\n    import numpy\n",
        "ni.g": "def t():\n    import readline\n",
    }
    assert [line.split(" inside")[0] for line in needless_local_imports(sources)] == [
        "ni.a:3 imports json", "ni.c:4 imports torch.nn", "ni.e:3 imports ni.b.g"]


def test_function_local_imports_keep_something_costly_off_a_path() -> None:
    """docs/architecture.md: a function-local import is for keeping a costly library off a light path; any other
    import goes at the top of its module, where a reader sees what the module depends on."""
    sources = {m: p.read_text() for m, p in project_modules().items()}
    assert needless_local_imports(sources) == []
