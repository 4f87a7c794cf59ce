"""Shared tiny problems, tolerances and checks for the test-suite."""

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

import gflow as gf

REPO = Path(__file__).resolve().parents[1]

#: Solver tolerances for every theory-vs-simulation check (float64).
SOLVER_RTOL = 1e-10
SOLVER_ATOL = 1e-12

#: Saxe grid (classic.md §A.7): t = 0 ∪ logspace(-4, 2, 121), 6 decades.
SAXE_TIMES = jnp.concatenate([jnp.zeros(1), jnp.logspace(-4, 2, 121)])


def tree_allclose(x, y, *, rtol=1e-5, atol=1e-8) -> bool:
    """True when two pytrees have the same structure and allclose leaves."""
    if jax.tree_util.tree_structure(x) != jax.tree_util.tree_structure(y):
        return False
    return all(
        np.allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol, equal_nan=True)
        for a, b in zip(jax.tree_util.tree_leaves(x), jax.tree_util.tree_leaves(y))
    )


def saxe_balanced_problem(key=jr.PRNGKey(0), u0=(1e-3, 1e-3, 0.3)):
    """classic.md A1: 6 → 4 → 3, P = 24, s = (3, 1.2, 0), whitened, balanced aligned init."""
    data = gf.whitened_regression([3.0, 1.2, 0.0], 6, 3, 24, noise=0.3, key=key)
    a = jnp.sqrt(jnp.asarray(u0))
    model = gf.DeepLinear.aligned(data.modes.V, data.modes.U, jnp.stack([a, a]), [4], key=jr.PRNGKey(1))
    return gf.GradientFlow(model, gf.squared_error, data)


def saxe_unbalanced_problem(key=jr.PRNGKey(0)):
    """classic.md A2: 6 → 5 → 4, Sxx ≠ I, unbalanced aligned init."""
    data = gf.whitened_regression(
        [2.0, 1.0, 0.5, 0.8], 6, 4, 30, input_variances=[1.5, 0.7, 1.1, 1.3, 1.0, 1.0], key=key
    )
    a0 = jnp.array([0.3, 0.05, 0.5, 0.02])
    b0 = jnp.array([0.01, -0.2, -0.02, 0.4])
    model = gf.DeepLinear.aligned(data.modes.V, data.modes.U, jnp.stack([a0, b0]), [5], key=jr.PRNGKey(1))
    return gf.GradientFlow(model, gf.squared_error, data)


def saxe_deep_problem(key=jr.PRNGKey(0)):
    """classic.md A3: D = 3, 5 → 4 → 4 → 3, Sxx ≠ I, balanced aligned init."""
    data = gf.whitened_regression([2.0, 0.8], 5, 3, 20, input_variances=[1.3, 0.6, 1.0, 1.0, 1.0], key=key)
    a = jnp.array([1e-3, 1e-2]) ** (1 / 3)
    model = gf.DeepLinear.aligned(data.modes.V, data.modes.U, jnp.stack([a, a, a]), [4, 4], key=jr.PRNGKey(1))
    return gf.GradientFlow(model, gf.squared_error, data)


def ntk_problem(width: int, key=jr.PRNGKey(0), scaling="ntk", n=8, d=3):
    """classic.md §B: tanh net, d = 3, n = 8, NTK scaling."""
    kx, ky, km = jr.split(key, 3)
    x = jr.normal(kx, (n, d))
    y = jnp.sin(x @ jnp.array([1.0, -0.5, 0.3]))[:, None]
    model = gf.TwoLayer(d, width, "tanh", scaling=scaling, key=km)
    return gf.GradientFlow(model, gf.squared_error, gf.Dataset(x, y))


def run_notebook(path, **env) -> dict:
    """Execute a notebook's code cells in-process with GFLOW_SMALL=1; returns its namespace."""
    nb = json.loads(Path(path).read_text())
    namespace: dict = {"__name__": "__notebook__"}
    old = {k: os.environ.get(k) for k in ("GFLOW_SMALL", *env)}
    os.environ["GFLOW_SMALL"] = "1"
    os.environ.update(env)
    try:
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                src = "".join(cell["source"])
                src = "\n".join(l for l in src.splitlines() if not l.lstrip().startswith(("%", "!")))
                exec(compile(src, str(path), "exec"), namespace)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return namespace


def with_changes(table: dict, **changes) -> dict:
    """`table` with nested `section__key = value` changes applied in place (None deletes the key;
    a dict value replaces a whole table); returns it."""
    for path, value in changes.items():
        *head, last = path.split("__")
        t = table
        for part in head:
            t = t[part]
        if value is None:
            del t[last]
        else:
            t[last] = value
    return table


# --- The shared theory table (as optax tests every optimizer from one table) -----------------
# Each row is one theory on one tiny problem; tests/test_theories.py puts every row through the
# same five checks: agreement with the simulation, exactness at t = 0, plain/jit/vmap/jit∘vmap,
# the negative control, and the regime errors. Rows live in tests/cases_<paper>.py, one file per
# paper, and are collected here. Adding a theory is adding a row.


@dataclasses.dataclass(frozen=True)
class TheoryCase:
    """One row of THEORY_CASES.

    - `make_flow() -> GradientFlow`: the tiny float64 problem (called once per test process).
    - `theory`: the theory class; seeded by `theory.from_flow(flow, **options)`.
    - `t1`, `ts`: horizon and save grid (flow clock); `ts` defaults to 0 ∪ a log grid to t1.
    - `tolerance`: the bound on `compare(...)` for every observable; the row's comment derives it
      from the integrator's rtol (or from the theory's own accuracy when it is asymptotic).
    - `observables`: names compared (default: all the theory names in `theory.observables`).
    - `perturb(flow) -> flow`: the negative control, a flow whose start differs; the theory seeded
      from it must miss the original simulation by more than `control_factor × tolerance`.
    - `regime_errors`: ((make_bad_flow, options, regex), …): flows `from_flow` must refuse with an
      error whose message matches `regex`.
    - `solve_options` / `compare_options` / `evaluate_options`: passed to solve_flow / compare /
      evaluate.
    """

    name: str
    make_flow: Callable
    theory: type
    t1: float
    tolerance: float
    perturb: Callable
    regime_errors: tuple = ()
    options: dict = dataclasses.field(default_factory=dict)
    observables: tuple | None = None
    ts: Callable | None = None
    control_factor: float = 10.0
    t0_tolerance: float = 1e-10
    transform_rtol: float = 1e-9  # plain vs jit/vmap: the same computation, to round-off (an
    transform_atol: float = 1e-12  # adaptive solve of a discontinuous field may need more)
    solve_options: dict = dataclasses.field(
        default_factory=lambda: {"rtol": SOLVER_RTOL, "atol": SOLVER_ATOL})
    compare_options: dict = dataclasses.field(default_factory=dict)
    evaluate_options: dict = dataclasses.field(default_factory=dict)

    def times(self):
        if self.ts is not None:
            return jnp.asarray(self.ts())
        return jnp.concatenate([jnp.zeros(1), jnp.logspace(-3, 0, 40) * self.t1])

    def __repr__(self):  # pytest ids
        return self.name


def _collect_cases():
    import importlib

    cases = []
    for paper in ("saxe", "ntk", "tachet", "pellegrini_biroli", "bmz", "central_flow"):
        try:
            module = importlib.import_module(f"cases_{paper}")
        except ModuleNotFoundError as e:
            if e.name != f"cases_{paper}":
                raise
            continue
        cases.extend(module.CASES)
    return tuple(cases)


def __getattr__(name):
    # THEORY_CASES is collected on first use (not at import), so the cases files may import
    # this module's problem factories.
    if name == "THEORY_CASES":
        global THEORY_CASES
        THEORY_CASES = _collect_cases()
        return THEORY_CASES
    raise AttributeError(name)
