"""Sweeps: many gradient flows (initialisations × a hyperparameter grid) in one compiled call.

Every member is `solve_flow(make_flow(key, hyperparameters), t1, throw=False)`; members are
batched with `jax.vmap`, split across local devices with `jax.shard_map` (a per-device vmap), run
in fixed-size chunks (one compile for the whole sweep) and, with `out=`, written chunk by chunk to
a resumable Zarr store (see `gflow._store`). Across hosts (after `jax.distributed.initialize`)
each process runs its own chunks and writes them to the shared store; no communication is needed.
"""

import hashlib
import json
import math
import os
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ._flow import GradientFlow, default_times, solve_flow
from ._flow.solve import energy_residual
from ._flow.observables import resolve_observables
from ._flow.solve import _SaveObservables
from ._flow.solvers import AutoSwitch, resolve_solver
from ._runner import SlotProgram, run_queue, slot_functions, step_budget
from ._store import FORMAT, MANIFEST, MemoryStore, SweepWarning, ZarrStore, json_normal, read_manifest, read_store
from ._validate import check_increasing_times, message

#: Result codes beyond diffrax's own `RESULTS` values (which are ≥ 0).
NONFINITE_INIT = -1
NONFINITE_LOSS = -2
NOT_RUN = -100
_R = diffrax.RESULTS
_OK_CODES = (int(_R.successful._value), int(_R.event_occurred._value))
_REASONS = {
    NONFINITE_INIT: "non-finite initial parameters",
    NONFINITE_LOSS: "non-finite loss at the final time",
    NOT_RUN: "not run yet",
    int(_R.max_steps_reached._value): "max_steps reached",
    int(_R.dt_min_reached._value): "diverged: the step size collapsed (finite-time blow-up, or too stiff for any step)",
    int(_R.nonfinite._value): "diverged: non-finite values in the solve",
}
SUMMARIES = ("final_loss", "t_final", "num_steps", "num_rejected_steps", "result", "energy_residual",
             "time_to_loss_below", "plateau_exit_time", "time_to_all_correct")


def reason(code: int) -> str:
    """Why a member failed, from its stored `result` code."""
    return _REASONS.get(int(code), f"diffrax result code {int(code)}")


class SweepError(RuntimeError):
    """Some members of a sweep failed and `on_failure="raise"` was asked for (results are kept)."""


def parse_grid(grid: Mapping | None) -> list[tuple[str, dict[str, np.ndarray]]]:
    """`grid` -> [(dim, {parameter: 1-D values})]: the sweep's grid axes, in order.

    A `name: 1-D values` entry is its own axis (cartesian product with the others); a
    `dim: {name: values, …}` entry is one axis along which several parameters vary together
    (their arrays must have equal lengths).
    """
    if grid is None:
        return []
    if not isinstance(grid, Mapping):
        raise TypeError(message("grid", "be a dict {name: 1-D values} (or {dim: {name: values}})", type(grid).__name__))
    axes, seen = [], set()
    for dim, entry in grid.items():
        if dim in ("member", "time"):
            raise ValueError(message(f"grid[{dim!r}]", "use a name other than the result's own dims 'member' and 'time'",
                                     repr(dim)))
        params = entry if isinstance(entry, Mapping) else {dim: entry}
        if not params:
            raise ValueError(message(f"grid[{dim!r}]", "hold at least one parameter", "an empty table"))
        values = {}
        for name, v in params.items():
            where = f"grid[{dim!r}]" if name == dim else f"grid[{dim!r}][{name!r}]"
            if not isinstance(name, str) or name in seen:
                raise ValueError(message(where, "name each parameter once", repr(name)))
            seen.add(name)
            arr = np.asarray(v)
            real = np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
            if arr.ndim != 1 or arr.shape[0] == 0 or not real:
                raise ValueError(message(where, "be a non-empty 1-D array of real numbers",
                                         f"{arr.dtype} array of shape {arr.shape}"))
            values[name] = arr.astype(float)
            bad = np.flatnonzero(~np.isfinite(values[name]))
            if bad.size:
                raise ValueError(message(f"{where}[{int(bad[0])}]", "be finite", f"{values[name][bad[0]]}"))
        lengths = {name: a.shape[0] for name, a in values.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(message(f"grid[{dim!r}]",
                                     "hold arrays of equal length (they vary together along one axis)", lengths))
        axes.append((dim, values))
    return axes


def _member_keys(members, seed: int) -> tuple[np.ndarray, bool]:
    """Raw uint32 key data (M, …) and whether the keys were typed (new-style) keys."""
    if isinstance(members, bool) or not (isinstance(members, int) or hasattr(members, "shape")):
        raise TypeError(message("members", "be a member count (int) or an array of PRNG keys", type(members).__name__))
    if isinstance(members, int):
        if members < 1:
            raise ValueError(message("members", "be ≥ 1", members))
        return np.asarray(jr.split(jr.PRNGKey(seed), members)), False
    if jnp.issubdtype(members.dtype, jax.dtypes.prng_key):
        if members.ndim != 1:
            raise ValueError(message("members", "be a 1-D array of typed PRNG keys", f"shape {members.shape}"))
        return np.asarray(jr.key_data(members)), True
    if members.ndim != 2 or members.dtype != np.uint32:
        raise ValueError(message("members", "be an array of keys from jax.random.split, shape (M, 2) uint32",
                                 f"{members.dtype} array of shape {members.shape}"))
    return np.asarray(members), False


def _first_crossing(ts, values, level, interpolate=True):
    """First time `values` (T,) is ≤ `level`, linearly interpolated on the save grid; inf if never."""
    below = jnp.isfinite(values) & (values <= level)
    i = jnp.argmax(below)
    hit = jnp.any(below)
    j = jnp.maximum(i - 1, 0)
    v0, v1 = values[j], values[i]
    frac = jnp.where(v0 > v1, (v0 - level) / jnp.where(v0 > v1, v0 - v1, 1.0), 1.0)
    t = ts[j] + jnp.clip(frac, 0.0, 1.0) * (ts[i] - ts[j]) if interpolate else ts[i]
    t = jnp.where(i == 0, ts[0], t)
    return jnp.where(hit, t, jnp.inf)


class _Member(eqx.Module):
    """One sweep member: how it is built from (key, hyper) and what is stored of its solve."""

    make_flow: Callable = eqx.field(static=True)
    ts: Float[Array, " times"]
    observables: tuple = eqx.field(static=True)
    loss_threshold: float = eqx.field(static=True)
    typed_keys: bool = eqx.field(static=True)

    def build(self, key_data, hyper):
        """(flow with a finite params0, whether the given params0 was finite)."""
        key = jr.wrap_key_data(key_data) if self.typed_keys else key_data
        flow = self.make_flow(key, hyper)
        if not isinstance(flow, GradientFlow):
            raise TypeError(message("make_flow(key, hyperparameters)", "return a gflow.GradientFlow", type(flow).__name__))
        leaves = jax.tree_util.tree_leaves(flow.params0)
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))
        # A non-finite init is recorded as this member's failure instead of stopping the batch.
        clean = jax.tree_util.tree_map(lambda x: jnp.where(finite, x, jnp.zeros_like(x)), flow.params0)
        return eqx.tree_at(lambda f: f.params0, flow, clean), finite

    def flow(self, key_data, hyper):
        return self.build(key_data, hyper)[0]

    def summarize(self, flow, finite, saved, params_final, t_final, num_steps, num_rejected, code, residual):
        """The stored variables of one member: its observables on `ts` and the summaries."""
        final_loss = flow.loss_value(params_final)
        code = jnp.where(finite, code, NONFINITE_INIT)
        code = jnp.where((code == 0) & ~jnp.isfinite(final_loss), NONFINITE_LOSS, code)
        loss = saved["loss"]
        half = 0.5 * (loss[0] + final_loss)  # plateau exit: half of the total decrease made
        out = {name: saved[name] for name, _ in self.observables}
        out.update(
            final_loss=jnp.where(finite, final_loss, jnp.nan),
            t_final=t_final,
            num_steps=num_steps,
            num_rejected_steps=num_rejected,
            result=code.astype(jnp.int32),
            energy_residual=residual,
            time_to_loss_below=_first_crossing(self.ts, loss, self.loss_threshold),
            plateau_exit_time=jnp.where(loss[0] > final_loss, _first_crossing(self.ts, loss, half), jnp.inf),
        )
        if "classification_error" in saved:
            out["time_to_all_correct"] = _first_crossing(self.ts, saved["classification_error"], 0.0, interpolate=False)
        return out

    def readout(self, state, key_data, hyper):
        """`summarize` of a finished slot of the slot runner."""
        flow, finite = self.build(key_data, hyper)
        params, energy = state.y
        residual = energy_residual(flow.loss_value(flow.params0), flow.loss_value(params), energy)
        return self.summarize(flow, finite, state.saved, params, state.t, state.num_steps,
                              state.num_rejected_steps, state.result, residual)


def _member_solver(make_flow, t1, ts, observables, solve_kwargs, loss_threshold, typed_keys):
    """(`solve_one(key, hyper) -> (stored variables, flow)`, the `_Member`)."""
    obs = resolve_observables(observables)
    if "loss" not in obs:
        obs = {"loss": "loss", **obs}
    clash = set(obs) & set(SUMMARIES)
    if clash:
        raise ValueError(message("observables", f"use names other than the summaries {SUMMARIES}", sorted(clash)))
    member = _Member(make_flow, jnp.asarray(ts), tuple(obs.items()), loss_threshold, typed_keys)

    def solve_one(key_data, hyper):
        flow, finite = member.build(key_data, hyper)
        sol = solve_flow(flow, t1, ts=ts, observables=obs, throw=False, **solve_kwargs)
        out = member.summarize(flow, finite, sol.observables, sol.params_final, sol.t_final,
                               sol.stats["num_steps"], sol.stats["num_rejected_steps"], sol.result._value,
                               sol.stats["energy_residual"])
        return out, flow

    return solve_one, member


def _describe(fn) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"


_ADDRESS = re.compile(r"0x[0-9a-fA-F]+")


def _canonical(text: str) -> str:
    """`text` without memory addresses (they differ between processes)."""
    return _ADDRESS.sub("0x", text)


def _describe_solver(solver) -> str:
    return "Tsit5 (default)" if solver is None else _canonical(repr(solver))


def _all_consts(closed) -> list:
    """The constants of a closed jaxpr and of every closed jaxpr in its equations' params."""
    from jax.extend.core import ClosedJaxpr, Jaxpr

    consts, stack, seen = list(closed.consts), [closed.jaxpr], set()
    while stack:
        jaxpr = stack.pop()
        if id(jaxpr) in seen:
            continue
        seen.add(id(jaxpr))
        for eqn in jaxpr.eqns:
            for value in eqn.params.values():
                for v in value if isinstance(value, (tuple, list)) else (value,):
                    if isinstance(v, ClosedJaxpr):
                        consts.extend(v.consts)
                        stack.append(v.jaxpr)
                    elif isinstance(v, Jaxpr):
                        stack.append(v)
    return consts


def computation_fingerprint(closed) -> str:
    """SHA-256 of a traced per-member computation: the jaxpr's text (memory addresses removed:
    it is the same in every process) and the bytes, shape and dtype of every constant (arrays
    `make_flow` closes over, e.g. the data)."""
    h = hashlib.sha256(_canonical(str(closed.jaxpr)).encode())
    for c in _all_consts(closed):
        if hasattr(c, "dtype") and jnp.issubdtype(c.dtype, jax.dtypes.prng_key):
            c = jr.key_data(c)
        try:
            a = np.asarray(c)
        except Exception:  # an opaque constant: its text
            h.update(_canonical(repr(c)).encode())
            continue
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:32]


#: Traced per-member computations of recent sweeps (with their compiled chunk solvers):
#: rerunning (or resuming) a sweep in the same process with the same `make_flow` object and
#: settings reuses the trace and the compile.
_MEMBERS: dict = {}


def _cache_key(make_flow, t1, ts, observables, solve_kwargs, loss_threshold, typed, in_specs):
    obs = tuple(resolve_observables(observables).items())
    key = (make_flow, t1, np.asarray(ts).tobytes(), obs, tuple(sorted(solve_kwargs.items(), key=lambda kv: kv[0])),
           loss_threshold, typed, jax.config.jax_enable_x64, str(jax.config.jax_default_matmul_precision),
           tuple(sorted(in_specs[1])),
           tuple((x.shape, str(x.dtype)) for x in jax.tree_util.tree_leaves(in_specs)))
    try:
        hash(key)
    except TypeError:  # e.g. an unhashable solver: no reuse
        return None
    return key


def config_hash(spec: Mapping) -> str:
    """A short SHA-256 of a JSON-able sweep description (keys sorted)."""
    text = json.dumps(spec, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _versions() -> dict[str, str]:
    from ._version import __version__

    precision = jax.config.jax_default_matmul_precision
    return {
        "gflow_version": __version__,
        "jax_version": jax.__version__,
        "diffrax_version": diffrax.__version__ if hasattr(diffrax, "__version__") else "?",
        "dtype": str(jnp.zeros(()).dtype) if jax.config.jax_enable_x64 else "float32",
        "matmul_precision": "default" if precision is None else str(precision),
    }


def sweep(
    make_flow: Callable[[PRNGKeyArray, dict[str, Float[Array, ""]]], GradientFlow],
    members: int | Array,
    t1: float | int,
    *,
    grid: Mapping | None = None,
    seed: int = 0,
    ts: Float[Array, " times"] | None = None,
    num_times: int = 61,
    observables: Sequence[str | Callable] | dict[str, str | Callable] = ("loss",),
    loss_threshold: float = 1e-3,
    solver: diffrax.AbstractSolver | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    max_steps: int = 16_384,
    chunk_size: int | None = None,
    memory_budget: float | int = 2.0**30,
    out: str | os.PathLike | None = None,
    config: Mapping | None = None,
    on_failure: str = "warn",
    progress: bool = True,
    devices: Sequence | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
    slots: int | None = None,
    runner_stats: dict | None = None,
):
    """Solve the gradient flow for `members` initialisations at every point of `grid`.

    - `make_flow(key, hyper) -> GradientFlow`: builds one member from its PRNG key and a dict of
      scalar hyperparameters {name: value} (one entry per grid parameter); it is traced once
      for the whole sweep (one member on abstract inputs), so it must use `hyper` with jnp
      operations (e.g. `init_scale`, `time_scale`), and
      every member must have the same array shapes. Widths and data sizes are grid axes by
      padding: `TwoLayer(d, max_width, active_width=hyper["width"], key=key)` and
      `data.first(hyper["n"])` give each member the flow of its real width and data size (the
      1/√m or α/m output scale and the adaptive step control are those of the real problem, so
      a padded member equals the unpadded solve to round-off; `flow.unpadded()` is that solve).
    - `members`: a count M (keys `jax.random.split(PRNGKey(seed), M)`, the same keys at every grid
      point) or an array of keys.
    - `grid`: {name: 1-D values} (cartesian product of the axes) or {dim: {name: values, …}}
      (parameters varying together along one axis, equal lengths).
    - Saves `observables` (and always `loss`) on `ts` (default: `num_times` points, {0} ∪ a log
      grid over the 6 decades below `t1`), in the flow's clock, plus per-member summaries:
      final_loss (L at `t_final`), t_final, num_steps, num_rejected_steps, result (diffrax code;
      -1 non-finite init, -2 non-finite final loss), time_to_loss_below (first time L ≤
      `loss_threshold`), plateau_exit_time (first time L has made half its total decrease),
      time_to_all_correct (if `classification_error` is observed) — event times are read off the
      save grid (linear interpolation), so their accuracy is the grid's; inf if never reached.
    - Runs `chunk_size` members per compiled call (default: as many as `memory_budget` bytes
      allow, by an estimate of the solver state and saved outputs), split over `devices`
      (default: the local devices) with shard_map; a chunk size that is not a multiple of the
      device count is padded with repeated runs. One trace of `make_flow` (one member, on
      abstract inputs) and one compile for the whole sweep.
    - `out`: a directory; results go to a Zarr store there chunk by chunk (see `gflow._store`),
      keyed by the sweep's identity: keys, grid, times, observables, solver (type and fields),
      tolerances, dtype, gflow version, `config` (a JSON-able dict, recorded) and a fingerprint
      of the traced per-member computation — make_flow's code and the arrays it closes over
      (e.g. the data), observables and solver. Rerunning resumes (an explicit `chunk_size`
      other than the store's is ignored, with a `SweepWarning`); a store of another sweep raises
      `SweepStoreError` naming what differs, never overwritten. Marked chunks are verified on
      resume (checksums): damaged ones are dropped (`SweepWarning`) and recomputed. Several
      writers (processes, threads) on one `out` share the chunks through per-chunk locks; each
      call returns when all its chunks are done.
    - Failed members (max_steps, non-finite values) are kept with their `result` code; at the end
      `on_failure` = "warn" (a `SweepWarning` naming them), "raise" (`SweepError`) or "ignore".
    - Multi-host: after `jax.distributed.initialize`, process p runs chunks p, p + P, … (P
      processes) on its local devices and writes them to the shared `out`.
    Returns the labelled `xarray.Dataset` (see `load_sweep`); with several processes, the chunks
    finished so far (`allow_partial=True`).
    """
    if not callable(make_flow):
        raise TypeError(message("make_flow", "be a callable (key, hyperparameters) -> GradientFlow", type(make_flow).__name__))
    if on_failure not in ("warn", "raise", "ignore"):
        raise ValueError(message("on_failure", "be 'warn', 'raise' or 'ignore'", repr(on_failure)))
    axes = parse_grid(grid)
    key_data, typed = _member_keys(members, seed)
    n_members = key_data.shape[0]
    grid_shape = tuple(next(iter(v.values())).shape[0] for _, v in axes)
    n_points = math.prod(grid_shape)
    n_runs = n_points * n_members
    t1 = float(t1)
    ts = default_times(0.0, t1, num_times) if ts is None else check_increasing_times("ts", ts, 0.0, t1)
    solve_kwargs = dict(solver=solver, rtol=rtol, atol=atol, max_steps=max_steps)
    dtype = jnp.zeros(()).dtype

    # Per-run hyperparameters, grid-major with members fastest: run r = point·M + member.
    hyper_points = {}
    if axes:
        mesh_idx = np.meshgrid(*[np.arange(s) for s in grid_shape], indexing="ij")
        for (dim, values), idx in zip(axes, mesh_idx):
            for name, v in values.items():
                hyper_points[name] = v[idx.ravel()]
    hyper_runs = {name: np.repeat(v, n_members).astype(dtype) for name, v in hyper_points.items()}
    run_member = np.tile(np.arange(n_members), n_points)

    solve_one, member_parts = _member_solver(make_flow, t1, ts, observables, solve_kwargs, loss_threshold, typed)
    in_specs = (jax.ShapeDtypeStruct(key_data.shape[1:], key_data.dtype),
                {k: jax.ShapeDtypeStruct((), v.dtype) for k, v in hyper_runs.items()})
    cache_key = _cache_key(make_flow, t1, ts, observables, solve_kwargs, loss_threshold, typed, in_specs)
    member = _MEMBERS.get(cache_key) if cache_key is not None else None
    if member is None:
        # The one trace of make_flow: one member on abstract inputs. Its jaxpr is the sweep's
        # identity (fingerprint) and what every chunk evaluates (vmapped; compiled once).
        closed, shapes = jax.make_jaxpr(solve_one, return_shape=True)(*in_specs)
        member = {"jaxpr": closed, "shapes": shapes, "fingerprint": computation_fingerprint(closed), "runs": {}}
        if cache_key is not None:
            _MEMBERS[cache_key] = member
            while len(_MEMBERS) > 8:
                _MEMBERS.pop(next(iter(_MEMBERS)))
    closed, (example, example_flow) = member["jaxpr"], member["shapes"]
    out_tree = jax.tree_util.tree_structure(example)
    n_out = out_tree.num_leaves
    member_fn = jax.extend.core.jaxpr_as_fun(closed)

    def run_member_jaxpr(k, h):
        flat = member_fn(*jax.tree_util.tree_leaves((k, h)))
        return jax.tree_util.tree_unflatten(out_tree, flat[:n_out])

    batched = jax.vmap(run_member_jaxpr)
    devices = list(jax.local_devices() if devices is None else devices)
    n_dev = len(devices)
    requested = chunk_size
    if chunk_size is None:
        out_bytes = sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree_util.tree_leaves(example))
        state_bytes = sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree_util.tree_leaves(example_flow))
        # Heuristic: saved outputs twice (device + host) plus ~64 copies of the flow's arrays
        # (solver stages, controller state, vector-field intermediates).
        per_member = 2 * out_bytes + 64 * state_bytes
        chunk_size = max(1, int(memory_budget // per_member))
        chunk_size = min(chunk_size, -(-n_runs // n_dev) * n_dev)
        chunk_size = max(n_dev, chunk_size // n_dev * n_dev)
    elif not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(message("chunk_size", "be a positive integer", repr(chunk_size)))
    if out is not None and os.path.isfile(os.path.join(out, MANIFEST)):
        stored = int(read_manifest(out)["chunk_size"])  # a resumed store keeps its chunking
        if requested is not None and requested != stored:
            warnings.warn(f"`chunk_size` {requested} ignored: the store {str(out)!r} was written with chunk_size "
                          f"{stored} and a resumed store keeps its chunking", SweepWarning, stacklevel=2)
        chunk_size = stored
    # Each compiled call runs `batch` members, a multiple of the device count: a chunk size that
    # is not (e.g. a store written on another number of devices) is padded with repeated runs.
    batch = -(-chunk_size // n_dev) * n_dev

    variables = {}
    for name, leaf in example.items():
        if not hasattr(leaf, "shape"):
            raise TypeError(message(f"observables[{name!r}]", "return one array per time", type(leaf).__name__))
        dims = [f"{name}_dim{i}" for i in range(leaf.ndim)]
        if name not in SUMMARIES:
            dims[0] = "time"
        variables[name] = {"dims": dims, "shape": list(leaf.shape), "dtype": str(leaf.dtype)}
    versions = _versions()
    # The sweep's identity: what it computes. A store holding another identity is refused,
    # naming the keys that differ.
    description = {
        "computation": member["fingerprint"],
        "gflow_version": versions["gflow_version"],
        "config": dict(config) if config is not None else None,
        "members": n_members,
        "keys_sha256": hashlib.sha256(key_data.tobytes()).hexdigest(),
        "grid": [[dim, {k: v.tolist() for k, v in values.items()}] for dim, values in axes],
        "t1": t1,
        "ts": np.asarray(ts).tolist(),
        "observables": sorted(n for n in variables if n not in SUMMARIES),
        "loss_threshold": loss_threshold,
        "solver": _describe_solver(solver),
        "rtol": rtol, "atol": atol, "max_steps": max_steps,
        "dtype": str(dtype), "matmul_precision": versions["matmul_precision"],
    }
    description = json_normal(description)
    context = {"make_flow": _describe(make_flow),
               "observable_functions": {k: _describe(v) for k, v in resolve_observables(observables).items()},
               **versions}
    digest = config_hash(description)
    attrs = {**versions, "config_hash": digest, "config": json.dumps(description, sort_keys=True)}
    coords = {"time": np.asarray(ts)}
    coord_dims = {"time": "time"}
    spec = {
        "format": FORMAT, "config_hash": digest, "config": description, "context": json_normal(context),
        "n_runs": n_runs, "chunk_size": chunk_size, "n_members": n_members, "grid_dims": [dim for dim, _ in axes],
        "grid_shape": list(grid_shape), "variables": variables, "coords": {k: v.tolist() for k, v in coords.items()},
        "coord_dims": coord_dims, "attrs": attrs,
    }
    store = MemoryStore(spec) if out is None else ZarrStore(out, spec)
    n_chunks = -(-n_runs // chunk_size)
    p_index = jax.process_index() if process_index is None else process_index
    p_count = jax.process_count() if process_count is None else process_count
    mine = [c for c in range(n_chunks) if c % p_count == p_index]
    todo = [c for c in mine if not store.is_done(c)]
    size = lambda c: min(chunk_size, n_runs - c * chunk_size)

    if todo:
        if n_dev > 1:
            mesh = jax.sharding.Mesh(np.asarray(devices), ("sweep",))
            spec_p = jax.sharding.PartitionSpec("sweep")
            wrap = lambda f: jax.shard_map(f, mesh=mesh, in_specs=spec_p, out_specs=spec_p, check_vma=False)  # noqa: E731
            sharding = jax.sharding.NamedSharding(mesh, spec_p)
        else:
            wrap = lambda f: f  # noqa: E731
            sharding = jax.sharding.SingleDeviceSharding(devices[0])
        place = lambda x: jax.device_put(x, sharding)  # noqa: E731
        from tqdm.auto import tqdm

        done_before = sum(size(c) for c in mine if c not in todo)
        total = sum(size(c) for c in mine)
        bar = tqdm(total=total, initial=done_before, unit="member", desc="sweep", disable=not progress,
                   dynamic_ncols=True, smoothing=0.1)
        lockstep = isinstance(resolve_solver(solver), AutoSwitch)
        try:
            if lockstep:
                _run_chunks(store, todo, size, chunk_size, batch, key_data, run_member, hyper_runs, batched,
                            wrap, sharding, place, member["runs"], bar)
            else:
                n_slots = _slot_count(slots, total, batch, n_dev)  # not the pending runs: a resume reuses the compile
                program = SlotProgram(member_parts.flow, _SaveObservables(member_parts.observables), solver,
                                      rtol, atol, jnp.asarray(ts), t1, step_budget(max_steps), max_steps)
                fns = member["runs"].get(("slots", n_slots, tuple(devices)))
                if fns is None:
                    fns = member["runs"][("slots", n_slots, tuple(devices))] = slot_functions(
                        program, member_parts.readout, wrap)
                _run_slots(store, todo, size, chunk_size, key_data, run_member, hyper_runs, fns, n_slots,
                           place, bar, runner_stats)
        finally:
            bar.close()
            store.release_all()

    # The failure summary covers this process's chunks (resumed ones included).
    codes = store.read("result")
    runs = [r for c in mine for r in range(c * chunk_size, min((c + 1) * chunk_size, n_runs))]
    failed = [int(r) for r in runs if int(codes[r]) not in _OK_CODES]
    if failed and on_failure != "ignore":
        lines = []
        for r in failed[:20]:
            point, m = divmod(r, n_members)
            where = "".join(f", {name}={float(v[point]):g}" for name, v in hyper_points.items())
            lines.append(f"run {r} (member {m}{where}): {reason(int(codes[r]))}")
        more = f"; … and {len(failed) - 20} more" if len(failed) > 20 else ""
        text = (f"{len(failed)} of {len(runs)} sweep members failed (kept with their `result` code; the "
                f"others finished): " + "; ".join(lines) + more)
        if on_failure == "raise":
            raise SweepError(text)
        warnings.warn(text, SweepWarning, stacklevel=2)
    partial = p_count > 1
    if out is None:
        return _labelled(spec, store.arrays, allow_partial=partial)
    return load_sweep(out, allow_partial=partial, name="out")


def _slot_count(slots, n_todo, batch, n_dev):
    """Slots of the continuous-batching runner: `slots` if given, else the memory budget's
    batch capped at a quarter of the pending runs (so finished slots are refilled and no
    member waits for the slowest), a multiple of the device count."""
    if slots is None:
        slots = min(batch, max(1, -(-n_todo // 4)))
    elif not isinstance(slots, int) or isinstance(slots, bool) or slots < 1:
        raise ValueError(message("slots", "be a positive integer", repr(slots)))
    return -(-slots // n_dev) * n_dev


def _run_slots(store, todo, size, chunk_size, key_data, run_member, hyper_runs, fns, n_slots, place, bar, stats):
    """Solve the runs of the chunks in `todo` with the slot runner; a chunk is written (and its
    claim released) once all its members are in. Chunks another writer holds are waited for
    afterwards, one at a time and holding no other claim (no deadlock between writers), and
    computed if that writer left them unfinished."""
    pending: dict[int, dict] = {}

    def claimed(c, wait=False):
        if not store.claim(c, wait=wait):
            return False
        if store.is_done(c):  # another writer has just finished it
            store.release(c)
            bar.update(size(c))
            return False
        pending[c] = {"left": size(c), "data": {}}
        return True

    def inputs(idx):
        return key_data[run_member[idx]], {k: v[idx] for k, v in hyper_runs.items()}

    def solve(chunks):
        runs = (r for c in chunks for r in range(c * chunk_size, c * chunk_size + size(c)))
        for finished, out in run_queue(fns, runs, inputs, slots=n_slots, place=place, stats=stats):
            for j, r in enumerate(finished):
                c = int(r) // chunk_size
                entry = pending[c]
                for name, values in out.items():
                    buf = entry["data"].get(name)
                    if buf is None:
                        buf = entry["data"][name] = np.empty((size(c), *values.shape[1:]), values.dtype)
                    buf[int(r) - c * chunk_size] = values[j]
                entry["left"] -= 1
                bar.update(1)
                if entry["left"] == 0:
                    store.write_chunk(c, entry["data"])
                    store.release(c)
                    del pending[c]

    held = []

    def ours():
        for c in todo:
            if claimed(c):
                yield c
            elif not store.is_done(c):
                held.append(c)

    solve(ours())
    for c in held:
        if claimed(c, wait=True):
            solve([c])


def _run_chunks(store, todo, size, chunk_size, batch, key_data, run_member, hyper_runs, batched, wrap,
                sharding, place, cache, bar):
    """Solve each chunk in `todo` as one vmapped call (members in lockstep; `solver="auto"`)."""
    entry = cache.setdefault(("chunks", batch, str(sharding)), {"compiled": None})

    def compute(c):
        if entry["compiled"] is None:  # one compile for every chunk
            arg_shapes = (
                jax.ShapeDtypeStruct((batch, *key_data.shape[1:]), key_data.dtype, sharding=sharding),
                {k: jax.ShapeDtypeStruct((batch,), v.dtype, sharding=sharding) for k, v in hyper_runs.items()},
            )
            entry["compiled"] = jax.jit(wrap(batched)).trace(*arg_shapes).lower().compile()
        start = c * chunk_size
        stop = start + size(c)
        # Pad the chunk to `batch` runs by repeating its last run (the padding is dropped).
        idx = np.minimum(np.arange(start, start + batch), stop - 1)
        keys_c = place(key_data[run_member[idx]])
        hyper_c = {k: place(v[idx]) for k, v in hyper_runs.items()}
        result = entry["compiled"](keys_c, hyper_c)
        store.write_chunk(c, {k: np.asarray(v)[: stop - start] for k, v in result.items()})

    held = []
    for c in todo:
        if not store.claim(c):  # another writer is computing it
            held.append(c)
            continue
        try:
            if not store.is_done(c):  # (or has just finished it)
                compute(c)
        finally:
            store.release(c)
        bar.update(size(c))
    # Wait for the other writers' chunks; compute any they left (a killed writer's).
    for c in held:
        store.claim(c, wait=True)
        try:
            if not store.is_done(c):
                compute(c)
        finally:
            store.release(c)
        bar.update(size(c))


def _labelled(spec: Mapping, arrays: Mapping[str, np.ndarray], *, allow_partial: bool, name: str = "sweep store"):
    """The flat run-major arrays as an xarray Dataset with dims (*grid, member, …)."""
    import xarray as xr

    grid_dims = list(spec["grid_dims"])
    grid_shape = tuple(spec["grid_shape"])
    n_members = int(spec["n_members"])
    results = np.asarray(arrays["result"])
    if not allow_partial and np.any(results == NOT_RUN):
        missing = int(np.sum(results == NOT_RUN))
        raise ValueError(message(name, "be a complete sweep store", f"{missing} runs not done yet",
                                 "Rerun the same sweep command to finish it, or pass allow_partial=True."))
    data_vars = {}
    for name, var in spec["variables"].items():
        a = np.asarray(arrays[name]).reshape(*grid_shape, n_members, *var["shape"])
        data_vars[name] = ([*grid_dims, "member", *var["dims"]], a)
    data_vars["succeeded"] = ([*grid_dims, "member"], np.isin(results, _OK_CODES).reshape(*grid_shape, n_members))
    coords = {"time": np.asarray(spec["coords"]["time"]), "member": np.arange(n_members)}
    for dim, values in spec["config"]["grid"]:
        for name, v in values.items():
            coords[name] = (dim, np.asarray(v))
    attrs = {**spec["attrs"], "chunk_size": int(spec["chunk_size"])}
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def load_sweep(path: str | os.PathLike, *, allow_partial: bool = False, name: str = "path"):
    """The sweep stored at `path` as an `xarray.Dataset`.

    Dims: the grid axes, `member`, `time` (and `<name>_dimK` for observables with extra axes);
    coordinates: the grid values, `member`, `time`; attrs: the sweep config (JSON), its hash,
    gflow/jax/diffrax versions, dtype, matmul precision. `succeeded` marks members whose solve
    reached t1. Unfinished runs raise unless `allow_partial=True` (then they hold NaN/-100).
    Every chunk marked done is verified against the checksums written with it: a damaged store
    raises a `SweepStoreError` naming the variable, chunk and damage (rerunning the sweep into
    it recomputes the damaged chunks). Errors call the store `name` (e.g. "DIR" for the CLI).
    """
    spec, arrays = read_store(path, name=name)
    return _labelled(spec, arrays, allow_partial=allow_partial, name=name)


def plot_sweep(path: str | os.PathLike, out: str | os.PathLike | None = None, *, name: str = "path") -> list:
    """PNGs of a stored sweep: loss curves (median and 10–90% / 25–75% quantile bands over
    members, one colour per grid point) and histograms of the event times. Written to `out`
    (default: `path/plots`); returns their paths. An incomplete store is plotted as far as it
    goes, with a `SweepWarning` and "N of M runs done" in the title. Errors call the store
    `name`."""
    from pathlib import Path

    from ._plotting import _pyplot

    ds = load_sweep(path, allow_partial=True, name=name)
    n_total = int(ds["result"].size)
    n_done = int((ds["result"] != NOT_RUN).sum())
    progress = ""
    if n_done < n_total:
        progress = f" ({n_done} of {n_total} runs done)"
        warnings.warn(f"store {str(path)!r} is incomplete: {n_done} of {n_total} runs done; plotting those "
                      "(rerun the sweep to finish it)", SweepWarning, stacklevel=2)
    out = Path(path) / "plots" if out is None else Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plt = _pyplot()
    grid_dims = [d for d in ds["loss"].dims if d not in ("member", "time")]
    params = [c for c in ds.coords if ds[c].ndim == 1 and ds[c].dims[0] in grid_dims]
    t = ds["time"].values
    keep = t > 0
    written = []
    # One panel per value of the first grid axis (when there are two or more axes), one colour
    # per point of the other axes.
    panel_dim = grid_dims[0] if len(grid_dims) > 1 else None
    panels = range(ds.sizes[panel_dim]) if panel_dim else [None]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels) + 1, 4), squeeze=False, sharey=True)
    for ax, panel in zip(axes[0], panels):
        sub = ds if panel is None else ds.isel({panel_dim: panel})
        dims = [d for d in grid_dims if d != panel_dim]
        for index in np.ndindex(*[sub.sizes[d] for d in dims]):
            point = sub.isel(dict(zip(dims, index)))
            curves = point["loss"].transpose("member", "time").values[:, keep]
            curves = np.where(np.isfinite(curves), curves, np.nan)
            if not np.any(np.isfinite(curves)):
                continue
            with warnings.catch_warnings():  # all-NaN columns (failed members) are expected
                warnings.simplefilter("ignore", RuntimeWarning)
                q = np.nanquantile(curves, [0.1, 0.25, 0.5, 0.75, 0.9], axis=0)
            label = ", ".join(f"{c}={float(point[c]):g}" for c in params if ds[c].dims[0] != panel_dim) or "all"
            (line,) = ax.loglog(t[keep], q[2], label=label)
            ax.fill_between(t[keep], q[0], q[4], color=line.get_color(), alpha=0.12, lw=0)
            ax.fill_between(t[keep], q[1], q[3], color=line.get_color(), alpha=0.25, lw=0)
        if panel is not None:
            ax.set_title(", ".join(f"{c}={float(sub[c]):g}" for c in params if ds[c].dims[0] == panel_dim), fontsize=10)
        ax.set_xlabel("time t (flow clock)")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("loss")
    fig.suptitle(f"{ds.sizes['member']} members per point{progress}: median, 25–75% and 10–90% bands",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(out / "loss_quantiles.png", dpi=120)
    plt.close(fig)
    written.append(out / "loss_quantiles.png")
    if grid_dims:
        written.append(_plot_final_loss(plt, ds, grid_dims, params, out))
    events = [n for n in ("time_to_loss_below", "plateau_exit_time", "time_to_all_correct") if n in ds]
    fig, axes = plt.subplots(1, len(events), figsize=(4 * len(events), 3.5), squeeze=False)
    for ax, name in zip(axes[0], events):
        v = ds[name].where(ds["succeeded"]).values.ravel()  # failed members' times are not shown
        finite = v[np.isfinite(v) & (v > 0)]
        if finite.size:
            bins = np.geomspace(finite.min(), finite.max() * (1 + 1e-9), 30) if finite.max() > finite.min() else 10
            ax.hist(finite, bins=bins)
            ax.set_xscale("log")
        ax.set_title(f"{name}\n({v.size - finite.size} of {v.size} never reached, failed or not run)", fontsize=9)
        ax.set_xlabel("time t")
    fig.tight_layout()
    fig.savefig(out / "event_times.png", dpi=120)
    plt.close(fig)
    written.append(out / "event_times.png")
    return written


def _plot_final_loss(plt, ds, grid_dims, params, out):
    """Median final loss (25–75% bars) against the last grid axis, one line per other point."""
    x_dim = grid_dims[-1]
    x_name = next(c for c in params if ds[c].dims[0] == x_dim)
    x = ds[x_name].values
    others = [d for d in grid_dims if d != x_dim]
    fig, ax = plt.subplots(figsize=(6, 4))
    final = ds["final_loss"].where(ds["succeeded"])
    for index in np.ndindex(*[ds.sizes[d] for d in others]):
        point = final.isel(dict(zip(others, index))).transpose(x_dim, "member").values
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            q = np.nanquantile(point, [0.25, 0.5, 0.75], axis=1)
        at = dict(zip(others, index))
        label = ", ".join(f"{c}={float(ds[c][at[ds[c].dims[0]]]):g}" for c in params if ds[c].dims[0] in at) or None
        ax.errorbar(x, q[1], yerr=[q[1] - q[0], q[2] - q[1]], marker="o", capsize=3, label=label)
    ax.set_xscale("log" if np.all(x > 0) and x.max() / x.min() >= 10 else "linear")
    ax.set_yscale("log")
    ax.set_xlabel(x_name)
    ax.set_ylabel(f"final loss at t = {float(ds['time'].values[-1]):g}")
    ax.set_title("median over members, 25–75% bars (failed members left out)", fontsize=10)
    if others:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "final_loss.png", dpi=120)
    plt.close(fig)
    return out / "final_loss.png"
