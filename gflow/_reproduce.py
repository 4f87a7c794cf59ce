"""Registry of reproduced figures: `gflow reproduce NAME` writes each as a PNG.

Figure modules register themselves on import with `@register(name, description)`; the
list of modules is fixed here (names are never imported from user text).
"""

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ._validate import message

_FIGURE_MODULES = (
    "gflow._theory.saxe.figures",
    "gflow._theory.ntk.figures",
    "gflow._theory.pellegrini_biroli.figures",
    "gflow._theory.bmz.figures",
    "gflow._theory.tachet.figures",
    "gflow._figures.gd_vs_flow",
)


@dataclass(frozen=True)
class Reproduction:
    name: str
    description: str
    make: Callable[[Path, bool], list[Path]]


REPRODUCTIONS: dict[str, Reproduction] = {}


def register(name: str, description: str):
    """Decorator: `make(out_dir: Path, small: bool) -> list[Path]` draws figure `name`."""

    def wrap(fn):
        REPRODUCTIONS[name] = Reproduction(name, description, fn)
        return fn

    return wrap


def load_all() -> dict[str, Reproduction]:
    for module in _FIGURE_MODULES:
        importlib.import_module(module)
    return REPRODUCTIONS


def select(name: str) -> list[Reproduction]:
    """`name` exactly, every figure of a paper by prefix (e.g. 'tachet'), or 'all'."""
    registry = load_all()
    if name == "all":
        return list(registry.values())
    if name in registry:
        return [registry[name]]
    chosen = [r for n, r in registry.items() if n.startswith(name + "-")]
    if not chosen:
        raise ValueError(message("NAME", f"be 'all', a paper prefix or one of {sorted(registry)}", repr(name)))
    return chosen


def reproduce(name: str, out_dir: str | Path = "reproduce_out", *, small: bool = False) -> list[Path]:
    """Draw the figure(s) `name` into `out_dir`; returns the PNG paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for r in select(name):
        paths.extend(r.make(out, small))
    return paths
