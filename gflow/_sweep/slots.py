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

With `solver="auto"` (the default) there are two pools of slots, one per solver (two compiles,
the implicit one only once a member switches): a member starts in the explicit pool; when its
stiffness monitor ends a segment (`gflow._flow.switching`), the member's carry (state, saves,
counters, segment record) goes to the host and enters the other pool at its next free slot,
so explicit and implicit members never step in lockstep with each other either. The segment
logic is `solve_flow`'s own (`AutoPlan`), so a swept member is the same step sequence.
"""

import collections
import functools
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from diffrax._term import WrapTerm
from jaxtyping import Array, Bool, Float, Int, PyTree

from .._flow.controllers import AbstractWrappedController
from .._flow.solve import (
    _AuditedField,
    _OnParams,
    _params_norm,
    audited_state,
    flow_controller,
    member_tolerances,
    step_tolerances,
)
from .._flow.solvers import AutoSwitch, flow_solver
from .._flow.switching import MAX_STEPS_CODE, AutoPlan, SegmentCarry, probe
from .._validate import message

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

    @property
    def switching(self) -> bool:
        """Whether members switch solvers (`solver` "auto"/None/AutoSwitch): two pools."""
        return isinstance(flow_solver(self.solver), AutoSwitch)

    def setup(self, flow):
        rtol, atol = member_tolerances(flow.params0, self.rtol, self.atol)
        step_rtol, step_atol = step_tolerances(flow, rtol, atol)
        solver = flow_solver(self.solver, step_atol)
        if isinstance(solver, AutoSwitch):
            raise ValueError(message("solver", "be a single solver here (auto runs through `plan`)", "'auto'"))
        controller = _ResumableController(flow_controller(step_rtol, step_atol, norm=_params_norm))
        return solver, controller

    # The switching (auto) path: one pool of slots per solver, members moved between them.
    def plan(self, flow) -> AutoPlan:
        """`integrate`'s plan for this member (same tolerances, controller, field, saves)."""
        rtol, atol = member_tolerances(flow.params0, self.rtol, self.atol)
        step_rtol, step_atol = step_tolerances(flow, rtol, atol)
        auto = flow_solver(self.solver, step_atol)
        return AutoPlan(auto, probe(auto.explicit), auto.implicit.diffrax_solver(step_atol),
                        flow_controller(step_rtol, step_atol, norm=_params_norm), _AuditedField(), self.ts,
                        _OnParams(self.save), None, jnp.asarray(self.t1, self.ts.dtype), None, self.max_steps)

    def start(self, key, hyper) -> SegmentCarry:
        """A fresh member's carry at t0 = 0 (before its first, explicit, segment)."""
        flow = self.build(key, hyper)
        return self.plan(flow).start(audited_state(flow.params0), 0.0, flow)

    def enter(self, carry: SegmentCarry, key, hyper, *, implicit: bool) -> "AutoSlot":
        """Start the member's next segment (solver `implicit`) in a slot: the first step and the
        solver/controller states that `diffeqsolve` would make from the carry."""
        flow = self.build(key, hyper)
        plan = self.plan(flow)
        solver = plan.solver(implicit)
        controller = _ResumableController(plan.monitor(carry, implicit))
        terms = WrapTerm(diffrax.ODETerm(_AuditedField()), jnp.asarray(1))
        t0 = carry.t
        dt0 = plan.first_step(carry, implicit, flow)
        tnext, cstate = controller.init(terms, t0, plan.t1, carry.y, dt0, flow, solver.func, solver.error_order(terms))
        tnext = jnp.minimum(tnext, plan.t1)
        cstate = (cstate[0], tnext - t0)
        sstate = solver.init(terms, t0, tnext, carry.y, flow)
        zero = jnp.zeros((), jnp.int32)
        return AutoSlot(carry, t0, carry.y, carry.saved, sstate, cstate, jnp.asarray(False), zero, zero, zero, zero,
                        jnp.asarray(False))

    def advance_auto(self, state: "AutoSlot", key, hyper, *, implicit: bool) -> "AutoSlot":
        """At most `budget` more steps of the member's current segment; at its end the carry
        after it (`released`)."""
        flow = self.build(key, hyper)
        plan = self.plan(flow)
        carry = state.carry
        solver = plan.solver(implicit)
        controller = _ResumableController(plan.monitor(carry, implicit))
        short = 1e-3 * max(abs(self.t1), 1.0)
        t0 = jnp.where(state.released, self.t1 - short, state.t)
        dt0 = jnp.where(state.released, short, state.controller_state[1])
        saveat = diffrax.SaveAt(subs=[diffrax.SubSaveAt(ts=jnp.clip(self.ts, t0, self.t1), fn=plan.save),
                                      diffrax.SubSaveAt(t1=True)],
                                solver_state=True, controller_state=True, made_jump=True)
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(_AuditedField()), solver, t0, self.t1, dt0, state.y, flow,
            saveat=saveat, stepsize_controller=controller, max_steps=self.budget, throw=False,
            solver_state=state.solver_state, controller_state=state.controller_state, made_jump=state.made_jump,
        )
        seg_saved, y_final = sol.ys
        y_final = jax.tree_util.tree_map(lambda y: y[0], y_final)
        t_final = sol.ts[1][0]
        first_piece = (carry.num_steps == 0) & (state.steps == 0)
        fresh = (self.ts > state.t) | first_piece
        merge = lambda new, old: jnp.where(fresh.reshape(-1, *([1] * (old.ndim - 1))), new, old)  # noqa: E731
        saved = jax.tree_util.tree_map(merge, seg_saved, state.saved)
        n = sol.stats["num_steps"].astype(jnp.int32)
        steps = state.steps + n
        accepted = state.accepted + sol.stats["num_accepted_steps"].astype(jnp.int32)
        rejected = state.rejected + sol.stats["num_rejected_steps"].astype(jnp.int32)
        code = sol.result._value.astype(jnp.int32)
        over = (code != MAX_STEPS_CODE) | (carry.num_steps + steps >= self.max_steps)
        after = plan.end_segment(carry, implicit, t_final=t_final, y_final=y_final, saved=saved, num_steps=steps,
                                 num_accepted=accepted, num_rejected=rejected, code=code, event_mask=None)
        carry = jax.tree_util.tree_map(lambda a, b: jnp.where(over, a, b), after, carry)
        new = AutoSlot(carry, t_final, y_final, saved, sol.solver_state, sol.controller_state,
                       jnp.asarray(sol.made_jump), steps, accepted, rejected, n, over)
        new = jax.tree_util.tree_map(lambda a, b: jnp.where(state.released, a, b), state, new)
        return eqx.tree_at(lambda s: s.last_steps, new, jnp.where(state.released, 0, n))

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
        saveat = diffrax.SaveAt(subs=[diffrax.SubSaveAt(ts=seg_ts, fn=_OnParams(self.save)),
                                      diffrax.SubSaveAt(t1=True)],
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


class AutoSlot(eqx.Module):
    """One member's segment in flight in a pool of the switching runner."""

    carry: SegmentCarry  # at the segment's start; once `released`, after it
    t: Float[Array, ""]
    y: PyTree
    saved: dict
    solver_state: PyTree
    controller_state: PyTree
    made_jump: Bool[Array, ""]
    steps: Int[Array, ""]  # of this segment so far
    accepted: Int[Array, ""]
    rejected: Int[Array, ""]
    last_steps: Int[Array, ""]  # in the last call
    released: Bool[Array, ""]  # the segment is over (or the slot is idle)


def _select(mask, new, old):
    """Per-slot `where` over a batched pytree (mask (S,))."""
    return jax.tree_util.tree_map(
        lambda a, b: jnp.where(mask.reshape(-1, *([1] * (a.ndim - 1))), a, b), new, old)


class SlotFunctions(NamedTuple):
    """The jitted pieces of the slot runner for one (program, readout, device layout)."""

    init: Callable
    advance: Callable
    read: Callable


class SwitchingFunctions(NamedTuple):
    """The jitted pieces of the switching (auto) runner: per pool (explicit, implicit)."""

    start: Callable
    enter: tuple[Callable, Callable]
    advance: tuple[Callable, Callable]
    read: Callable


def slot_functions(program: SlotProgram, readout: Callable,
                   wrap: Callable = lambda f: f) -> SlotFunctions | SwitchingFunctions:
    """`init`, `advance` and `readout` batched over slots (`wrap`: e.g. a shard_map over
    devices) and jitted; each compiles once, on first use. A switching `program` (auto) gets
    `SwitchingFunctions`: `readout` then reads a member's final `SegmentCarry`."""
    batched = lambda f: jax.jit(wrap(jax.vmap(f)))  # noqa: E731
    if program.switching:
        return SwitchingFunctions(
            start=batched(program.start),
            enter=tuple(batched(functools.partial(program.enter, implicit=i)) for i in (False, True)),
            advance=tuple(batched(functools.partial(program.advance_auto, implicit=i)) for i in (False, True)),
            read=batched(readout),
        )
    return SlotFunctions(
        init=jax.jit(wrap(jax.vmap(program.init))),
        advance=jax.jit(wrap(jax.vmap(program.advance))),
        read=jax.jit(wrap(jax.vmap(readout))),
    )


def run_queue(
    fns: "SlotFunctions | SwitchingFunctions",
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
    if isinstance(fns, SwitchingFunctions):
        yield from _run_switching(fns, runs, inputs, slots=slots, place=place, stats=stats)
        return
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


class _Pool:
    """Host bookkeeping of one pool of the switching runner."""

    def __init__(self, slots):
        self.run = np.full(slots, -1, np.int64)  # the run in each slot, −1: idle
        self.state = self.keys = self.hyper = None


def _run_switching(fns: SwitchingFunctions, runs: Iterator[int], inputs, *, slots, place, stats):
    """`run_queue` for switching members: pool 0 (explicit) takes new runs and members that switch
    back, pool 1 (implicit) members that switch to implicit; each pool call advances only its
    own slots, so a member pays its own steps in each solver. Members in transit wait (host
    copies of their carry) for a free slot of the other pool."""
    pools = (_Pool(slots), _Pool(slots))
    waiting = (collections.deque(), collections.deque())  # (run, host carry)
    exhausted = False
    while True:
        worked = False
        for p, pool in enumerate(pools):
            entering = []
            for i in np.flatnonzero(pool.run < 0):
                if waiting[p]:
                    run, carry = waiting[p].popleft()
                elif p == 0 and not exhausted:
                    run, carry = next(runs, -1), None
                    if run < 0:
                        exhausted = True
                        break
                else:
                    break
                entering.append((int(i), int(run), carry))
            if entering:
                for i, run, _ in entering:
                    pool.run[i] = run
                occupied = pool.run >= 0
                keys, hyper = inputs(np.where(occupied, pool.run, pool.run[occupied][0]))
                keys, hyper = place(keys), jax.tree_util.tree_map(place, hyper)
                carries = fns.start(keys, hyper)
                moved = [(i, c) for i, _, c in entering if c is not None]
                if moved:
                    host = jax.tree_util.tree_map(np.array, carries)
                    for i, c in moved:
                        jax.tree_util.tree_map(lambda h, v, i=i: h.__setitem__(i, v), host, c)
                    carries = jax.tree_util.tree_map(place, host)
                fresh = fns.enter[p](carries, keys, hyper)
                mask = np.zeros(slots, bool)
                mask[[i for i, _, _ in entering]] = True
                state = fresh if pool.state is None else _select(place(mask), fresh, pool.state)
                pool.state = eqx.tree_at(lambda s: s.released, state, place(np.asarray(state.released) | ~occupied))
                pool.keys, pool.hyper = keys, hyper
            active = pool.run >= 0
            if not active.any():
                continue
            worked = True
            pool.state = fns.advance[p](pool.state, pool.keys, pool.hyper)
            if stats is not None:
                stats["slot_steps"] += int(np.max(np.asarray(pool.state.last_steps))) * slots
                stats["calls"] += 1
            released = np.asarray(pool.state.released) & active
            if not released.any():
                continue
            idx = np.flatnonzero(released)
            carries = jax.tree_util.tree_map(np.asarray, pool.state.carry)
            finished = idx[carries.done[idx]]
            if finished.size:
                out = jax.tree_util.tree_map(np.asarray, fns.read(pool.state.carry, pool.keys, pool.hyper))
                yield pool.run[finished], jax.tree_util.tree_map(lambda a: a[finished], out)
            for i in idx[~carries.done[idx]]:
                waiting[1 - p].append((int(pool.run[i]), jax.tree_util.tree_map(lambda a, i=i: a[i], carries)))
            pool.run[idx] = -1
        if not worked and exhausted and not waiting[0] and not waiting[1]:
            return
