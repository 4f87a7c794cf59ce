"""mkdocs hooks: the API reference follows `__all__`; renames and new namespaces need no edit here.

- `gflow/__init__.py`'s `__all__` (with its `# group` comments) becomes the core reference page
  (`<!-- gflow-api: core -->` in `docs/api/core.md`), one `::: gflow.NAME` per public name.
- Every public module named in that `__all__` whose file is `gflow/<name>.py` (a paper namespace:
  `gflow.saxe`, `gflow.tachet`, …) gets a generated page `api/<name>.md` with `::: gflow.<name>`
  (members in its `__all__` order), added to the nav under "API reference".
- `<!-- gflow-names: NAME -->` in a page becomes a table of that namespace's public names, each
  linked to its reference entry, with the first line of its docstring.
- `<!-- gflow-figures: PREFIX -->` becomes the table of the figures `gflow reproduce PREFIX` draws
  (every `@register("PREFIX-…", "description")` in the package).

The names are read from the source with `ast` (nothing is imported) and the summaries with griffe,
the library mkdocstrings itself reads the docstrings with.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "gflow"
_API_MARK = re.compile(r"<!--\s*gflow-api:\s*core\s*-->")
_NAMES_MARK = re.compile(r"<!--\s*gflow-names:\s*([A-Za-z_][A-Za-z0-9_]*)\s*-->")
_FIGURES_MARK = re.compile(r"<!--\s*gflow-figures:\s*([A-Za-z0-9_-]+)\s*-->")


def _all_of(path: Path) -> list[str]:
    """The string entries of the module-level `__all__ = [...]` in `path`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets) and node.value is not None:
            return [e.value for e in node.value.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    raise ValueError(f"{path} has no literal `__all__` list")


def _groups() -> list[tuple[str, list[str]]]:
    """`gflow.__all__` split at its `# comment` lines: [(title, names), ...]."""
    names = _all_of(PACKAGE / "__init__.py")
    source = (PACKAGE / "__init__.py").read_text(encoding="utf-8")
    block = re.search(r"^__all__\s*=\s*\[(.*?)^\]", source, re.S | re.M)
    groups: list[tuple[str, list[str]]] = [("Other names", [])]
    seen: set[str] = set()
    for line in block.group(1).splitlines() if block else []:
        line = line.strip()
        if line.startswith("#"):
            groups.append((line.lstrip("# ").strip().capitalize(), []))
            continue
        for name in re.findall(r"""["']([^"']+)["']""", line):
            if name in names and name not in seen:
                groups[-1][1].append(name)
                seen.add(name)
    groups[0][1].extend(n for n in names if n not in seen)
    return [(title, members) for title, members in groups if members]


def _module_file(name: str) -> Path | None:
    """`gflow/<name>.py` or `gflow/<name>/__init__.py`, if either exists."""
    for path in (PACKAGE / f"{name}.py", PACKAGE / name / "__init__.py"):
        if path.is_file():
            return path
    return None


def namespaces() -> list[str]:
    """Public submodules named in `gflow.__all__` (the paper namespaces, `gflow.saxe`, …)."""
    return [n for n in _all_of(PACKAGE / "__init__.py") if not n.startswith("_") and _module_file(n)]


def _is_module_name(name: str) -> bool:
    """True for a submodule (`gflow/<name>.py` or a package) or a module alias (`losses`)."""
    if _module_file(name):
        return True
    source = (PACKAGE / "__init__.py").read_text(encoding="utf-8")
    return bool(re.search(rf"^from \. import \w+ as {re.escape(name)}\b", source, re.M))


@cache
def _package():
    import griffe

    return griffe.load("gflow", search_paths=[str(ROOT)], resolve_aliases=False)


def _summary(namespace: str, name: str) -> str | None:
    """The first paragraph of the docstring of `gflow.<namespace>.<name>`; None when it has none
    (mkdocstrings then leaves it off the reference page, so the table must not link to it)."""
    try:
        doc = _package()[namespace][name].docstring
    except Exception:  # an unresolvable name: the reference page or the docstring test reports it
        return None
    if doc is None or not doc.value.strip():
        return None
    return doc.value.strip().split("\n\n")[0].replace("\n", " ").replace("|", "\\|")


def _value(namespace: str, name: str) -> str:
    """For an undocumented constant, its value as written (short ones only)."""
    try:
        obj = _package()[namespace][name]
        value = str(obj.value) if obj.is_attribute and obj.value is not None else ""
    except Exception:
        value = ""
    if value and len(value) <= 60:
        return f"constant: `{value.replace('|', chr(92) + '|')}`"
    return "(no docstring)"


def _core_markdown() -> str:
    out = []
    for title, members in _groups():
        rendered = [n for n in members if not n.startswith("_") and not _is_module_name(n)]
        if not rendered:
            continue
        out.append(f"## {title}\n")
        for name in rendered:
            out.append(f"::: gflow.{name}\n    options:\n      heading_level: 3\n")
    return "\n".join(out)


def _names_markdown(namespace: str) -> str:
    path = _module_file(namespace)
    if path is None:
        raise ValueError(f"`<!-- gflow-names: {namespace} -->`: gflow has no module {namespace!r}")
    rows = ["| name | summary |", "|---|---|"]
    for name in _all_of(path):
        summary = _summary(namespace, name)
        if summary is None:
            rows.append(f"| `{name}` | {_value(namespace, name)} |")
        else:
            rows.append(f"| [`{name}`][gflow.{namespace}.{name}] | {summary} |")
    return "\n".join(rows) + "\n"


def _registered_figures() -> list[tuple[str, str]]:
    """(name, description) of every `@register("name", "description")` decorator in the package."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for dec in node.decorator_list:
                if (
                    isinstance(dec, ast.Call)
                    and getattr(dec.func, "id", getattr(dec.func, "attr", None)) == "register"
                    and len(dec.args) >= 2
                    and all(isinstance(a, ast.Constant) for a in dec.args[:2])
                ):
                    found.append((dec.args[0].value, dec.args[1].value))
    return sorted(set(found))


def _figures_markdown(prefix: str) -> str:
    found = [(n, d) for n, d in _registered_figures() if n.startswith(prefix + "-")]
    if not found:
        return f"(No figure is registered as `{prefix}-…`; `gflow reproduce --list` lists all.)\n"
    rows = ["| `gflow reproduce NAME` | figure |", "|---|---|"]
    rows += [f"| `{name}` | {text.replace('|', chr(92) + '|')} |" for name, text in found]
    return "\n".join(rows) + "\n"


def on_config(config):
    nav = config["nav"]
    api = next((entry for entry in nav if isinstance(entry, dict) and "API reference" in entry), None)
    if api is None:
        api = {"API reference": []}
        nav.append(api)
    listed = {next(iter(e.values())) for e in api["API reference"] if isinstance(e, dict)}
    for name in namespaces():
        if f"api/{name}.md" not in listed:
            api["API reference"].append({f"gflow.{name}": f"api/{name}.md"})
    return config


def on_files(files, config):
    from mkdocs.structure.files import File  # here, so that the tests can load this file without mkdocs

    for name in namespaces():
        uri = f"api/{name}.md"
        if files.get_file_from_path(uri) is None:
            content = (
                f"# `gflow.{name}`\n\n"
                f"Generated from `{_module_file(name).relative_to(ROOT)}`: every name in its "
                "`__all__`, in that order.\n\n"
                f"::: gflow.{name}\n    options:\n      show_root_heading: false\n"
                "      heading_level: 2\n"
            )
            files.append(File.generated(config, uri, content=content))
    return files


def on_page_markdown(markdown, page, config, files):
    markdown = _API_MARK.sub(lambda m: _core_markdown(), markdown)
    markdown = _FIGURES_MARK.sub(lambda m: _figures_markdown(m.group(1)), markdown)
    return _NAMES_MARK.sub(lambda m: _names_markdown(m.group(1)), markdown)
