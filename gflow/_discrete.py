"""Discrete optimizers (any optax `GradientTransformation`) on a gradient flow, on the flow's clock.

`solve_discrete` runs gradient descent, heavy ball, Adam, … on the same `GradientFlow` that
`solve_flow` integrates, saves the same observables on the same clock and returns a
`FlowSolution`, so `compare`, `plot_overlay` and the theory overlays apply unchanged.

The clock (time of step k, from t0):
- The optimizer is fed the flow's own force G(θ) = κ R∇L(θ) (κ = `flow.time_scale`, R = `rates`),
  so `optax.sgd(η)` is θ_{k+1} = θ_k − ηG(θ_k): explicit Euler on dθ/dt = −G with step η, and
  step k sits at t_k = t0 + k·η.
- Heavy ball (`optax.sgd(η, momentum=β)`, Polyak: v ← βv + G, θ ← θ − ηv) moves by η/(1−β)·G
  per step once its velocity has built up: pass `momentum=β` and step k sits at
  t_k = t0 + k·η/(1−β), the clock on which heavy ball follows the plain flow to O(η) (Kovachki &
  Stuart 2021) and `modified_flow(flow, η, momentum=β)` to O(η²) (backward error analysis).
- Adam and other normalised methods: t_k = t0 + k·η (leave `momentum=0`). Adam's first moment is
  an *average* m ← β₁m + (1−β₁)G (bias-corrected), not a sum, so its step is η·m̂/(√v̂ + ε) with
  no 1/(1−β₁) amplification; η is then the arc length per step of the preconditioned flow
  dθ/dt = −m̂/√v̂ (sign-like far from a minimum), whose continuous limit is taken at fixed β's on
  t = k·η (Malladi et al. 2022, "On the SDEs and Scaling Rules for Adaptive Gradient Algorithms").
  Adam is *not* close to the gradient flow −G on that clock; the clock only puts it on the same
  time axis.

The save grid `ts` is mapped to step indices by rounding to the nearest step,
k_j = round((t_j − t0)/h) with h the step time above, clipped to [0, K], K = round((t1 − t0)/h);
`FlowSolution.ts` records the actual step times t0 + k_j·h (repeated where several requested
times fall on one step, as the default log grid does below one step).

Implementation: a `lax.scan` over the save grid whose body advances the optimizer with a
`lax.while_loop` to the next save step (no Python loop over steps; observables are evaluated
only at the saves). The step count may be traced: under `jax.vmap` over learning rates each
member stops at its own K (the batch runs until the member with the most steps, the smallest
η, is done).
"""

from collections.abc import Callable, Sequence
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from ._custom_types import Params, RealScalarLike, Times
from ._flow.events import TrainingEvent
from ._flow.modified import check_momentum
from ._flow.observables import resolve_observables
from ._flow.problem import GradientFlow
from ._flow.solve import FlowSolution, _float_dtype, _params, _SaveObservables, default_times, starting_point
from ._validate import (
    check_finite_positive,
    check_increasing_times,
    check_integer,
    is_concrete,
    message,
)

_RUNNING, _EVENT, _FAILED, _CAPPED = 0, 1, 2, 3

DIVERGED_MESSAGE = (
    "solve_discrete: the optimizer diverged: the loss or its gradient became non-finite at step "
    "{step} ({where}, on the flow's clock). Lower the learning rate (gradient descent on a "
    "quadratic is stable only for η < 2/λ_max(H); `gflow.edge_of_stability(η)` as the `event` "
    "stops at the limit instead), or pass `throw=False` to keep the trajectory up to `t_final`."
)
MAX_STEPS_MESSAGE = (
    "solve_discrete: `max_steps` was reached before `t1` (t1 needs round((t1 − t0)/h) steps of "
    "h = η/(1−β)). Raise `max_steps`, or use `throw=False` to keep the partial trajectory."
)


class _DivergedMessages(Sequence):
    """`eqx.branched_error_if` messages indexed by the failing step: the message names the step
    and, when the clock is concrete, its time (the index is the step, the text is built on
    demand, so no list of messages is stored)."""

    def __init__(self, t0: float | None, step_time: float | None):
        self.t0, self.step_time = t0, step_time

    def __getitem__(self, step):
        if not isinstance(step, int | np.integer):
            raise TypeError("message index must be an integer step")
        if self.t0 is None or self.step_time is None:
            where = "t = t0 + step·η/(1−β) for the failing member"
        else:
            where = f"t = {self.t0 + int(step) * self.step_time:.6g}"
        return DIVERGED_MESSAGE.format(step=int(step), where=where)

    def __len__(self) -> int:
        return 2**31 - 1

    def __hash__(self) -> int:
        return hash((type(self), self.t0, self.step_time))

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and (other.t0, other.step_time) == (self.t0, self.step_time)


def _force(flow: GradientFlow, grad: Params) -> Params:
    """G = κ R ⊙ ∇L: minus the flow's vector field (the same operations as `vector_field`)."""
    scaled = grad if flow.rates is None else jax.tree_util.tree_map(lambda g, r: r * g, grad, flow.rates)
    return jax.tree_util.tree_map(lambda g: flow.time_scale * g, scaled)


def _all_finite(tree) -> Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree) if eqx.is_inexact_array(x)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def _tree_where(pred, a, b):
    return jax.tree_util.tree_map(lambda x, y: jnp.where(pred, x, y), a, b)


def _blank(x):
    """The fill value of an unsaved entry: inf (floats) as diffrax, the max integer otherwise."""
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.inexact):
        return jnp.full_like(x, jnp.inf)
    if jnp.issubdtype(x.dtype, jnp.integer):
        return jnp.full_like(x, jnp.iinfo(x.dtype).max)
    return x


def _fired(event: TrainingEvent, t, params, flow) -> Array:
    """The event's condition is on its far side: value ≥ threshold ("up") or ≤ ("down")."""
    value = event.cond(t, params, flow)
    return value >= 0 if event.direction == "up" else value <= 0


@eqx.filter_jit
def _run(flow, optimizer, params0, t0, step_time, targets, k_end, save, events, max_steps):
    dtype = step_time.dtype
    cap = jnp.asarray(np.iinfo(np.int32).max if max_steps is None else max_steps, jnp.int32)
    no_event = tuple(jnp.asarray(False) for _ in events)

    def time(k):
        return t0 + k.astype(dtype) * step_time

    def step(carry):
        k, params, state, status, mask = carry
        t = time(k)
        value, grad = jax.value_and_grad(flow.loss_value)(params)
        force = _force(flow, grad)
        finite = jnp.isfinite(value) & _all_finite(force)
        fired = tuple(_fired(ev, t, params, flow) for ev in events)
        any_fired = jnp.any(jnp.stack(fired)) if fired else jnp.asarray(False)
        updates, new_state = optimizer.update(force, state, params)
        new_params = jax.tree_util.tree_map(lambda p, u: p + u.astype(p.dtype), params, updates)
        status = jnp.where(~finite, _FAILED, jnp.where(any_fired, _EVENT, _RUNNING)).astype(status.dtype)
        go = status == _RUNNING
        mask = tuple(jnp.where(go, m, f) for m, f in zip(mask, fired))
        return (k + go.astype(k.dtype), _tree_where(go, new_params, params), _tree_where(go, new_state, state),
                status, mask)

    def advance(carry, target):
        def cond(c):
            return (c[0] < jnp.minimum(target, cap)) & (c[3] == _RUNNING)

        carry = jax.lax.while_loop(cond, step, carry)
        k, params, state, status, mask = carry
        # A state that overflowed on the last step is caught here (its loss is checked next step).
        status = jnp.where((status == _RUNNING) & ~_all_finite(params), _FAILED, status).astype(status.dtype)
        if max_steps is not None:
            status = jnp.where((status == _RUNNING) & (k < target), _CAPPED, status).astype(status.dtype)
        return (k, params, state, status, mask)

    def save_one(carry, target):
        carry = advance(carry, target)
        k, params, _, status, _ = carry
        valid = (k == target) & (status != _FAILED)
        observed = save(time(k), params, flow)
        observed = jax.tree_util.tree_map(lambda x: jnp.where(valid, x, _blank(x)), observed)
        return carry, observed

    carry = (jnp.zeros((), jnp.int32), params0, optimizer.init(params0), jnp.asarray(_RUNNING, jnp.int32), no_event)
    carry, observed = jax.lax.scan(save_one, carry, targets)
    k, params, _, status, mask = advance(carry, k_end)
    return k, time(k), params, status, mask, observed


def solve_discrete(
    flow: GradientFlow,
    optimizer: Any,
    t1: RealScalarLike,
    *,
    learning_rate: RealScalarLike,
    momentum: RealScalarLike = 0.0,
    start: FlowSolution | None = None,
    ts: Times | None = None,
    num_times: int = 121,
    observables: Sequence[str | Callable] | dict[str, str | Callable] = ("loss",),
    event: TrainingEvent | Sequence[TrainingEvent] | None = None,
    max_steps: int | None = None,
    throw: bool = True,
    save_params: bool = False,
) -> FlowSolution:
    """Run an optax optimizer on `flow` from t0 to `t1` on the flow's clock; a `FlowSolution`.

    - `optimizer`: an `optax.GradientTransformation` built with the step `learning_rate` η
      (e.g. `optax.sgd(η)`, `optax.sgd(η, momentum=β)`, `optax.adam(η)`). It is fed the flow's
      force κR∇L(θ) (the flow's vector field with the sign flipped), so `optax.sgd(η)` is
      explicit Euler on `flow` with step η.
    - `learning_rate` η > 0 and `momentum` β ∈ [0, 1) set the clock only: step k sits at
      t_k = t0 + k·η/(1−β) (see the module docstring: GD t = kη; heavy ball pass its β; Adam
      t = kη). Both may be traced (`jax.vmap` over η: build the optimizer inside the vmapped
      function from the same η).
    - `t1`: the end time; K = round((t1 − t0)/h) steps of h = η/(1−β) are taken, so the run ends
      at `t_final` = t0 + K·h (within h/2 of t1).
    - `start`: a previous `FlowSolution` (of `solve_flow` or `solve_discrete`): continue from its
      `params_final` at its `t_final`. The optimizer's state (momentum, Adam moments) restarts
      from `optimizer.init`.
    - `ts` (T,) in [t0, t1] (default: `num_times` points, the log grid of `solve_flow`): mapped
      to the nearest step; `FlowSolution.ts` holds the actual step times. `observables` as in
      `solve_flow` (names or {name: fn(t, params, flow)}), evaluated only at the saves;
      `save_params=True` adds the parameters.
    - `event`: training event(s) (e.g. `gflow.edge_of_stability(η)`, `gflow.loss_below(ε)`),
      evaluated at every step on θ_k; the run stops at the first step whose value is past the
      threshold (including step 0, where `solve_flow` needs a crossing): `event_time` = t_k,
      `event_mask` says which, `result` = `RESULTS.event_occurred`.
    - `max_steps`: an optional cap on the steps (`RESULTS.max_steps_reached` past it).
    - `throw=True`: a non-finite loss or gradient at step k raises an error naming the step and
      its time (an `eqx.branched_error_if`, so it works under jit and vmap, where one failing
      member raises for the whole batch); with `throw=False`
      the run stops there with `result` = `RESULTS.nonfinite`, `t_final` = t_k, `params_final`
      the first non-finite state, and the entries saved after it are `inf` (as `solve_flow`
      fills entries after an event or a failure).

    `stats`: `num_steps` (steps taken), `learning_rate` (η), `step_time` (h). `event_time` is
    `inf` when no event fired. Works plain, under `jax.jit`, `jax.vmap` (over initial
    parameters, data, learning rates) and their composition. A repeated call compiles again
    unless it is given the same optimizer object (its functions are part of the compile key).
    """
    if not isinstance(flow, GradientFlow):
        raise TypeError(message("flow", "be a gflow.GradientFlow", type(flow).__name__))
    if not (callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))):
        raise TypeError(message("optimizer", "be an optax GradientTransformation (e.g. `optax.sgd(learning_rate)`)",
                                type(optimizer).__name__))
    t0, params0, t1 = starting_point(flow, start, t1)
    return discrete_from(flow, optimizer, t0, params0, t1, learning_rate=learning_rate, momentum=momentum, ts=ts,
                         num_times=num_times, observables=observables, event=event, max_steps=max_steps,
                         throw=throw, save_params=save_params)


def discrete_from(flow, optimizer, t0, params0, t1, *, learning_rate, momentum=0.0, ts=None, num_times=121,
                  observables=("loss",), event=None, max_steps=None, throw=True, save_params=False) -> FlowSolution:
    """`solve_discrete` from a checked start (t0, finite θ0, t1 > t0: `starting_point`'s output).

    The sweep calls it directly: its members' θ0 are made finite by the sweep (a non-finite init
    is a result code), and a traced finiteness check would put a host callback into the program,
    which keeps it out of the persistent compilation cache."""
    check_finite_positive("learning_rate", learning_rate, traced="pass")
    check_momentum(momentum)
    if max_steps is not None:
        max_steps = check_integer("max_steps", max_steps, minimum=1)
    if ts is None:
        num_times = check_integer("num_times", num_times, minimum=2, why="the grid holds t0 and t1")
    obs = resolve_observables(observables)
    if save_params:
        obs = {**obs, "params": _params}
    events = _events(event)

    dtype = _float_dtype(params0) or jnp.asarray(1.0).dtype
    eta = jnp.asarray(learning_rate, dtype)
    step_time = eta / (1 - jnp.asarray(momentum, dtype))
    if ts is not None:  # before t0, t1 become arrays (traced when called under a trace): a Python check
        ts = check_increasing_times("ts", ts, t0, t1)
    t0 = jnp.asarray(t0, dtype)
    t1 = jnp.asarray(t1, dtype)
    ts = default_times(t0, t1, num_times, dtype=dtype) if ts is None else ts
    ts = jnp.asarray(ts, dtype)
    # Thresholds as arrays: a new threshold (learning rate) reuses the compile.
    events = tuple(eqx.tree_at(lambda e: e.threshold, ev, jnp.asarray(ev.threshold, dtype)) for ev in events)
    k_end = _steps(t1 - t0, step_time)
    if is_concrete(k_end) and int(k_end) < 1:
        raise ValueError(message("t1", "lie at least half a step after t0 (t1 − t0 ≥ h/2, h = η/(1−β))",
                                 f"t1 − t0 = {float(t1 - t0):.6g} with h = {float(step_time):.6g}"))
    targets = jnp.clip(_steps(ts - t0, step_time), 0, k_end)

    k, t_final, params, status, mask, observed = _run(
        flow, optimizer, params0, t0, step_time, targets, k_end, _SaveObservables(tuple(obs.items())), events, max_steps
    )
    result = diffrax.RESULTS.where(
        status == _FAILED, diffrax.RESULTS.nonfinite, diffrax.RESULTS.where(
            status == _EVENT, diffrax.RESULTS.event_occurred, diffrax.RESULTS.where(
                status == _CAPPED, diffrax.RESULTS.max_steps_reached, diffrax.RESULTS.successful)))
    sol = FlowSolution(
        ts=t0 + targets.astype(dtype) * step_time,
        observables=observed,
        params_final=params,
        t_final=t_final,
        stats={"num_steps": k, "learning_rate": eta, "step_time": step_time},
        result=result,
        event_time=jnp.where(status == _EVENT, t_final, jnp.inf),
        event_mask=mask if events else None,
    )
    if throw:  # on the whole solution: whatever part of it is used keeps the check
        failed = status == _FAILED
        scalar = lambda x: float(np.asarray(x)) if is_concrete(x) else None  # noqa: E731
        messages = _DivergedMessages(scalar(t0), scalar(step_time))
        sol = eqx.branched_error_if(sol, failed, jnp.where(failed, k, 0), messages)
        sol = eqx.error_if(sol, status == _CAPPED, MAX_STEPS_MESSAGE)
    return sol


def _steps(span: Float[Array, "..."], step_time: Float[Array, ""]) -> Int[Array, "..."]:
    """round(span / h) as int32 (clipped below 2³¹)."""
    return jnp.clip(jnp.round(span / step_time), 0, np.iinfo(np.int32).max - 1).astype(jnp.int32)


def _events(event) -> tuple[TrainingEvent, ...]:
    if event is None:
        return ()
    events = (event,) if isinstance(event, TrainingEvent) else tuple(event)
    for i, ev in enumerate(events):
        if not isinstance(ev, TrainingEvent):
            raise TypeError(message(f"event[{i}]", "be a TrainingEvent (e.g. gflow.edge_of_stability(η))",
                                    type(ev).__name__))
    return events
