"""`sweep`: many gradient flows (initialisations × a hyperparameter grid) in one compiled call.

Every member is `solve_flow(make_flow(key, hyperparameters), t1, throw=False)`. Members run on a
fixed set of slots, each advanced by a step budget per call and refilled from the pending members
as it finishes (continuous batching, `gflow._sweep.slots`: no member pays for the slowest), split
across local devices with `jax.shard_map`, and, with `out=`, written chunk by chunk to a
resumable Zarr store (`gflow._sweep.store`). With `optimizer=` every member is instead
`solve_discrete(make_flow(key, hyperparameters), optimizer, t1, learning_rate=η, throw=False)`
(gradient descent, heavy ball, Adam, … on the flow's clock): a fixed step count per member, so
each chunk is one vmapped call of a `lax.scan` (no slots), into the same store. Across hosts
(after `jax.distributed.initialize`) or independent workers (`gflow sweep --worker I/N`) each
process runs its own chunks and writes them to the shared store; no communication is needed.
"""

import hashlib
import json
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._flow import GradientFlow, default_times
from .._flow.observables import resolve_observables
from .._flow.solve import _SaveObservables
from .._flow.solvers import AutoSwitch, MatrixFreeImplicit
from .._validate import check_increasing_times, message
from .grid import member_keys, parse_grid
from .identity import _MEMBERS, _cache_key, _describe, _describe_solver, _versions, computation_fingerprint, config_hash
from .member import _OK_CODES, SUMMARIES, Optimizer, member_solver, reason
from .slots import SlotProgram, run_queue, slot_functions, step_budget
from .store import (
    FORMAT,
    MANIFEST,
    MemoryStore,
    SweepWarning,
    ZarrStore,
    json_normal,
    labelled,
    load_sweep,
    read_manifest,
)


class SweepError(RuntimeError):
    """Some members of a sweep failed and `on_failure="raise"` was asked for (results are kept)."""


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
    solver: diffrax.AbstractSolver | str | MatrixFreeImplicit | AutoSwitch | None = None,
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
    optimizer: Any = None,
    learning_rate: float | str | None = None,
    momentum: float | str = 0.0,
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
    - `solver`, `rtol`, `atol`, `max_steps`: as in `solve_flow` (default solver "auto": each member
      switches to the implicit solver on its own when it turns stiff).
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
    - `optimizer` (default None: gradient flow): an optax `GradientTransformation`, or a callable
      `hyper -> GradientTransformation` built from the member's hyperparameters (traced, so a
      learning rate on the grid is one compile: `lambda h: optax.sgd(h["learning_rate"])`).
      Each member is then `solve_discrete(flow, optimizer, t1, learning_rate=η, momentum=β,
      ts=ts, throw=False)` on the flow's clock t_k = k·η/(1−β) (see `solve_discrete`):
      `learning_rate` η and `momentum` β are numbers or the names of grid parameters (default
      η: the grid parameter "learning_rate"). A chunk is one vmapped call of its members'
      `lax.scan`s (no Python loop over steps or members; a chunk runs until its member with the
      most steps, the smallest η, is done). Saves at the step nearest each time of `ts`; the
      event-time summaries are read off the member's actual step times; `num_steps` is the
      step count round(t1/h), `num_rejected_steps` 0, `energy_residual` NaN (no audit of a
      discrete method). A diverging member (non-finite loss or gradient) stops at that step
      with the `result` code of `RESULTS.nonfinite`, the rest are kept (`on_failure`). The
      optimizer, η and β are part of the identity (the traced member's fingerprint, and the
      config's `optimizer` entry), so a store of a gradient-flow sweep, another optimizer or
      another η is refused. `solver`, `rtol`, `atol` must be left unset, `max_steps`, `slots`
      and `runner_stats` are for gradient-flow members only.
    Returns the labelled `xarray.Dataset` (see `load_sweep`); with several processes, the chunks
    finished so far (`allow_partial=True`).
    """
    if not callable(make_flow):
        raise TypeError(message("make_flow", "be a callable (key, hyperparameters) -> GradientFlow",
                                type(make_flow).__name__))
    if on_failure not in ("warn", "raise", "ignore"):
        raise ValueError(message("on_failure", "be 'warn', 'raise' or 'ignore'", repr(on_failure)))
    axes = parse_grid(grid)
    method = None
    if optimizer is not None:
        given = [name for name, v in (("solver", solver), ("rtol", rtol), ("atol", atol)) if v is not None]
        if given:
            raise ValueError(message(given[0], "be left unset with `optimizer` (a discrete method takes fixed steps)",
                                     repr(dict(solver=solver, rtol=rtol, atol=atol)[given[0]])))
        method = Optimizer.check(optimizer, learning_rate, momentum,
                                 {name: v for _, values in axes for name, v in values.items()})
    elif learning_rate is not None or (isinstance(momentum, str) or momentum != 0.0):
        raise ValueError(message("learning_rate" if learning_rate is not None else "momentum",
                                 "come with an `optimizer` (a gradient-flow sweep has no step)",
                                 repr(learning_rate if learning_rate is not None else momentum)))
    key_data, typed = member_keys(members, seed)
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

    solve_one, member_parts = member_solver(make_flow, t1, ts, observables, solve_kwargs, loss_threshold, typed,
                                            method)
    in_specs = (jax.ShapeDtypeStruct(key_data.shape[1:], key_data.dtype),
                {k: jax.ShapeDtypeStruct((), v.dtype) for k, v in hyper_runs.items()})
    cache_key = _cache_key(make_flow, t1, ts, observables, solve_kwargs, loss_threshold, typed, in_specs, method)
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
    if method is not None:  # (a gradient-flow sweep's identity is as it was before optimizers)
        description.update(optimizer=method.describe(), solver=None, max_steps=None)
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
        try:
            if method is not None:  # fixed step counts: plain vmapped chunks
                fns = member["runs"].get(("chunks", batch, tuple(devices)))
                if fns is None:
                    fns = member["runs"][("chunks", batch, tuple(devices))] = jax.jit(
                        wrap(jax.vmap(run_member_jaxpr)))
                _run_chunks(store, todo, size, chunk_size, batch, key_data, run_member, hyper_runs, fns, place, bar)
            else:  # every solver, "auto" (the default) included, runs through the slot runner (lockstep-free)
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
        return labelled(spec, store.arrays, allow_partial=partial)
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


def _run_chunks(store, todo, size, chunk_size, batch, key_data, run_member, hyper_runs, batched, place, bar):
    """Solve each chunk in `todo` as one call of `batched` (the vmapped member, jitted: one
    compile for every chunk) on `batch` runs: discrete members, whose step count is fixed, so
    the lockstep costs nothing beyond the chunk's longest member. Chunks another writer holds
    are waited for afterwards (one at a time, holding no other claim) and computed if that
    writer left them unfinished."""

    def compute(c):
        start = c * chunk_size
        stop = start + size(c)
        # Pad the chunk to `batch` runs by repeating its last run (the padding is dropped).
        idx = np.minimum(np.arange(start, start + batch), stop - 1)
        keys_c = place(key_data[run_member[idx]])
        hyper_c = {k: place(v[idx]) for k, v in hyper_runs.items()}
        result = batched(keys_c, hyper_c)
        store.write_chunk(c, {k: np.asarray(v)[: stop - start] for k, v in result.items()})

    def run(c, wait=False):
        if not store.claim(c, wait=wait):  # another writer is computing it
            return False
        try:
            if not store.is_done(c):  # (or has just finished it)
                compute(c)
        finally:
            store.release(c)
        bar.update(size(c))
        return True

    held = [c for c in todo if not run(c)]
    for c in held:
        run(c, wait=True)


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

