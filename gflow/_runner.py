"""Continuous batching of gradient-flow solves: a sweep that does not run in lockstep.

`jax.vmap` of an adaptive solve is a `while_loop` that steps every member until the slowest has
finished (jax#2586): in a chunk of members whose stiffness differs, every member pays the step
count of the slowest. Here a fixed number of *slots* (one compile) is advanced by at most
`budget` solver steps per call; each slot continues its member's diffrax solve exactly where the
previous call stopped (the solver state, the step-size controller state, the next step size and
the save position are all carried), so a member's trajectory is the same step sequence as one
uninterrupted `diffeqsolve`. When a member finishes, its slot is refilled from the queue of
pending members. Every member then costs its own steps plus less than `budget` idle steps.

The member's solve is that of `solve_flow(make_flow(key, hyper), t1, ts=ts, throw=False)`:
the same solver, tolerances (scaled for padded widths/data exactly as `solve_flow` does),
save grid and `max_steps`.
"""

from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from diffrax._term import WrapTerm
from jaxtyping import Array, Bool, Float, Int, PyTree

from ._flow.solve import (
    _AuditedField,
    _OnParams,
    _params_norm,
    audited_state,
    flow_controller,
    member_tolerances,
    step_tolerances,
)
from ._flow.controllers import AbstractWrappedController
from ._flow.solvers import AutoSwitch, resolve_solver
from ._validate import message

_MAX_STEPS = int(diffrax.RESULTS.max_steps_reached._value)


class _ResumableController(AbstractWrappedController):
    """A step-size controller whose state also carries the next step size, so a solve stopped
    after a step budget can be continued with `dt0 = state[1]` and the same controller state
    (diffrax does not return its proposed next step otherwise)."""

    inner: diffrax.AbstractAdaptiveStepSizeController

    def init(self, terms, t0, t1, y0, dt0, args, func, error_order):
        tnext, state = self.inner.init(terms, t0, t1, y0, dt0, args, func, error_order)
        state = jax.tree_util.tree_map(jnp.asarray, state)
        return tnext, (state, jnp.asarray(tnext - t0))

    def adapt_step_size(self, t0, t1, y0, y1_candidate, args, y_error, error_order, controller_state):
        inner_state, _ = controller_state
        keep, tprev, tnext, made_jump, inner_state, result = self.inner.adapt_step_size(
            t0, t1, y0, y1_candidate, args, y_error, error_order, inner_state
        )
        inner_state = jax.tree_util.tree_map(jnp.asarray, inner_state)
        return keep, tprev, tnext, made_jump, (inner_state, jnp.asarray(tnext - tprev)), result


class SlotState(eqx.Module):
    """One member's solve in flight (batched over slots by vmap)."""

    t: Float[Array, ""]
    y: PyTree
    solver_state: PyTree
    controller_state: PyTree
    made_jump: Bool[Array, ""]
    saved: dict
    num_steps: Int[Array, ""]
    num_rejected_steps: Int[Array, ""]
    result: Int[Array, ""]  # diffrax code of the last segment
    done: Bool[Array, ""]


def step_budget(max_steps: int, target: int = 64) -> int:
    """The per-call step budget: a divisor of `max_steps` near `target` (so a member stops at
    exactly `max_steps` steps, as a plain solve does), else `target`."""
    if max_steps <= target:
        return max_steps
    for k in range(target, target // 4, -1):
        if max_steps % k == 0:
            return k
    return target


class SlotProgram(eqx.Module):
    """How to start, advance and read out one member (vmapped over slots by `run_queue`).

    `build(key, hyper) -> GradientFlow` makes the member; its solve is `solve_flow`'s: the
    audited state (θ, E), the same field, save function, solver (resolved against the member's
    step tolerances), guarded PID controller and `max_steps`.
    """

    build: Callable  # a bound method of a Module (a pytree) or a plain function
    save: Callable
    solver: Any = eqx.field(static=True)
    rtol: Any = eqx.field(static=True)
    atol: Any = eqx.field(static=True)
    ts: Float[Array, " T"]
    t1: float = eqx.field(static=True)
    budget: int = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)

    def setup(self, flow):
        rtol, atol = member_tolerances(flow.params0, self.rtol, self.atol)
        step_rtol, step_atol = step_tolerances(flow, rtol, atol)
        solver = resolve_solver(self.solver, step_atol)
        if isinstance(solver, AutoSwitch):
            raise ValueError(message("solver", "be a single solver in the slot runner", "'auto'"))
        controller = _ResumableController(flow_controller(step_rtol, step_atol, norm=_params_norm))
        return solver, controller

    def init(self, key, hyper) -> SlotState:
        flow = self.build(key, hyper)
        solver, controller = self.setup(flow)
        # diffeqsolve wraps its terms (for the time direction) before choosing the first step;
        # choosing it through the same wrapper gives the same first step, hence the same
        # trajectory as `solve_flow`, bit for bit.
        terms = WrapTerm(diffrax.ODETerm(_AuditedField()), jnp.asarray(1))
        y0 = audited_state(flow.params0)
        t0 = jnp.zeros((), self.ts.dtype)
        tnext, cstate = controller.init(terms, t0, self.t1, y0, None, flow, solver.func,
                                        solver.error_order(terms))
        tnext = jnp.minimum(tnext, self.t1)
        cstate = (cstate[0], tnext - t0)
        sstate = solver.init(terms, t0, tnext, y0, flow)
        struct = jax.eval_shape(self.save, t0, y0[0], flow)
        saved = jax.tree_util.tree_map(lambda s: jnp.full((self.ts.shape[0], *s.shape), jnp.inf, s.dtype), struct)
        zero = jnp.zeros((), jnp.int32)
        return SlotState(t0, y0, sstate, cstate, jnp.asarray(False), saved, zero, zero,
                         jnp.asarray(0, jnp.int32), jnp.asarray(False))

    def advance(self, state: SlotState, key, hyper) -> SlotState:
        """At most `budget` more steps of this member's solve (none if it is done)."""
        flow = self.build(key, hyper)
        solver, controller = self.setup(flow)
        # A finished member takes one throw-away step over a short interval (t0 = t1 would be
        # refused); its state is kept unchanged below.
        short = 1e-3 * max(abs(self.t1), 1.0)
        t0 = jnp.where(state.done, self.t1 - short, state.t)
        dt0 = jnp.where(state.done, short, state.controller_state[1])
        seg_ts = jnp.clip(self.ts, t0, self.t1)
        saveat = diffrax.SaveAt(subs=[diffrax.SubSaveAt(ts=seg_ts, fn=_OnParams(self.save)), diffrax.SubSaveAt(t1=True)],
                                solver_state=True, controller_state=True, made_jump=True)
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(_AuditedField()), solver, t0, self.t1, dt0, state.y, flow,
            saveat=saveat, stepsize_controller=controller, max_steps=self.budget, throw=False,
            solver_state=state.solver_state, controller_state=state.controller_state,
            made_jump=state.made_jump,
        )
        seg_saved, y_final = sol.ys
        y_final = jax.tree_util.tree_map(lambda y: y[0], y_final)
        t_final = sol.ts[1][0]
        # Save points passed in this segment; ts[0] = t0 = 0 is saved by the first one.
        fresh = (self.ts > state.t) | (state.num_steps == 0)
        merge = lambda new, old: jnp.where(fresh.reshape(-1, *([1] * (old.ndim - 1))), new, old)
        saved = jax.tree_util.tree_map(merge, seg_saved, state.saved)
        num_steps = state.num_steps + sol.stats["num_steps"]
        code = sol.result._value.astype(jnp.int32)
        done = (code != _MAX_STEPS) | (num_steps >= self.max_steps)
        new = SlotState(t_final, y_final, sol.solver_state, sol.controller_state,
                        jnp.asarray(sol.made_jump), saved, num_steps,
                        state.num_rejected_steps + sol.stats["num_rejected_steps"], code, done)
        # A finished member keeps its state untouched.
        return jax.tree_util.tree_map(lambda a, b: jnp.where(state.done, a, b), state, new)


def _select(mask, new, old):
    """Per-slot `where` over a batched pytree (mask (S,))."""
    return jax.tree_util.tree_map(
        lambda a, b: jnp.where(mask.reshape(-1, *([1] * (a.ndim - 1))), a, b), new, old)


class SlotFunctions(NamedTuple):
    """The jitted pieces of the slot runner for one (program, readout, device layout)."""

    init: Callable
    advance: Callable
    read: Callable


def slot_functions(program: SlotProgram, readout: Callable, wrap: Callable = lambda f: f) -> SlotFunctions:
    """`init`, `advance` and `readout` batched over slots (`wrap`: e.g. a shard_map over
    devices) and jitted; each compiles once, on first use."""
    return SlotFunctions(
        init=jax.jit(wrap(jax.vmap(program.init))),
        advance=jax.jit(wrap(jax.vmap(program.advance))),
        read=jax.jit(wrap(jax.vmap(readout))),
    )


def run_queue(
    fns: SlotFunctions,
    runs: Iterable[int],
    inputs: Callable[[np.ndarray], tuple[Any, Any]],
    *,
    slots: int,
    place: Callable = lambda x: x,
    stats: dict | None = None,
) -> Iterator[tuple[np.ndarray, dict]]:
    """Solve every run that `runs` yields with `slots` slots; yields (run indices, outputs) as
    members finish (outputs: the readout of each finished member, on the host).

    `runs` is pulled lazily (a new member enters when a slot frees up), so it may claim work as
    it goes. `inputs(run_indices) -> (keys, hyper)` gives the members' inputs; `place` puts
    host arrays on the devices. `stats` (if given) accumulates `slot_steps`: the steps the
    batched loop ran, summed over calls and slots (each call costs its slowest slot's steps in
    every slot), and `calls`.
    """
    runs = iter(runs)
    if stats is not None:
        stats.setdefault("slot_steps", 0)
        stats.setdefault("calls", 0)
    slot_run = np.full(slots, -1, np.int64)
    for i in range(slots):
        slot_run[i] = next(runs, -1)
    if slot_run[0] < 0:
        return
    first = slot_run[0]
    state = keys = hyper = None
    refill = slot_run >= 0
    while True:
        if refill.any():
            # Idle slots hold a copy of the first member, marked done, never read out.
            keys, hyper = inputs(np.where(slot_run >= 0, slot_run, first))
            keys, hyper = place(keys), jax.tree_util.tree_map(place, hyper)
            fresh = fns.init(keys, hyper)
            state = fresh if state is None else _select(place(refill), fresh, state)
            state = eqx.tree_at(lambda s: s.done, state, place(np.asarray(state.done) | (slot_run < 0)))
        active = slot_run >= 0
        if not active.any():
            return
        before = np.asarray(state.num_steps)
        state = fns.advance(state, keys, hyper)
        steps = np.asarray(state.num_steps)
        if stats is not None:
            stats["slot_steps"] += int(np.max(steps - before)) * slots
            stats["calls"] += 1
        finished = np.asarray(state.done) & active
        refill = np.zeros(slots, bool)
        if finished.any():
            out = jax.tree_util.tree_map(np.asarray, fns.read(state, keys, hyper))
            idx = np.flatnonzero(finished)
            yield slot_run[idx], jax.tree_util.tree_map(lambda a: a[idx], out)
            for i in idx:
                slot_run[i] = next(runs, -1)
                refill[i] = slot_run[i] >= 0
