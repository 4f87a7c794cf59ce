"""The public API is documented, and user-facing code uses only the public API.

- Every name in `gflow.__all__` and in each paper namespace's `__all__` (the modules named in
  `gflow.__all__`) exists and has a non-empty docstring of its own. The modules need one too,
  and so does every public method and property of a public class. A method may inherit its
  docstring from the gflow base class that declares it. These docstrings are what
  `make docs` renders (mkdocstrings), so a name without one would be an empty entry on the site.
- Public docstrings cite papers, not files that do not ship with the package (`*.md` specs).
- No test, notebook, benchmark, example or documentation snippet imports a private module
  (`gflow._…`). `gflow.__main__` (the CLI) is allowed.

Fast: nothing is compiled or solved, and mkdocs is not needed.
"""

import ast
import importlib.util
import inspect
import json
import re
import types
from pathlib import Path

import gflow

ROOT = Path(__file__).resolve().parents[1]


def _public_modules() -> list[tuple[str, types.ModuleType]]:
    """gflow itself and every module named in `gflow.__all__` (the paper namespaces, `losses`)."""
    modules = [("gflow", gflow)]
    for name in gflow.__all__:
        value = getattr(gflow, name, None)
        if isinstance(value, types.ModuleType):
            modules.append((f"gflow.{name}", value))
    return modules


def _exported(module: types.ModuleType) -> list[str]:
    """A module's `__all__`, or its public classes and functions defined in it if it has none."""
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [
        n
        for n, v in vars(module).items()
        if not n.startswith("_")
        and (inspect.isclass(v) or inspect.isfunction(v))
        and getattr(v, "__module__", None) == module.__name__
    ]


def _own_docstring(obj) -> str:
    """The object's own docstring ('' if none): a class's from its own `__dict__`, ignoring the
    `Name(field: type, ...)` text that dataclasses (and so equinox) put in when there is none."""
    if inspect.isclass(obj):
        doc = obj.__dict__.get("__doc__") or ""
        return "" if doc.startswith(f"{obj.__name__}(") else doc.strip()
    return (getattr(obj, "__doc__", None) or "").strip()


def _documented_objects():
    """(qualified name, object) for every public module, name and method that needs a docstring."""
    for module_name, module in _public_modules():
        yield module_name, module
        for name in _exported(module):
            if name.startswith("__") or not hasattr(module, name):
                continue  # __version__ is data; missing names are test_all_names_exist's job
            obj = getattr(module, name)
            if isinstance(obj, types.ModuleType) or not (inspect.isclass(obj) or callable(obj)):
                continue  # namespaces are checked as modules; constants (OBSERVABLES) hold data
            yield f"{module_name}.{name}", obj


def _callable_members(cls):
    """Public methods and properties defined in `cls` itself: (name, underlying function)."""
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(value, (classmethod, staticmethod)):
            yield name, value.__func__
        elif isinstance(value, property):
            yield name, value.fget
        elif inspect.isfunction(value):
            yield name, value


def _method_docstring(cls, name: str) -> str:
    """The docstring of `cls.name`, or of the same member of the nearest gflow base class."""
    for klass in cls.__mro__:
        if name not in vars(klass):
            continue
        if not klass.__module__.startswith("gflow"):
            return ""
        value = vars(klass)[name]
        func = (
            value.__func__
            if isinstance(value, (classmethod, staticmethod))
            else (value.fget if isinstance(value, property) else value)
        )
        doc = (getattr(func, "__doc__", None) or "").strip()
        if doc:
            return doc
    return ""


def test_all_names_exist():
    missing = [f"{m}.{n}" for m, module in _public_modules() for n in _exported(module) if not hasattr(module, n)]
    assert not missing, f"names in __all__ that the module does not define: {missing}"
    for name, module in _public_modules()[1:]:
        if name != "gflow.losses":  # the losses module: its names are the core losses
            assert hasattr(module, "__all__"), f"paper namespace {name} must list its names in `__all__`"


def test_public_names_have_docstrings():
    missing = [name for name, obj in _documented_objects() if not _own_docstring(obj)]
    assert not missing, "public names without a docstring of their own:\n  " + "\n  ".join(missing)


def test_public_methods_have_docstrings():
    missing = []
    seen = set()
    for qualified, obj in _documented_objects():
        if not inspect.isclass(obj) or obj in seen:
            continue
        seen.add(obj)
        for name, _ in _callable_members(obj):
            if not _method_docstring(obj, name):
                missing.append(f"{qualified}.{name}  ({obj.__module__})")
    assert not missing, "public methods/properties without a docstring:\n  " + "\n  ".join(missing)


_UNSHIPPED = re.compile(r"\b[\w./-]+\.md\b|\bshared/")


def test_docstrings_cite_no_unshipped_files():
    """A user reads docstrings in a wheel that has no theory/*.md specs: cite papers instead."""
    found = []
    seen = set()
    for qualified, obj in _documented_objects():
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        docs = [(qualified, _own_docstring(obj))]
        if inspect.isclass(obj):
            docs += [(f"{qualified}.{n}", (getattr(f, "__doc__", None) or "")) for n, f in _callable_members(obj)]
        for where, doc in docs:
            for match in _UNSHIPPED.finditer(doc or ""):
                found.append(f"{where}: {match.group(0)!r}")
    assert not found, "docstrings that cite files which do not ship with gflow:\n  " + "\n  ".join(found)


def test_docs_site_generates_a_page_per_namespace():
    """`docs/_hooks.py` (which `make docs` runs) finds the same namespaces and names as Python does,
    so every public name lands on a reference page (read statically there, imported here)."""
    spec = importlib.util.spec_from_file_location("gflow_docs_hooks", ROOT / "docs" / "_hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    runtime = [name.removeprefix("gflow.") for name, _ in _public_modules()[1:] if name != "gflow.losses"]
    assert hooks.namespaces() == runtime
    assert hooks._all_of(ROOT / "gflow" / "__init__.py") == list(gflow.__all__)
    for name in runtime:
        assert hooks._all_of(hooks._module_file(name)) == list(getattr(gflow, name).__all__)
    grouped = [n for _, names in hooks._groups() for n in names]
    assert sorted(grouped) == sorted(gflow.__all__)


# --- no private imports in user-facing code ---------------------------------------------------


def _is_private(dotted: str) -> bool:
    """`gflow._x…` (any private part below gflow); dunders such as `gflow.__main__` are allowed."""
    parts = dotted.split(".")
    return parts[0] == "gflow" and any(p.startswith("_") and not p.startswith("__") for p in parts[1:])


def _private_uses(source: str) -> list[tuple[int, str]]:
    """(line, what) for every private gflow module a piece of Python source imports or touches."""
    tree = ast.parse(source)
    aliases = {"gflow"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases |= {a.asname for a in node.names if a.name == "gflow" and a.asname}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, f"import {a.name}") for a in node.names if _is_private(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if _is_private(node.module):
                found.append((node.lineno, f"from {node.module} import ..."))
            elif node.module == "gflow":
                found += [
                    (node.lineno, f"from gflow import {a.name}")
                    for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")
                ]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            if node.attr.startswith("_") and not node.attr.startswith("__"):
                found.append((node.lineno, f"{node.value.id}.{node.attr}"))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            if name == "import_module" and isinstance(node.args[0].value, str) and _is_private(node.args[0].value):
                found.append((node.lineno, f"import_module({node.args[0].value!r})"))
    return found


def _strip_magics(code: str) -> str:
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in code.splitlines())


#: The one exception, by name: the compile-time benchmark attributes compile time to gflow's
#: internal pieces (the divergence guard, the audited state) by building bare diffrax solves
#: with each of them added in turn, so it reaches them where they live.
INTERNAL_DIAGNOSTICS = ("benchmarks/compile_time.py",)


def _sources():
    """(path, python source) of every test, benchmark, notebook cell, example and docs snippet."""
    for folder in ("tests", "benchmarks", "examples"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.relative_to(ROOT).as_posix() in INTERNAL_DIAGNOSTICS:
                continue
            yield path, path.read_text(encoding="utf-8")
    for path in sorted((ROOT / "notebooks").rglob("*.ipynb")):
        if ".ipynb_checkpoints" in path.parts:
            continue
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        for i, cell in enumerate(cells):
            if cell.get("cell_type") == "code":
                source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
                yield path.with_name(f"{path.name}[cell {i}]"), _strip_magics(source)
    for path in sorted([*(ROOT / "docs").rglob("*.md"), ROOT / "README.md"]):
        if not path.is_file():
            continue
        blocks = re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), re.S)
        for i, block in enumerate(blocks):
            yield path.with_name(f"{path.name}[python block {i}]"), block


def test_private_module_detector():
    """The detector itself (a negative control): it finds each way of reaching a private module."""
    source = (
        "import gflow as gf\nimport gflow._special\nfrom gflow._theory.saxe import X\n"
        "from gflow import _losses, saxe\nimport importlib\n"
        "importlib.import_module('gflow._sweep')\ngf._sweep.run\nfrom gflow.__main__ import main\n"
        "gf.__version__\nfrom gflow.saxe import DeepLinearModes\n"
    )
    assert [line for line, _ in _private_uses(source)] == [2, 3, 4, 6, 7]


def test_no_private_imports_outside_the_package():
    this = Path(__file__).resolve()
    found = []
    for path, source in _sources():
        if path.resolve() == this:
            continue  # this file's own negative control spells private names on purpose
        try:
            uses = _private_uses(source)
        except SyntaxError as error:
            found.append(f"{path.relative_to(ROOT)}: not parseable ({error.msg}, line {error.lineno})")
            continue
        found += [f"{path.relative_to(ROOT)}:{line}: {what}" for line, what in uses]
    assert not found, (
        "user-facing code reaches private gflow modules (make the name public in gflow or a paper "
        "namespace instead):\n  " + "\n  ".join(found)
    )
