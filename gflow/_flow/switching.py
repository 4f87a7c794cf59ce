"""Automatic explicit ⇄ implicit switching (`AutoSwitch`): the free stiffness probe of the
explicit solver, the controller wrapper that ends a segment, and the segment step shared by
`solve_flow` and the slot runner (so a swept member is the same computation as a single solve).

A switching solve is a sequence of *segments*, each one `diffeqsolve` with one solver (explicit
or implicit) from the member's current (t, θ) towards t1, ended early by `StiffnessMonitor`
when the other solver would be cheaper. `SegmentCarry` is everything that crosses a segment
boundary (state, saves, counters, the per-segment record); it is all arrays, so the loop runs
as a host loop of two compiled segment functions when nothing is traced (a non-stiff solve
never compiles the implicit solver), as a `lax.while_loop` over `lax.cond` under jit/vmap (a
member not in a branch's phase takes no steps there), and member by member in the slot runner.
"""

from collections.abc import Callable
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from diffrax._term import WrapTerm
from jaxtyping import Array, Bool, Float, Int, PyTree

from .._validate import is_concrete
from .controllers import AbstractWrappedController
from .solvers import AutoSwitch

EVENT_CODE = int(diffrax.RESULTS.event_occurred._value)
MAX_STEPS_CODE = int(diffrax.RESULTS.max_steps_reached._value)
SUCCESS_CODE = int(diffrax.RESULTS.successful._value)
EXPLICIT, IMPLICIT = 0, 1


def results_from_code(code) -> diffrax.RESULTS:
    """A diffrax `RESULTS` item from its integer code (an array, possibly batched)."""
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(diffrax.RESULTS.successful), [jnp.asarray(code)])


def _dot(x, y):
    return sum(jnp.vdot(a, b).real for a, b in zip(jax.tree_util.tree_leaves(x), jax.tree_util.tree_leaves(y)))


class StiffnessProbe(diffrax.AbstractAdaptiveSolver, diffrax.AbstractWrappedSolver):
    """Tsit5 or Dopri5, also reporting Hairer's stiffness estimate h·ρ of each step.

    The last two stages of these FSAL methods are both evaluated at t + h, at y₁ and at
    ŷ₆ = y₀ + h Σ a₆ⱼ fⱼ, so ρ = ‖f(y₁) − f(ŷ₆)‖ / ‖y₁ − ŷ₆‖ estimates the dominant eigenvalue of
    the Jacobian at no extra cost (Hairer & Wanner, *Solving ODEs II*, §IV.2). The step itself
    is the wrapped solver's, bit for bit; its error estimate becomes the pair (error, h·ρ),
    which only `StiffnessMonitor` reads (it hands the error alone to the step-size controller).
    """

    solver: diffrax.AbstractRungeKutta

    @property
    def term_structure(self):
        return self.solver.term_structure

    @property
    def interpolation_cls(self):  # pyright: ignore
        return self.solver.interpolation_cls

    def order(self, terms):
        return self.solver.order(terms)

    def error_order(self, terms):
        return self.solver.error_order(terms)

    def init(self, terms, t0, t1, y0, args):
        return self.solver.init(terms, t0, t1, y0, args)

    def func(self, terms, t0, y0, args):
        return self.solver.func(terms, t0, y0, args)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        y1, y_error, dense_info, solver_state, result = self.solver.step(
            terms, t0, t1, y0, args, solver_state, made_jump)
        tableau = self.solver.tableau
        # y₁ − ŷ₆ = Σⱼ (bⱼ − a₆ⱼ) kⱼ over the first six stages (kⱼ = h fⱼ); k₇ − k₆ = h (f(y₁) − f(ŷ₆)).
        weights = np.asarray(tableau.b_sol[:-1]) - np.concatenate([np.asarray(tableau.a_lower[-2]), [0.0]])
        ks = dense_info["k"]
        diff = jax.tree_util.tree_map(lambda k: jnp.tensordot(jnp.asarray(weights, k.dtype), k[:-1], axes=1), ks)
        slope = jax.tree_util.tree_map(lambda k: k[-1] - k[-2], ks)
        num, den = _dot(slope, slope), _dot(diff, diff)
        hrho = jnp.sqrt(num / jnp.where(den > 0, den, 1.0))
        hrho = jnp.where((den > 0) & jnp.isfinite(hrho), hrho, 0.0)
        return y1, (y_error, hrho), dense_info, solver_state, result


def probe(solver: diffrax.AbstractSolver) -> StiffnessProbe:
    tableau = getattr(solver, "tableau", None)
    if tableau is None or not tableau.fsal or not (float(tableau.c[-1]) == float(tableau.c[-2]) == 1.0):
        raise ValueError("the stiffness probe needs an FSAL Runge–Kutta method with c₆ = c₇ = 1; "
                         f"got {type(solver).__name__}")
    return StiffnessProbe(solver)


class _MonitorState(eqx.Module):
    inner: Any
    vector: Any  # the power-iteration vector (implicit phase), else None
    lam: Float[Array, ""]  # the latest estimate of λ_max(J)
    count: Int[Array, ""]  # consecutive steps that pass the switch test
    steps: Int[Array, ""]  # steps of this segment
    t1: Float[Array, ""]


class StiffnessMonitor(AbstractWrappedController):
    """Wraps the step-size controller of one segment; ends it when the other solver is cheaper.

    Explicit phase (`implicit=False`, solver wrapped in `StiffnessProbe`): a step passes when
    h·ρ ≥ `limit` (= threshold × stability boundary: the step is held by stability, not
    accuracy) and t1 is still ≥ `min_remaining` such steps away; rejected steps count too, an
    accepted step that fails resets. Implicit phase:
    one power iteration u ← Ju/‖Ju‖ per step (a Hessian-vector product, carried across steps;
    λ̂ = ‖Ju‖ ≤ ρ(J) for the symmetric J of a gradient flow) and an accepted step passes when
    h·λ̂ < `limit` (= back_ratio × boundary) after `min_iterations` iterations. After
    `patience` passes in a row (and if `enabled`) the controller returns
    `RESULTS.event_occurred`, which ends diffrax's loop after that accepted step. It also ends
    the segment with `RESULTS.max_steps_reached` after `remaining` steps (a switching solve
    spends `max_steps` over all its segments, as one solve does).
    """

    inner: diffrax.AbstractAdaptiveStepSizeController
    vector_field: Callable
    implicit: bool = eqx.field(static=True)
    limit: float = eqx.field(static=True)
    min_iterations: int = eqx.field(static=True)
    min_remaining: int = eqx.field(static=True)
    patience: Int[Array, ""]
    enabled: Bool[Array, ""]
    remaining: Int[Array, ""]

    def init(self, terms, t0, t1, y0, dt0, args, func, error_order):
        tnext, inner = self.inner.init(terms, t0, t1, y0, dt0, args, func, error_order)
        dtype = jnp.result_type(tnext)
        vector = None
        if self.implicit:
            leaves, treedef = jax.tree_util.tree_flatten(y0)
            keys = jr.split(jr.PRNGKey(0), len(leaves))
            vector = jax.tree_util.tree_unflatten(
                treedef, [jr.normal(k, jnp.shape(x), jnp.result_type(x)) for k, x in zip(keys, leaves)])
            norm = jnp.sqrt(_dot(vector, vector))
            vector = jax.tree_util.tree_map(lambda v: v / norm, vector)
        zero = jnp.zeros((), jnp.int32)
        return tnext, _MonitorState(inner, vector, jnp.zeros((), dtype), zero, zero, jnp.asarray(t1, dtype))

    def adapt_step_size(self, t0, t1, y0, y1_candidate, args, y_error, error_order, controller_state):
        s = controller_state
        if not self.implicit:
            y_error, hrho = y_error
        keep, next_t0, next_t1, made_jump, inner, result = self.inner.adapt_step_size(
            t0, t1, y0, y1_candidate, args, y_error, error_order, s.inner)
        h = t1 - t0
        if self.implicit:
            _, jv = jax.jvp(lambda y: self.vector_field(t0, y, args), (y0,), (s.vector,))
            lam = jnp.sqrt(_dot(jv, jv)).astype(s.lam.dtype)
            ok = jnp.isfinite(lam) & (lam > 0)
            vector = jax.tree_util.tree_map(lambda v, u: jnp.where(ok, v / jnp.where(ok, lam, 1), u), jv, s.vector)
            lam = jnp.where(ok, lam, s.lam)
            passes = keep & (h * lam < self.limit) & (s.steps + 1 >= self.min_iterations)
        else:
            hrho = jnp.where(jnp.isfinite(hrho), hrho, 0.0).astype(s.lam.dtype)
            vector = s.vector
            lam = hrho / jnp.where(h > 0, h, 1)
            # Stiffness-limited, and still far from t1 at this step (else the implicit solver's
            # compile and Newton–Krylov steps cannot pay off).
            passes = (hrho >= self.limit) & (s.t1 - t0 >= self.min_remaining * h)
        count = jnp.where(passes, s.count + 1, jnp.where(keep, 0, s.count))
        steps = s.steps + 1
        reached_end = keep & (next_t0 >= s.t1)
        switch = keep & (count >= self.patience) & self.enabled & ~reached_end
        capped = (steps >= self.remaining) & ~reached_end
        fine = diffrax.is_successful(result)
        result = diffrax.RESULTS.where(fine & switch, diffrax.RESULTS.event_occurred, result)
        result = diffrax.RESULTS.where(fine & ~switch & capped, diffrax.RESULTS.max_steps_reached, result)
        return keep, next_t0, next_t1, made_jump, _MonitorState(inner, vector, lam, count, steps, s.t1), result


class SegmentCarry(eqx.Module):
    """A switching solve between segments (one member; batched under vmap)."""

    t: Float[Array, ""]
    y: PyTree
    saved: PyTree  # {name: (T, …)}: inf where not reached yet
    phase: Int[Array, ""]  # the next segment's solver: 0 explicit, 1 implicit
    num_segments: Int[Array, ""]
    num_back: Int[Array, ""]  # implicit → explicit switches so far
    num_steps: Int[Array, ""]
    num_accepted_steps: Int[Array, ""]
    num_rejected_steps: Int[Array, ""]
    steps_explicit: Int[Array, ""]
    steps_implicit: Int[Array, ""]
    segment_solvers: Int[Array, " K"]  # −1: unused
    segment_start_times: Float[Array, " K"]  # inf: unused
    segment_steps: Int[Array, " K"]
    switch_time: Float[Array, ""]  # the first switch to implicit (inf: none)
    result: Int[Array, ""]  # diffrax code of the solve so far
    event_time: Float[Array, ""]
    event_mask: tuple | None
    done: Bool[Array, ""]


class AutoPlan(eqx.Module):
    """What a switching solve needs besides its state: the two solvers, the step-size
    controller of `solve_flow` (PID + divergence guard, clipped at jumps), field, saves, event."""

    auto: AutoSwitch
    explicit: StiffnessProbe
    implicit: diffrax.AbstractSolver
    controller: diffrax.AbstractAdaptiveStepSizeController
    vector_field: Callable
    ts: Float[Array, " T"]
    save: Callable
    event: Any
    t1: Float[Array, ""]
    dt0: Any  # None, or the user's first step (first segment only)
    max_steps: int = eqx.field(static=True)
    meter: Any = None

    def solver(self, implicit: bool):
        return self.implicit if implicit else self.explicit

    def start(self, y0, t0, args, xp=jnp) -> SegmentCarry:
        """The carry before the first segment (explicit) at (t0, y0); `xp=np` builds it with
        numpy (concrete inputs: no eager JAX programs)."""
        dtype = self.ts.dtype
        if xp is jnp:
            struct = jax.eval_shape(self.save, jax.ShapeDtypeStruct((), dtype), y0, args)
            saved = jax.tree_util.tree_map(lambda s: jnp.full((self.ts.shape[0], *s.shape), jnp.inf, s.dtype), struct)
        else:
            carry_struct = _start_struct(self, y0, t0, args)  # traced once per problem structure
            saved = jax.tree_util.tree_map(lambda s: np.full(s.shape, np.inf, s.dtype), carry_struct.saved)
        k = self.auto.max_segments
        zero = xp.zeros((), xp.int32)
        if self.event is None:
            mask = None
        else:
            n = len(self.event.cond_fn) if isinstance(self.event.cond_fn, (list, tuple)) else 1
            mask = tuple(xp.asarray(False) for _ in range(n))
        inf = xp.asarray(xp.inf, dtype)
        fields = (xp.asarray(t0, dtype), y0, saved, zero, zero, zero, zero, zero, zero, zero, zero,
                  xp.full((k,), -1, xp.int32), xp.full((k,), xp.inf, dtype), xp.zeros((k,), xp.int32),
                  inf, xp.asarray(SUCCESS_CODE, xp.int32), inf, mask, xp.asarray(False))
        if xp is jnp:
            return SegmentCarry(*fields)
        # numpy leaves in the traced carry's structure (not through the constructor, whose
        # annotations type the fields as jax arrays).
        treedef = jax.tree_util.tree_structure(carry_struct)
        return jax.tree_util.tree_unflatten(treedef, jax.tree_util.tree_leaves(fields))

    def monitor(self, carry: SegmentCarry, implicit: bool, controller=None) -> StiffnessMonitor:
        auto = self.auto
        if implicit:
            limit, patience = auto.back_ratio * auto.stability_boundary, jnp.asarray(auto.patience, jnp.int32)
        else:
            limit = auto.threshold * auto.stability_boundary
            backoff = jnp.asarray(auto.backoff, jnp.int32) ** jnp.minimum(carry.num_back, 8)
            patience = jnp.asarray(auto.patience, jnp.int32) * backoff
        return StiffnessMonitor(
            self.controller if controller is None else controller, self.vector_field, implicit, float(limit),
            auto.min_iterations, auto.min_remaining, patience, carry.num_segments < auto.max_segments - 1,
            jnp.asarray(self.max_steps, jnp.int32) - carry.num_steps)

    def first_step(self, carry: SegmentCarry, implicit: bool, args) -> Float[Array, ""]:
        """The segment's first step: the user's `dt0` for the first segment, else diffrax's
        initial-step selection at the segment's start (through the same term wrapper as
        `diffeqsolve`, so a solve that never switches is bit for bit the plain explicit one)."""
        solver = self.solver(implicit)
        terms = WrapTerm(diffrax.ODETerm(self.vector_field), jnp.asarray(1))
        t = carry.t
        tnext, _ = self.controller.init(terms, t, self.t1, carry.y, None, args, solver.func, solver.error_order(terms))
        dt = jnp.minimum(tnext, self.t1) - t
        if self.dt0 is not None:
            dt = jnp.where(carry.num_segments == 0, jnp.asarray(self.dt0, dt.dtype), dt)
        return dt

    def fresh(self, carry: SegmentCarry, t_from):
        """Save points a segment (piece) starting at `t_from` writes: those after it (and t0 itself
        for the solve's first piece)."""
        return (self.ts > t_from) | (carry.num_steps == 0)

    def end_segment(self, carry: SegmentCarry, implicit: bool, *, t_final, y_final, saved, num_steps,
                    num_accepted, num_rejected, code, event_mask) -> SegmentCarry:
        """The carry after a segment that ran `num_steps` steps and stopped with `code`."""
        if event_mask is None:
            fired = jnp.asarray(False)
        else:
            fired = jnp.any(jnp.stack([jnp.asarray(m) for m in event_mask]))
        switched = (code == EVENT_CODE) & ~fired & (t_final < self.t1)
        k = carry.num_segments
        phase = jnp.asarray(IMPLICIT if implicit else EXPLICIT, jnp.int32)
        n = num_steps.astype(jnp.int32)
        return SegmentCarry(
            t=t_final,
            y=y_final,
            saved=saved,
            phase=jnp.where(switched, 1 - phase, phase),
            num_segments=k + 1,
            num_back=carry.num_back + (switched & implicit).astype(jnp.int32),
            num_steps=carry.num_steps + n,
            num_accepted_steps=carry.num_accepted_steps + num_accepted.astype(jnp.int32),
            num_rejected_steps=carry.num_rejected_steps + num_rejected.astype(jnp.int32),
            steps_explicit=carry.steps_explicit + (0 if implicit else n),
            steps_implicit=carry.steps_implicit + (n if implicit else 0),
            segment_solvers=carry.segment_solvers.at[k].set(phase),
            segment_start_times=carry.segment_start_times.at[k].set(carry.t),
            segment_steps=carry.segment_steps.at[k].set(n),
            switch_time=jnp.where(switched & (not implicit) & ~jnp.isfinite(carry.switch_time), t_final,
                                  carry.switch_time),
            result=jnp.where(switched, SUCCESS_CODE, code).astype(jnp.int32),
            event_time=jnp.where(fired, t_final, carry.event_time),
            event_mask=event_mask,
            done=~switched,
        )


def _merge(mask, new, old):
    return jax.tree_util.tree_map(lambda a, b: jnp.where(mask.reshape(-1, *([1] * (b.ndim - 1))), a, b), new, old)


def run_segment(plan: AutoPlan, args, carry: SegmentCarry, implicit: bool, masked: bool = True) -> SegmentCarry:
    """One segment of `solve_flow`'s switching solve: a `diffeqsolve` with the `implicit` or the
    explicit solver from the carry's (t, y), ended by the monitor. A member that is done or in
    the other phase takes no steps (t0 = t1) and keeps its carry (`masked=False`: the caller
    knows the member is active, as the concrete host loop does, and the masks are left out)."""
    active = ~carry.done & (carry.phase == (IMPLICIT if implicit else EXPLICIT))
    t1 = plan.t1
    if masked:
        t0 = jnp.where(active, carry.t, t1)
        dt0 = jnp.where(active, plan.first_step(carry, implicit, args), jnp.ones_like(t1))
    else:
        t0, dt0 = carry.t, plan.first_step(carry, implicit, args)
    saveat = diffrax.SaveAt(subs=[diffrax.SubSaveAt(ts=jnp.clip(plan.ts, t0, t1), fn=plan.save),
                                  diffrax.SubSaveAt(t1=True)])
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(plan.vector_field), plan.solver(implicit), t0, t1, dt0, carry.y, args,
        saveat=saveat, stepsize_controller=plan.monitor(carry, implicit), event=plan.event,
        max_steps=plan.max_steps, throw=False,
        progress_meter=diffrax.NoProgressMeter() if plan.meter is None else plan.meter,
    )
    seg_saved, y_final = sol.ys
    mask = None if sol.event_mask is None else tuple(jax.tree_util.tree_leaves(sol.event_mask))
    new = plan.end_segment(
        carry, implicit, t_final=sol.ts[1][0], y_final=jax.tree_util.tree_map(lambda y: y[0], y_final),
        saved=_merge(plan.fresh(carry, carry.t), seg_saved, carry.saved), num_steps=sol.stats["num_steps"],
        num_accepted=sol.stats["num_accepted_steps"], num_rejected=sol.stats["num_rejected_steps"],
        code=sol.result._value.astype(jnp.int32), event_mask=mask)
    if not masked:
        return new
    return jax.tree_util.tree_map(lambda a, b: jnp.where(active, a, b), new, carry)


def summary(carry: SegmentCarry, ts, rhs_per_step: float) -> tuple[dict, dict]:
    """The solve's outputs (times, saves, final state, result, event) and its stats."""
    seg = {
        "ts": jnp.where(ts <= carry.t, ts, jnp.inf),
        "saved": carry.saved,
        "y_final": carry.y,
        "t_final": carry.t,
        "result": results_from_code(carry.result),
        "event_time": carry.event_time,
        "event_mask": carry.event_mask,
    }
    stats = {
        "num_steps": carry.num_steps,
        "num_accepted_steps": carry.num_accepted_steps,
        "num_rejected_steps": carry.num_rejected_steps,
        "rhs_evaluations": jnp.where(carry.steps_implicit > 0, jnp.nan,
                                     carry.steps_explicit.astype(carry.t.dtype) * rhs_per_step + 1),
        "num_steps_explicit": carry.steps_explicit,
        "num_steps_implicit": carry.steps_implicit,
        "switch_time": carry.switch_time,
        "num_segments": carry.num_segments,
        "segment_solvers": carry.segment_solvers,
        "segment_start_times": carry.segment_start_times,
        "segment_steps": carry.segment_steps,
    }
    return seg, stats


@eqx.filter_jit
def _start_struct(plan: AutoPlan, y0, t0, args):
    """The starting carry's shapes and dtypes: a static output, so `filter_jit` traces this once
    per problem structure and returns the cached value after."""
    return jax.eval_shape(lambda: plan.start(y0, t0, args))


@eqx.filter_jit
def _segment_program(plan: AutoPlan, args, carry: SegmentCarry, implicit: bool, rhs_per_step: float, finish):
    """One segment and, from the carry after it, `finish(*summary(...), args)`: a solve that
    never switches is this one program (no separate start, summary or check programs)."""
    carry = run_segment(plan, args, carry, implicit, masked=False)
    return carry, finish(*summary(carry, plan.ts, rhs_per_step), args)


def run_switching(plan: AutoPlan, args, y0, t0, rhs_per_step: float, finish=None):
    """All segments from (t0, y0), then `summary` (and `finish(seg, stats, args)` when given).
    Concrete inputs: a host loop over at most `max_segments` calls of two compiled segment
    functions (the implicit one compiles only if the solve switches; the starting carry is
    built with numpy). Traced (jit/vmap): a `lax.while_loop` over a `lax.cond` of the two."""
    if finish is None:
        finish = _no_finish
    if all(is_concrete(x) for x in jax.tree_util.tree_leaves((plan, args, y0, t0))):
        carry = plan.start(y0, t0, args, xp=np)
        while True:
            carry, out = _segment_program(plan, args, carry, bool(int(carry.phase) == IMPLICIT), rhs_per_step,
                                          finish)
            if bool(carry.done):
                return out

    return _traced_switching(plan, args, y0, t0, rhs_per_step, finish)


@eqx.filter_jit
def _traced_switching(plan: AutoPlan, args, y0, t0, rhs_per_step: float, finish):
    """The traced path as one function (under an eager `vmap` one batched program, not a loop
    program plus the summary's and `finish`'s ops one by one)."""

    def body(c):
        return jax.lax.cond(c.phase == IMPLICIT, lambda c: run_segment(plan, args, c, True),
                            lambda c: run_segment(plan, args, c, False), c)

    carry = jax.lax.while_loop(lambda c: ~c.done, body, plan.start(y0, t0, args))
    return finish(*summary(carry, plan.ts, rhs_per_step), args)


def _no_finish(seg, stats, args):
    return seg, stats
