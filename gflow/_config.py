"""TOML run/sweep configs: validated against a schema, built from registries by name.

Never `eval`, `pickle` or import-by-string of user text: every model, loss, dataset, theory and
activation is looked up in a registry below. A config file looks like `examples/two_layer_sweep.toml`:

    precision = "float64"          # or "float32"
    loss = "squared_error"         # a name in gflow.losses.LOSSES
    [model]  name = "two_layer", d = 8, width = 8, activation = "tanh", init_scale = 1.0, …
    [data]   name = "teacher_student", n = 16, seed = 1, …
    [solve]  t1 = 10.0, num_times = 61, rtol, atol, max_steps, observables, loss_threshold, time_scale,
             solver = "auto" | "explicit" | "implicit"
    [sweep]  members = 64, seed = 0, chunk_size (optional), memory_budget_mb = 1024
    [grid]   init_scale = [0.5, 1.0]          # axes of the grid (cartesian product), or
             [grid.point] init_scale = […], time_scale = […]   # parameters varying together
             width = [4, 16, 64]              # two_layer only: padded to the largest width
             n = [16, 64, 256]                # data size: the first n samples of one pool
    [theory] name = "linearized_mse"          # optional: compared against by `gflow run`
"""

import difflib
import json
import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.random as jr

from ._data import Dataset, teacher_student, whitened_regression
from ._flow import GradientFlow
from ._flow.observables import OBSERVABLES
from ._losses import LOSSES
from ._models import MLP, DeepLinear, TwoLayer
from ._models.base import ACTIVATIONS
from ._models.two_layer import SCALINGS
from ._sweep.grid import grid_axes
from ._validate import message
from .ntk import LinearizedMSE
from .saxe import DeepLinearModes


class ConfigError(ValueError):
    """A config file with an unknown name, a missing key or a value of the wrong type."""


_REQUIRED = object()


@dataclass(frozen=True)
class Key:
    """One config key: its type ("int", "float", "bool", "str", "list[int]", "list[float]",
    "list[str]"), default (required if absent), allowed values, and bounds: `minimum` (the value,
    or every entry of a list, must be ≥ it, or > it with `strict`), `min_length` for lists.
    Floats (and float lists) must be finite: TOML's `nan` and `inf` are refused."""

    type: str
    default: Any = _REQUIRED
    choices: tuple | None = None
    minimum: int | float | None = None
    strict: bool = False
    min_length: int = 0

    def problem(self, value: Any) -> str | None:
        """What is wrong with a value of the right type ("be …"), or None."""
        values = value if isinstance(value, list) else [value]
        if isinstance(value, list) and len(value) < self.min_length:
            return f"list at least {self.min_length} entries"
        if self.type in ("float", "list[float]") and not all(math.isfinite(v) for v in values):
            return "be finite" if self.type == "float" else "hold finite numbers"
        if self.minimum is not None:
            op = ">" if self.strict else "≥"
            bad = [v for v in values if (v <= self.minimum if self.strict else v < self.minimum)]
            if bad:
                if isinstance(value, list):
                    return f"hold numbers {op} {self.minimum:g}"
                return f"be {op} {self.minimum:g}"
        return None


def _positive(kind: str, default: Any = _REQUIRED) -> Key:
    """A number > 0 (ints: ≥ 1)."""
    return Key(kind, default, minimum=1) if "int" in kind else Key(kind, default, minimum=0.0, strict=True)


def _nonnegative(kind: str, default: Any = _REQUIRED) -> Key:
    return Key(kind, default, minimum=0)


def _type_ok(kind: str, value: Any) -> bool:
    scalar = {
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "bool": lambda v: isinstance(v, bool),
        "str": lambda v: isinstance(v, str),
    }
    if kind.startswith("list["):
        inner = scalar[kind[5:-1]]
        return isinstance(value, list) and all(inner(v) for v in value)
    return scalar[kind](value)


def _got(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _unknown_key(where: str, unknown: list[str], known: list[str], tables: tuple = ()) -> ConfigError:
    """The error for unknown keys: all the known ones and the closest match."""
    name = unknown[0]
    close = difflib.get_close_matches(name, [*known, *tables], n=1, cutoff=0.7)
    more = f" (also unknown: {', '.join(unknown[1:])})" if len(unknown) > 1 else ""
    if where == "config":  # the top level: tables and keys
        fix = f"Did you mean [{close[0]}]?" if close and close[0] in tables else (
            f"Did you mean `{close[0]}`?" if close else None)
        return ConfigError(message(name, f"be a known table {sorted(tables)} or top-level key {sorted(known)}",
                                   f"an unknown table or key{more}", fix))
    fix = f"Did you mean `{where}.{close[0]}`?" if close else None
    return ConfigError(message(f"{where}.{name}", f"be one of the known keys {sorted(known)}",
                               f"an unknown key{more}", fix))


def _check_table(where: str, table: Any, schema: Mapping[str, Key], *, skip: tuple = ()) -> dict:
    """`table` checked against `schema`, defaults filled in; errors name `where.key`."""
    if not isinstance(table, Mapping):
        raise ConfigError(message(where, "be a table", _got(table)))
    unknown = sorted(set(table) - set(schema) - set(skip))
    if unknown:
        if where == "config":
            raise _unknown_key(where, unknown, sorted(schema), tuple(skip))
        raise _unknown_key(where, unknown, sorted({*schema, *skip}))
    out = {}
    for name, key in schema.items():
        if name not in table:
            if key.default is _REQUIRED:
                raise ConfigError(message(f"{where}.{name}", f"be given (type {key.type})", "nothing"))
            out[name] = key.default
            continue
        value = table[name]
        if not _type_ok(key.type, value):
            raise ConfigError(message(f"{where}.{name}", f"have type {key.type}", _got(value)))
        if key.choices is not None and value not in key.choices:
            raise ConfigError(message(f"{where}.{name}", f"be one of {key.choices}", repr(value)))
        problem = key.problem(value)
        if problem is not None:
            raise ConfigError(message(f"{where}.{name}", problem, repr(value)))
        out[name] = float(value) if key.type == "float" else value
    return out


def _lookup(where: str, registry: Mapping, name: Any):
    if not isinstance(name, str):
        raise ConfigError(message(where, f"be a name (str) from {sorted(registry)}", _got(name)))
    if name not in registry:
        raise ConfigError(message(where, f"name a registered entry: one of {sorted(registry)}", repr(name)))
    return registry[name]


@dataclass(frozen=True)
class Entry:
    """A registry entry: the keys it takes and `build(cfg, key, hyper) -> object`; for models and
    datasets, `sizes(cfg) -> {"in": (key, d), "out": (key, k)}` (the keys that set the input
    and output sizes, checked against each other across [model] and [data]) and `check(cfg)`,
    cross-key constraints raising `ConfigError`."""

    keys: Mapping[str, Key]
    build: Callable
    sizes: Callable | None = None
    check: Callable | None = None


_ACT = tuple(ACTIVATIONS)

MODELS: dict[str, Entry] = {
    "two_layer": Entry(
        {"d": _positive("int"), "width": _positive("int"), "activation": Key("str", "relu", _ACT),
         "out_dim": _positive("int", 1), "scaling": Key("str", "standard", SCALINGS),
         "alpha": Key("float", 1.0), "init_scale": _nonnegative("float", 1.0), "sphere": Key("bool", False),
         "train_first": Key("bool", True), "train_second": Key("bool", True), "bias": Key("bool", False)},
        lambda c, key, h: TwoLayer(
            c["d"], c["width"], c["activation"], out_dim=c["out_dim"], scaling=c["scaling"],
            alpha=c["alpha"], init_scale=h.get("init_scale", c["init_scale"]), sphere=c["sphere"],
            train_first=c["train_first"], train_second=c["train_second"], bias=c["bias"], key=key,
            active_width=h.get("width")),
        sizes=lambda c: {"in": ("d", c["d"]), "out": ("out_dim", c["out_dim"])},
    ),
    "deep_linear": Entry(
        {"widths": Key("list[int]", minimum=1, min_length=3), "init_scale": _nonnegative("float", 1.0)},
        lambda c, key, h: DeepLinear(c["widths"], init_scale=h.get("init_scale", c["init_scale"]), key=key),
        sizes=lambda c: {"in": ("widths[0]", c["widths"][0]), "out": ("widths[-1]", c["widths"][-1])},
    ),
    "mlp": Entry(
        {"widths": Key("list[int]", minimum=1, min_length=2), "activation": Key("str", "tanh", _ACT),
         "bias": Key("bool", True), "init_scale": _nonnegative("float", 1.0)},
        lambda c, key, h: MLP(c["widths"], c["activation"], bias=c["bias"],
                              init_scale=h.get("init_scale", c["init_scale"]), key=key),
        sizes=lambda c: {"in": ("widths[0]", c["widths"][0]), "out": ("widths[-1]", c["widths"][-1])},
    ),
}


def _teacher_student(c, key, h):
    k_teacher, k_data = jr.split(key)
    teacher = TwoLayer(c["d"], c["teacher_width"], c["teacher_activation"], key=k_teacher)
    return teacher_student(c["d"], c["n"], teacher, key=k_data, noise=c["noise"], labels=c["labels"])


def _check_whitened(c):
    r, d_in, d_out = len(c["singular_values"]), c["d_in"], c["d_out"]
    if r > min(d_in, d_out):
        raise ConfigError(message("data.singular_values",
                                  f"have at most min(data.d_in, data.d_out) = {min(d_in, d_out)} entries",
                                  f"{r} entries"))
    if c["n"] < d_in:
        raise ConfigError(message("data.n", f"be ≥ data.d_in = {d_in} (a full-rank input covariance)", c["n"]))


DATASETS: dict[str, Entry] = {
    "teacher_student": Entry(
        {"d": _positive("int"), "n": _positive("int"), "seed": Key("int", 0), "teacher_width": _positive("int", 4),
         "teacher_activation": Key("str", "tanh", _ACT), "noise": _nonnegative("float", 0.0),
         "labels": Key("str", "regression", ("regression", "sign"))},
        _teacher_student,
        sizes=lambda c: {"in": ("d", c["d"]), "out": (None, 1)},  # a scalar teacher output
    ),
    "whitened_regression": Entry(
        {"singular_values": Key("list[float]", minimum=0, min_length=1), "d_in": _positive("int"),
         "d_out": _positive("int"), "n": _positive("int"), "noise": _nonnegative("float", 0.0), "seed": Key("int", 0)},
        lambda c, key, h: whitened_regression(
            [float(s) for s in c["singular_values"]], c["d_in"], c["d_out"], c["n"], noise=c["noise"], key=key),
        sizes=lambda c: {"in": ("d_in", c["d_in"]), "out": ("d_out", c["d_out"])},
        check=_check_whitened,
    ),
}

THEORIES: dict[str, Entry] = {
    "linearized_mse": Entry({}, lambda c, flow, h: LinearizedMSE.from_flow(flow)),
    "deep_linear_modes": Entry({}, lambda c, flow, h: DeepLinearModes.from_flow(flow)),
}

#: Grid parameters a config may sweep, and where they go. `width` and `n` are padded: the
#: model is built at the largest width with `active_width`, the data at the largest n and each
#: member trains on its first n samples (`Dataset.first`), so the whole grid is one compile.
SWEEPABLE = {"init_scale": "model", "time_scale": "flow", "width": "model", "n": "data"}
_INTEGER_GRID = ("width", "n")

_TOP = {"name": Key("str", "gflow"), "precision": Key("str", "float64", ("float64", "float32")),
        "loss": Key("str")}
_SOLVE = {"t1": _positive("float"), "num_times": Key("int", 61, minimum=2), "rtol": _positive("float", 1e-8),
          "atol": _positive("float", 1e-10), "max_steps": _positive("int", 16_384),
          "observables": Key("list[str]", ["loss"]), "loss_threshold": Key("float", 1e-3),
          "time_scale": _positive("float", 1.0), "solver": Key("str", "auto", ("auto", "explicit", "implicit"))}
_SWEEP = {"members": _positive("int", 1), "seed": Key("int", 0),
          "chunk_size": _nonnegative("int", 0),  # 0: from the memory budget
          "memory_budget_mb": _positive("float", 1024.0)}
#: Bounds on grid values (beyond finiteness; `width` and `n` are integers ≥ 1).
_GRID_KEYS = {"init_scale": _nonnegative("list[float]"), "time_scale": _positive("list[float]"),
              "width": _positive("list[float]"), "n": _positive("list[float]")}


_FACTORIES: dict[str, Callable] = {}


@dataclass(frozen=True)
class Config:
    """A validated config (`raw`: the tables with defaults filled in); builds flows and sweeps."""

    raw: dict
    source: str

    @property
    def model(self) -> dict:
        """The `[model]` table, with defaults filled in."""
        return self.raw["model"]

    def grid_values(self) -> dict[str, list[float]]:
        """{parameter: its grid values}, over every axis of `[grid]`."""
        out = {}
        for dim, entry in self.raw["grid"].items():
            out.update(entry if isinstance(entry, dict) else {dim: entry})
        return out

    def dataset(self) -> Dataset:
        """The training data (with `n` swept: the pool of the largest n, unpadded)."""
        c = self.raw["data"]
        n = self.grid_values().get("n")
        if n is not None:
            c = {**c, "n": int(max(n))}
        return DATASETS[c["name"]].build(c, jr.PRNGKey(c["seed"]), {})

    def flow_factory(self) -> Callable:
        """`make_flow(key, hyper) -> GradientFlow` for `gflow.sweep` (the data built once; the
        same function for equal configs, so a rerun in the same process reuses the compile)."""
        text = json.dumps(self.raw, sort_keys=True)
        if text not in _FACTORIES:
            _FACTORIES[text] = self._make_factory()
        return _FACTORIES[text]

    def _make_factory(self) -> Callable:
        data = self.dataset()
        model_entry = MODELS[self.model["name"]]
        loss = LOSSES[self.raw["loss"]]
        time_scale = self.raw["solve"]["time_scale"]
        widths = self.grid_values().get("width")
        model_cfg = self.model if widths is None else {**self.model, "width": int(max(widths))}

        def make_flow(key, hyper):
            model = model_entry.build(model_cfg, key, hyper)
            member_data = data.first(hyper["n"]) if "n" in hyper else data
            return GradientFlow(model, loss, member_data, time_scale=hyper.get("time_scale", time_scale))

        make_flow.__qualname__ = f"config[{self.raw['name']}].make_flow"
        return make_flow

    def grid(self) -> dict:
        """The `[grid]` table: {axis: values} or {axis: {parameter: values}} for joint axes."""
        return self.raw["grid"]

    def theory(self, flow: GradientFlow):
        """The `[theory]` named in the config, seeded from `flow`; None if the config names none."""
        if "theory" not in self.raw:
            return None
        c = self.raw["theory"]
        return THEORIES[c["name"]].build(c, flow, {})

    def sweep_kwargs(self) -> dict:
        """Keyword arguments of `gflow.sweep` (all but `out`, `progress` and the process layout)."""
        s, v = self.raw["solve"], self.raw["sweep"]
        return dict(
            grid=self.grid(), seed=v["seed"], num_times=s["num_times"], observables=tuple(s["observables"]),
            loss_threshold=s["loss_threshold"], rtol=s["rtol"], atol=s["atol"], max_steps=s["max_steps"],
            solver=s["solver"], chunk_size=v["chunk_size"] or None, memory_budget=v["memory_budget_mb"] * 2.0**20,
            # The recorded config, less what only schedules the work (chunking, memory): a rerun
            # with another chunk size resumes the same store.
            config={**self.raw, "sweep": {k: v for k, v in self.raw["sweep"].items()
                                          if k not in ("chunk_size", "memory_budget_mb")}},
        )


def _check_grid_values(where: str, name: str, values: Any) -> list[float]:
    if name not in SWEEPABLE:
        raise ConfigError(message(where, f"name a sweepable parameter: one of {sorted(SWEEPABLE)}", repr(name)))
    if not _type_ok("list[float]", values) or not values:
        raise ConfigError(message(where, "have type list[float] (non-empty)", _got(values)))
    if not all(math.isfinite(v) for v in values):
        raise ConfigError(message(where, "hold finite numbers", repr(values)))
    if name in _INTEGER_GRID and not all(float(v).is_integer() and v >= 1 for v in values):
        raise ConfigError(message(where, "hold integers ≥ 1", _got(values)))
    problem = _GRID_KEYS[name].problem(values)
    if problem is not None:
        raise ConfigError(message(where, problem, repr(values)))
    return [float(x) for x in values]


def _check_grid(grid: Any) -> dict:
    if not isinstance(grid, Mapping):
        raise ConfigError(message("grid", "be a table", _got(grid)))
    axes = grid_axes(grid, _check_grid_values, error=ConfigError,
                     where=lambda dim, name: f"grid.{dim}" if name == dim else f"grid.{dim}.{name}")
    return {dim: (values if isinstance(grid[dim], Mapping) else values[dim]) for dim, values in axes}


def _check_sizes(model: dict, data: dict) -> None:
    """The model's input/output sizes against the data's (both tables checked already)."""
    m_entry, d_entry = MODELS[model["name"]], DATASETS[data["name"]]
    for entry, c in ((m_entry, model), (d_entry, data)):
        if entry.check is not None:
            entry.check(c)
    if m_entry.sizes is None or d_entry.sizes is None:
        return
    m_sizes, d_sizes = m_entry.sizes(model), d_entry.sizes(data)
    for side, what in (("in", "input size"), ("out", "output size")):
        (m_key, m_val), (d_key, d_val) = m_sizes[side], d_sizes[side]
        if m_val != d_val:
            theirs = (f"`data.{d_key}` = {d_val}" if d_key
                      else f"{d_val} (data.name = {data['name']!r} has scalar targets)")
            raise ConfigError(message(f"model.{m_key}", f"equal the data's {what}, {theirs}", m_val,
                                      f"Set `model.{m_key}` = {d_val}"
                                      + (f" or `data.{d_key}` = {m_val}." if d_key else ".")))


def parse_config(table: Mapping, source: str = "<config>") -> Config:
    """Validate a parsed TOML table; raises `ConfigError` naming the key, type and value."""
    if not isinstance(table, Mapping):
        raise ConfigError(message("config", "be a TOML table", _got(table)))
    raw = _check_table("config", table, _TOP, skip=("model", "data", "solve", "sweep", "grid", "theory"))
    _lookup("loss", LOSSES, raw["loss"])
    for section, registry in (("model", MODELS), ("data", DATASETS)):
        tab = table.get(section)
        if not isinstance(tab, Mapping):
            raise ConfigError(message(section, "be a table with a `name`", _got(tab)))
        entry = _lookup(f"{section}.name", registry, tab.get("name"))
        raw[section] = {"name": tab["name"], **_check_table(section, tab, entry.keys, skip=("name",))}
    raw["solve"] = _check_table("solve", table.get("solve", {}), _SOLVE)
    for i, name in enumerate(raw["solve"]["observables"]):
        _lookup(f"solve.observables[{i}]", OBSERVABLES, name)
    _check_sizes(raw["model"], raw["data"])
    raw["sweep"] = _check_table("sweep", table.get("sweep", {}), _SWEEP)
    raw["grid"] = _check_grid(table.get("grid", {}))
    swept = Config(raw, source).grid_values()
    if "width" in swept and raw["model"]["name"] != "two_layer":
        raise ConfigError(message("grid.width", "be swept only with model.name = 'two_layer' (padded width)",
                                  f"model.name = {raw['model']['name']!r}"))
    if "n" in swept and "n" not in raw["data"]:
        raise ConfigError(message("grid.n", "be swept only with a dataset that has an `n` key",
                                  f"data.name = {raw['data']['name']!r}"))
    if "theory" in table:
        tab = table["theory"]
        if not isinstance(tab, Mapping):
            raise ConfigError(message("theory", "be a table with a `name`", _got(tab)))
        entry = _lookup("theory.name", THEORIES, tab.get("name"))
        raw["theory"] = {"name": tab["name"], **_check_table("theory", tab, entry.keys, skip=("name",))}
    return Config(raw, source)


def load_config(path: str | os.PathLike) -> Config:
    """Read and validate a TOML config file (see the module docstring for its tables)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(message("CONFIG", "be a readable TOML file", f"{str(path)!r} ({e.strerror})")) from None
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(message(f"CONFIG {path}", "be valid TOML", f"a parse error: {e}")) from None
    return parse_config(table, str(path))


def apply_precision(config: Config) -> None:
    """Turn on float64 if the config asks for it (before any array is made)."""
    jax.config.update("jax_enable_x64", config.raw["precision"] == "float64")
