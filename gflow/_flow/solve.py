import math
from collections.abc import Callable, Sequence
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import optimistix as optx
from jaxtyping import Array, Bool, Float, Int, PyTree

from .._custom_types import Observables, Params, Times
from .._validate import (
    check_finite,
    check_finite_positive,
    check_increasing_times,
    check_integer,
    check_time_span,
    is_concrete,
    message,
)
from .divergence import DIVERGED_MESSAGE, DivergenceGuard, diverged
from .events import TrainingEvent
from .observables import resolve_observables
from .problem import GradientFlow

MAX_STEPS_MESSAGE = (
    "The gradient-flow solve stopped before `t1`: the maximum number of solver steps "
    "(`max_steps`) was reached. Fixes: raise `max_steps`; loosen `rtol`/`atol`; or, if the flow "
    "is stiff near a minimum (step size ~ 2/λ_max of the Hessian), pass an implicit solver such as "
    "`diffrax.Kvaerno5()`. Use `throw=False` to keep the partial trajectory."
)
FAILED_MESSAGE = (
    "The gradient-flow solve failed (non-finite values or a rejected step below the minimum). "
    "Check the initial parameters and data for NaN/inf, or tighten `rtol`/`atol`. Use "
    "`throw=False` to keep the partial trajectory."
)


class FlowSolution(eqx.Module):
    """The result of `solve_flow` (or of a reduced theory ODE).

    - `ts` (T,): the save times, in the flow's clock.
    - `observables`: {name: array with leading time axis (T, …)}. Entries after an event or a
      failed step are `inf` (diffrax's convention); `t_final` says where the solve stopped.
    - `params_final`: the state at `t_final` (restart from it with `solve_flow(..., start=sol)`).
    - `stats`: num_steps, num_accepted_steps, num_rejected_steps, rhs_evaluations.
    - `result`: the diffrax `RESULTS` code (successful, event_occurred, max_steps_reached, …).
    - `event_time`: the exact time a training event fired, `inf` if none did; `event_mask`
      says which event (same order as given).
    """

    ts: Times
    observables: Observables
    params_final: Params
    t_final: Float[Array, ""]
    stats: dict[str, Int[Array, ""]]
    result: diffrax.RESULTS
    event_time: Float[Array, ""]
    event_mask: tuple[Bool[Array, ""], ...] | None

    @property
    def succeeded(self) -> Bool[Array, ""]:
        """True if the solve reached t1 or stopped at an event."""
        return diffrax.is_okay(self.result)


def _float_dtype(*trees):
    """The widest float dtype among the array leaves of `trees` (None if there is none)."""
    dtypes = [x.dtype for x in jax.tree_util.tree_leaves(trees)
              if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating)]
    return max(dtypes, key=lambda d: jnp.dtype(d).itemsize) if dtypes else None


def default_times(t0, t1, num_times: int = 121, decades: float = 6.0, *, dtype=None) -> Times:
    """Log-spaced save grid: {t0} ∪ logspace(t1·10^-decades, t1) from t0 = 0, else geometric
    from t0 to t1 (plateaus span decades of time).

    `num_times` ≥ 2 points, t0 < t1 finite. `dtype`: the grid's float dtype (`solve_flow` passes
    the state's, so a float32 flow keeps float32 times under x64); default: that of `t0`/`t1`
    when they are float arrays, else JAX's default float."""
    num_times = check_integer("num_times", num_times, minimum=2, why="the grid holds t0 and t1")
    check_finite_positive("decades", decades)
    t1 = check_time_span(t0, t1)
    if dtype is None:
        dtype = _float_dtype(t0, t1) or jnp.asarray(1.0).dtype
    t0 = jnp.asarray(t0, dtype=dtype)
    t1 = jnp.asarray(t1, dtype=dtype)
    log_t1 = jnp.log10(t1)
    from_zero = jnp.concatenate([jnp.zeros(1, dtype), jnp.logspace(log_t1 - decades, log_t1, num_times - 1, dtype=dtype)])
    from_zero = from_zero.at[-1].set(t1)  # 10**log10(t1) can round above t1
    from_t0 = jnp.geomspace(jnp.where(t0 > 0, t0, 1.0), jnp.where(t0 > 0, t1, 2.0), num_times, dtype=dtype)
    if is_concrete(t0):
        return from_zero if float(t0) == 0.0 else from_t0.at[0].set(t0).at[-1].set(t1)
    return jnp.where(t0 > 0, from_t0.at[0].set(t0).at[-1].set(t1), from_zero)


def _rhs_per_step(solver) -> float:
    """Vector-field evaluations per step for explicit Runge–Kutta solvers (FSAL counted once)."""
    tableau = getattr(solver, "tableau", None)
    if tableau is None or not hasattr(tableau, "c"):
        return math.nan
    stages = len(tableau.c) + 1
    return float(stages - 1 if getattr(tableau, "fsal", False) else stages)


def default_tolerances(y0) -> tuple[float, float]:
    """rtol, atol: (1e-8, 1e-10) in float64, (1e-5, 1e-7) in float32."""
    leaves = [x for x in jax.tree_util.tree_leaves(y0) if eqx.is_inexact_array(x)]
    if leaves and all(x.dtype == jnp.float64 for x in leaves):
        return 1e-8, 1e-10
    return 1e-5, 1e-7


def integrate(
    vector_field: Callable,
    y0: PyTree,
    args: Any,
    t0,
    t1,
    *,
    ts: Times | None,
    save: Callable,
    num_times: int = 121,
    solver: diffrax.AbstractSolver | None = None,
    rtol: float | Float[Array, ""] | None = None,
    atol: float | Float[Array, ""] | None = None,
    max_steps: int = 100_000,
    jump_ts: Sequence[float] | Array | None = None,
    event: diffrax.Event | None = None,
    throw: bool = True,
    progress: bool = False,
    dt0: float | None = None,
) -> FlowSolution:
    """The one place gflow calls `diffrax.diffeqsolve`: saves `save(t, y, args)` on `ts` and the
    state at the final time; solve failures follow `throw` (see `solve_flow`)."""
    t1 = check_time_span(t0, t1)
    max_steps = check_integer("max_steps", max_steps, minimum=1)
    if ts is None:
        ts = default_times(t0, t1, num_times, dtype=_float_dtype(y0))
    else:
        ts = check_increasing_times("ts", ts, t0, t1)
    if rtol is None or atol is None:
        d_rtol, d_atol = default_tolerances(y0)
        rtol = d_rtol if rtol is None else rtol
        atol = d_atol if atol is None else atol
    rtol = check_finite_positive("rtol", rtol)
    atol = check_finite_positive("atol", atol)
    solver = diffrax.Tsit5() if solver is None else solver
    controller = diffrax.PIDController(rtol=rtol, atol=atol)
    controller = DivergenceGuard(controller)  # a blow-up ends the solve with a result code
    if jump_ts is not None:
        controller = diffrax.ClipStepSizeController(controller, jump_ts=jnp.asarray(jump_ts))
    saveat = diffrax.SaveAt(subs=[diffrax.SubSaveAt(ts=ts, fn=save), diffrax.SubSaveAt(t1=True)])
    meter = diffrax.TqdmProgressMeter() if progress else diffrax.NoProgressMeter()
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(vector_field),
        solver,
        t0,
        t1,
        dt0,
        y0,
        args,
        saveat=saveat,
        stepsize_controller=controller,
        event=event,
        max_steps=max_steps,
        throw=False,
        progress_meter=meter,
    )
    saved, y_final = sol.ys
    t_final = sol.ts[1][0]
    y_final = jax.tree_util.tree_map(lambda y: y[0], y_final)
    result = sol.result
    if throw:
        max_steps_hit = result == diffrax.RESULTS.max_steps_reached
        blew_up = diverged(result)
        saved = eqx.error_if(saved, max_steps_hit, MAX_STEPS_MESSAGE)
        saved = eqx.error_if(saved, blew_up, DIVERGED_MESSAGE)
        saved = eqx.error_if(saved, ~diffrax.is_okay(result) & ~max_steps_hit & ~blew_up, FAILED_MESSAGE)
    stats = {
        "num_steps": sol.stats["num_steps"],
        "num_accepted_steps": sol.stats["num_accepted_steps"],
        "num_rejected_steps": sol.stats["num_rejected_steps"],
        "rhs_evaluations": sol.stats["num_steps"] * _rhs_per_step(solver) + 1,
    }
    if sol.event_mask is None:
        event_mask, event_time = None, jnp.asarray(jnp.inf, dtype=t_final.dtype)
    else:
        event_mask = tuple(jax.tree_util.tree_leaves(sol.event_mask))
        fired = jnp.any(jnp.stack(event_mask))
        event_time = jnp.where(fired, t_final, jnp.inf)
    return FlowSolution(
        ts=sol.ts[0] if sol.ts[0] is not None else ts,
        observables=saved,
        params_final=y_final,
        t_final=t_final,
        stats=stats,
        result=result,
        event_time=event_time,
        event_mask=event_mask,
    )


# The save and event functions are Modules with static, module-level callables, so repeated
# `solve_flow` calls with the same observables hit diffrax's compilation cache (a fresh closure
# per call would recompile every time).
class _SaveObservables(eqx.Module):
    observables: tuple[tuple[str, Callable], ...] = eqx.field(static=True)

    def __call__(self, t, params, flow):
        return {name: fn(t, params, flow) for name, fn in self.observables}


class _EventCondition(eqx.Module):
    event: TrainingEvent

    def __call__(self, t, y, args, **kwargs):
        return self.event.cond(t, y, args)


def _params(t, params, flow):
    return params


def _make_event(events, flow, rtol, atol) -> diffrax.Event | None:
    if events is None:
        return None
    if isinstance(events, TrainingEvent):
        events = (events,)
    events = tuple(events)
    for i, ev in enumerate(events):
        if not isinstance(ev, TrainingEvent):
            raise TypeError(message(f"event[{i}]", "be a TrainingEvent (e.g. gflow.loss_below(1e-3))", type(ev).__name__))
    conds = [_EventCondition(ev) for ev in events]
    directions = [ev.direction == "up" for ev in events]
    return diffrax.Event(conds, root_finder=optx.Newton(rtol=rtol, atol=atol), direction=directions)


@eqx.filter_jit
def _initial_loss_and_bad_gradients(flow: GradientFlow, params0: Params):
    value, grad = jax.value_and_grad(flow.loss_value)(params0)
    return value, sum(jnp.sum(~jnp.isfinite(g)) for g in jax.tree_util.tree_leaves(grad))


def _check_initial_loss(flow: GradientFlow, params0: Params) -> None:
    """A non-finite loss or gradient at the start would only show as a failed solve later.

    One compiled loss-and-gradient evaluation (cached per problem structure); skipped when
    anything is traced (under jit/vmap the outputs are tracers)."""
    if not all(is_concrete(x) for x in jax.tree_util.tree_leaves((params0, flow))):
        return
    value, bad = _initial_loss_and_bad_gradients(flow, params0)
    if not (is_concrete(value) and is_concrete(bad)):  # inside an outer jit
        return
    fix = ("Lower `init_scale` (the network's outputs overflow at this initialisation), or check "
           "the data and the loss.")
    if not bool(jnp.isfinite(value)):
        raise ValueError(message("initial loss", "be finite", f"{float(value)} at t0", fix))
    if int(bad):
        size = sum(int(jnp.size(p)) for p in jax.tree_util.tree_leaves(params0))
        raise ValueError(message("initial gradient", "be finite", f"{int(bad)} NaN/inf entries of {size} at t0", fix))


def solve_flow(
    flow: GradientFlow,
    t1: float | Float[Array, ""],
    *,
    start: FlowSolution | None = None,
    ts: Times | None = None,
    num_times: int = 121,
    observables: Sequence[str | Callable] | dict[str, str | Callable] = ("loss",),
    solver: diffrax.AbstractSolver | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    event: TrainingEvent | Sequence[TrainingEvent] | None = None,
    max_steps: int = 100_000,
    jump_ts: Sequence[float] | Array | None = None,
    throw: bool = True,
    progress: bool = False,
    save_params: bool = False,
    dt0: float | None = None,
) -> FlowSolution:
    """Integrate the gradient flow dθ/dt = −κ∇L(θ) from t0 to `t1` with diffrax.

    Time is the flow's clock (gradient descent with step η after k steps ↔ t = k·η). From
    `flow.params0` at t0 = 0, or from `start` (a previous `FlowSolution`: continue its
    trajectory from its `t_final`). Saves `observables` (names from `gflow.OBSERVABLES` or
    {name: fn(t, params, flow)}) on `ts` (default: `num_times` points, {0} ∪ log grid over the
    6 decades below t1), never the θ history unless `save_params=True`.
    Defaults: Tsit5 with a PID controller; rtol/atol 1e-8/1e-10 in float64, 1e-5/1e-7 in float32.
    `jump_ts`: times where the vector field is discontinuous (hinge kinks, ReLU deaths).
    `event`: training event(s) that stop the solve at their exact time (`event_time`).
    `throw=True`: a failed solve (max_steps, non-finite values) raises with the fix; with
    `throw=False` the `result` code says what happened and everything saved so far is kept.
    A diverging flow (state or vector field non-finite, or the step size collapsing below the
    float spacing of t) stops at once with `RESULTS.nonfinite` / `RESULTS.dt_min_reached`.
    Works under `jax.jit` and `jax.vmap` (over inits, data, time scales).

    Refused up front (`ValueError`, when the values are concrete): t1 ≤ t0 or non-finite,
    `num_times` < 2, `max_steps` < 1, `rtol`/`atol` ≤ 0 or NaN, non-finite initial parameters,
    and a non-finite initial loss or gradient (one loss-and-gradient evaluation; skipped under
    jit/vmap, where a non-finite start shows as a diverged `result`).
    """
    if not isinstance(flow, GradientFlow):
        raise TypeError(message("flow", "be a gflow.GradientFlow", type(flow).__name__))
    if start is not None:
        if not isinstance(start, FlowSolution):
            raise TypeError(message("start", "be a FlowSolution from a previous solve", type(start).__name__))
        t0, params0 = start.t_final, start.params_final
    else:
        t0, params0 = 0.0, flow.params0
    params0 = check_finite("initial parameters", params0)
    t1 = check_time_span(t0, t1)
    if ts is None:
        check_integer("num_times", num_times, minimum=2, why="the grid holds t0 and t1")
    check_integer("max_steps", max_steps, minimum=1)
    obs = resolve_observables(observables)
    if save_params:
        obs = {**obs, "params": _params}
    save = _SaveObservables(tuple(obs.items()))

    if rtol is None or atol is None:
        d_rtol, d_atol = default_tolerances(params0)
        rtol = d_rtol if rtol is None else rtol
        atol = d_atol if atol is None else atol
    rtol = check_finite_positive("rtol", rtol)
    atol = check_finite_positive("atol", atol)
    _check_initial_loss(flow, params0)
    event = _make_event(event, flow, rtol, atol)
    step_rtol, step_atol = rtol, atol
    fraction = flow.model0.active_fraction()
    if fraction is not None:
        # Padding entries are 0 with 0 derivative, so they add 0 to the error norm's sum of
        # squares but count in its RMS denominator. Scaling both tolerances by √(real fraction)
        # turns the RMS over all entries into the RMS over the real ones: the step-size control
        # (and the initial step) of the unpadded problem, so padded and unpadded solves agree to
        # round-off, not merely to rtol.
        scale = jnp.sqrt(fraction)
        step_rtol, step_atol = rtol * scale, atol * scale
    return integrate(
        flow.vector_field,
        params0,
        flow,
        t0,
        t1,
        ts=ts,
        save=save,
        num_times=num_times,
        solver=solver,
        rtol=step_rtol,
        atol=step_atol,
        max_steps=max_steps,
        jump_ts=jump_ts,
        event=event,
        throw=throw,
        progress=progress,
        dt0=dt0,
    )
