"""The import graph: the library imports nothing from the lab, and no modules import each other.

The **lab** is what measures and demonstrates the library on the shipped tiny models: the tiny
models, their pipelines and training scripts (``sdsv.tiny``), ``sdsv demo``, ``sdsv eval``, the
command line and its argument helpers. It keeps its ``sdsv.*`` paths (``from
sdsv.tiny.pipeline import TinyPipeline`` is what users and docs write) and is listed here, in
one place. Everything else under ``sdsv``, and ``sdsv_kernels``, is the **library**; it uses no
lab module, neither at module level nor inside a function, while the lab uses the library as
any user would.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: each package's folder -> the folder its dotted names are relative to
PACKAGES = {ROOT / "python" / "sdsv": ROOT / "python", ROOT / "sdsv_kernels": ROOT}
#: the lab: these modules and everything under them
LAB = ("sdsv.tiny", "sdsv.demo", "sdsv.evaluation", "sdsv.cli", "sdsv.cli_args")


def module_name(path: Path, base: Path) -> str:
    parts = list(path.relative_to(base).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p, base): p for pkg, base in PACKAGES.items() for p in pkg.rglob("*.py")}


def is_lab(module: str) -> bool:
    return any(module == lab or module.startswith(lab + ".") for lab in LAB)


def imported_names(name: str, is_package: bool, source: str, deep: bool) -> list[tuple[str, int]]:
    """``(dotted name, line)`` of what module ``name`` (of text ``source``) imports, relative
    imports resolved: at module level, or with ``deep`` anywhere (inside functions and classes
    too, and ``importlib.import_module`` / ``__import__`` of a literal name)."""
    package = name if is_package else name.rpartition(".")[0]
    tree = ast.parse(source)
    out = []
    for node in ast.walk(tree) if deep else tree.body:
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            out += [(base, node.lineno)] + [(f"{base}.{a.name}", node.lineno) for a in node.names]
        elif (deep and isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and (getattr(node.func, "attr", None) == "import_module" or getattr(node.func, "id", None) == "__import__")):
            out.append((node.args[0].value, node.lineno))
    return out


def imports_of(name: str, path: Path, known: set, deep: bool = False) -> dict[str, int]:
    """The package modules ``path`` imports -> the first line that does."""
    out: dict[str, int] = {}
    for t, line in imported_names(name, path.name == "__init__.py", path.read_text(), deep):
        while t and t not in known:
            t = t.rpartition(".")[0]
        if t and t != name:
            out.setdefault(t, line)
    return out


def graph(deep: bool) -> dict[str, set]:
    paths = modules()
    g = {m: set(imports_of(m, p, set(paths), deep)) for m, p in paths.items()}
    # a package's __init__ importing its own submodules is not a cycle of the submodules
    for m in g:
        g[m] = {d for d in g[m] if not (m.startswith(d + ".") and paths[d].name == "__init__.py")}
    return g


def find_cycle(g: dict[str, set]) -> list[str] | None:
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for d in sorted(g[m]):
            if state.get(d) == "open":
                return stack[stack.index(d):] + [d]
            if d not in state and (cycle := visit(d)):
                return cycle
        stack.pop()
        state[m] = "done"
        return None

    for m in sorted(g):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def test_the_lab_list_names_real_modules():
    known = set(modules())
    assert all(lab in known for lab in LAB), sorted(set(LAB) - known)
    library = sorted(m for m in known if not is_lab(m))
    assert "sdsv" in library and "sdsv.sampler" in library and "sdsv_kernels" in library
    assert "sdsv.integrations.hf_diffusers.hook" in library and "sdsv.calibrate" in library


def test_the_library_imports_nothing_from_the_lab():
    paths = modules()
    known = set(paths)
    offences = [f"{m} (line {line}) imports {d}"
                for m, p in sorted(paths.items()) if not is_lab(m)
                for d, line in sorted(imports_of(m, p, known, deep=True).items()) if is_lab(d)]
    assert not offences, "library modules import the lab:\n" + "\n".join(offences)


def test_no_import_cycle_at_module_level():
    cycle = find_cycle(graph(deep=False))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_import_cycle_even_through_imports_inside_functions():
    cycle = find_cycle(graph(deep=True))
    assert cycle is None, "import cycle (counting imports inside functions): " + " -> ".join(cycle)


def test_the_checks_see_a_lazy_lab_import_and_a_cycle():
    # the checks themselves, on a made-up graph and a made-up module
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    code = "import importlib\n\ndef f():\n    from .tiny.pipeline import TinyPipeline\n    importlib.import_module('sdsv.demo')\n"
    names = {n for n, _ in imported_names("sdsv.calibrate", False, code, deep=True)}
    assert {"sdsv.tiny.pipeline", "sdsv.demo"} <= names
    assert {n for n, _ in imported_names("sdsv.calibrate", False, code, deep=False)} == {"importlib"}
