import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
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
from .solvers import DEFAULT_SOLVER, AutoSwitch, MatrixFreeImplicit, resolve_solver
from .switching import AutoPlan, probe, run_switching

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
    - `stats`: num_steps, num_accepted_steps, num_rejected_steps, rhs_evaluations (NaN for
      implicit solvers); `energy_residual` (the energy audit, see `solve_flow`); with
      `solver="auto"` also num_steps_explicit, num_steps_implicit, switch_time (the first
      switch to implicit, ∞: never), num_segments and per segment (shape (max_segments,),
      unused entries −1 / ∞ / 0) segment_solvers (0 explicit, 1 implicit),
      segment_start_times and segment_steps.
    - `result`: the diffrax `RESULTS` code (successful, event_occurred, max_steps_reached, …).
    - `event_time`: the exact time a training event fired, `inf` if none did; `event_mask`
      says which event (same order as given).
    """

    ts: Times
    observables: Observables
    params_final: Params
    t_final: Float[Array, ""]
    stats: dict[str, Int[Array, "..."] | Float[Array, "..."]]
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
    if is_concrete(t0) and is_concrete(t1):  # numpy: no eager JAX programs to compile
        lo, hi = float(np.asarray(t0)), float(np.asarray(t1))
        if lo == 0.0:
            log_hi = np.log10(hi)
            grid = np.concatenate([[0.0], np.logspace(log_hi - decades, log_hi, num_times - 1)])
        else:
            grid = np.geomspace(lo, hi, num_times)
            grid[0] = lo
        grid[-1] = hi  # 10**log10(t1) can round above t1
        return jnp.asarray(grid.astype(dtype))
    t0 = jnp.asarray(t0, dtype=dtype)
    t1 = jnp.asarray(t1, dtype=dtype)
    log_t1 = jnp.log10(t1)
    logs = jnp.logspace(log_t1 - decades, log_t1, num_times - 1, dtype=dtype)
    from_zero = jnp.concatenate([jnp.zeros(1, dtype), logs])
    from_zero = from_zero.at[-1].set(t1)  # 10**log10(t1) can round above t1
    from_t0 = jnp.geomspace(jnp.where(t0 > 0, t0, 1.0), jnp.where(t0 > 0, t1, 2.0), num_times, dtype=dtype)
    return jnp.where(t0 > 0, from_t0.at[0].set(t0).at[-1].set(t1), from_zero)


def _rhs_per_step(solver) -> float:
    """Vector-field evaluations per step for explicit Runge–Kutta solvers (FSAL counted once)."""
    if isinstance(solver, diffrax.AbstractImplicitSolver):
        return math.nan  # Newton/Krylov iterations vary per step
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
    solver: diffrax.AbstractSolver | str | MatrixFreeImplicit | AutoSwitch | None = None,
    rtol: float | Float[Array, ""] | None = None,
    atol: float | Float[Array, ""] | None = None,
    max_steps: int = 100_000,
    jump_ts: Sequence[float] | Array | None = None,
    event: diffrax.Event | None = None,
    throw: bool = True,
    progress: bool = False,
    dt0: float | None = None,
    norm: Callable | None = None,
) -> FlowSolution:
    """The one place gflow calls `diffrax.diffeqsolve`: saves `save(t, y, args)` on `ts` and the
    state at the final time; solve failures follow `throw` (see `solve_flow`).

    `solver`: a diffrax solver, "explicit" (Tsit5; also None, the default here, for reduced
    theory ODEs), "implicit" (`MatrixFreeImplicit()`), "auto" (`AutoSwitch()`), or one of those
    gflow classes.
    `norm`: the step-size controller's error norm (default RMS over the whole state)."""
    return _integrate(vector_field, y0, args, t0, t1, ts=ts, save=save, num_times=num_times, solver=solver,
                      rtol=rtol, atol=atol, max_steps=max_steps, jump_ts=jump_ts, event=event, throw=throw,
                      progress=progress, dt0=dt0, norm=norm)[0]


def _integrate(vector_field, y0, args, t0, t1, *, ts, save, num_times=121, solver=None, rtol=None, atol=None,
               max_steps=100_000, jump_ts=None, event=None, throw=True, progress=False, dt0=None, norm=None,
               extras=None) -> tuple[FlowSolution, dict]:
    """`integrate`, plus `extras`: None, or a Module whose `__call__(args, y_final) -> dict` runs
    inside the solve's program and whose `check(values)` sees those values (when concrete)
    before the solve's own failures are thrown; returns (solution, values)."""
    t1 = check_time_span(t0, t1)
    max_steps = check_integer("max_steps", max_steps, minimum=1)
    if ts is None:
        ts = default_times(t0, t1, num_times, dtype=_float_dtype(y0))
    else:
        ts = check_increasing_times("ts", ts, t0, t1)
    rtol, atol = member_tolerances(y0, rtol, atol)
    solver = resolve_solver(solver, atol)
    controller = flow_controller(rtol, atol, norm=norm, jump_ts=jump_ts)
    meter = diffrax.TqdmProgressMeter() if progress else diffrax.NoProgressMeter()
    run = _Segment(vector_field, y0, args, ts, save, controller, event, max_steps, meter, dt0)
    finish = _Finish(extras)
    if not isinstance(solver, AutoSwitch):
        seg, stats, flags, extra = _solve_program(run, solver, t0, t1, y0, finish)
    else:
        # Auto: segments of one solver each, ended by the stiffness monitor (see `switching`).
        plan = AutoPlan(solver, probe(solver.explicit), solver.implicit.diffrax_solver(atol), controller,
                        vector_field, jnp.asarray(ts), save, event, jnp.asarray(t1, jnp.asarray(ts).dtype),
                        None if dt0 is None else jnp.asarray(dt0), max_steps, None if not progress else meter)
        seg, stats, flags, extra = run_switching(plan, args, y0, t0, _rhs_per_step(solver.explicit), finish)
    concrete = all(is_concrete(x) for x in jax.tree_util.tree_leaves((flags, extra)))
    if extras is not None and concrete:
        extras.check(extra)
    return _solution(seg, ts, stats, flags, throw, concrete), {**extra, "okay": flags["okay"]}


class _Finish(eqx.Module):
    """The end of a solve's compiled program: the throw flags from the result code and the
    caller's `extras(args, y_final)`, so that a concrete solve is one program (no eager ops)."""

    extras: Any

    def __call__(self, seg: dict, stats: dict, args):
        result = seg["result"]
        okay = diffrax.is_okay(result)
        max_steps_hit = result == diffrax.RESULTS.max_steps_reached
        blew_up = diverged(result)
        flags = {"okay": okay, "max_steps": max_steps_hit, "diverged": blew_up,
                 "failed": ~okay & ~max_steps_hit & ~blew_up}
        extra = {} if self.extras is None else self.extras(args, seg["y_final"])
        return seg, stats, flags, extra


@eqx.filter_jit
def _solve_program(run: "_Segment", solver, t0, t1, y0, finish: _Finish):
    """A single-solver solve: `diffeqsolve`, its outputs and stats, `finish` (one program)."""
    sol = run(solver, t0, t1, y0)
    stats = {
        "num_steps": sol.stats["num_steps"],
        "num_accepted_steps": sol.stats["num_accepted_steps"],
        "num_rejected_steps": sol.stats["num_rejected_steps"],
        "rhs_evaluations": sol.stats["num_steps"] * _rhs_per_step(solver) + 1,
    }
    return finish(_unpack(sol), stats, run.args)


class _Segment(eqx.Module):
    """One `diffeqsolve` with the save grid, controller, event and limits shared by segments."""

    vector_field: Callable
    y0: Any
    args: Any
    ts: Any
    save: Callable
    controller: Any
    event: Any
    max_steps: int = eqx.field(static=True)
    meter: Any
    dt0: Any

    def __call__(self, solver, t0, t1, y0, *, ts=None, controller=None):
        ts = self.ts if ts is None else ts
        saveat = diffrax.SaveAt(subs=[diffrax.SubSaveAt(ts=ts, fn=self.save), diffrax.SubSaveAt(t1=True)])
        return diffrax.diffeqsolve(
            diffrax.ODETerm(self.vector_field),
            solver,
            t0,
            t1,
            self.dt0,
            y0,
            self.args,
            saveat=saveat,
            stepsize_controller=self.controller if controller is None else controller,
            event=self.event,
            max_steps=self.max_steps,
            throw=False,
            progress_meter=self.meter,
        )


def _unpack(sol) -> dict:
    saved, y_final = sol.ys
    t_final = sol.ts[1][0]
    if sol.event_mask is None:
        event_mask, event_time = None, jnp.asarray(jnp.inf, dtype=t_final.dtype)
    else:
        event_mask = tuple(jax.tree_util.tree_leaves(sol.event_mask))
        fired = jnp.any(jnp.stack(event_mask))
        event_time = jnp.where(fired, t_final, jnp.inf)
    return {
        "ts": sol.ts[0],
        "saved": saved,
        "y_final": jax.tree_util.tree_map(lambda y: y[0], y_final),
        "t_final": t_final,
        "result": sol.result,
        "event_time": event_time,
        "event_mask": event_mask,
    }


_THROW = (("max_steps", MAX_STEPS_MESSAGE), ("diverged", DIVERGED_MESSAGE), ("failed", FAILED_MESSAGE))


def _solution(seg: dict, ts, stats: dict, flags: dict, throw: bool, concrete: bool) -> FlowSolution:
    saved = seg["saved"]
    if throw:
        for name, msg in _THROW:
            # Concrete flags: `error_if` only on the failing one (it then raises at once), so a
            # successful solve runs no program besides its own.
            if not concrete or bool(flags[name]):
                saved = eqx.error_if(saved, flags[name], msg)
    return FlowSolution(
        ts=seg["ts"] if seg["ts"] is not None else ts,
        observables=saved,
        params_final=seg["y_final"],
        t_final=seg["t_final"],
        stats=stats,
        result=seg["result"],
        event_time=seg["event_time"],
        event_mask=seg["event_mask"],
    )


# The save and event functions are Modules with static, module-level callables, so repeated
# `solve_flow` calls with the same observables hit diffrax's compilation cache (a fresh closure
# per call would recompile every time).
class _SaveObservables(eqx.Module):
    # Not static: an observable may be a Module holding arrays (`outputs_at(x)`), which then
    # trace as inputs (same-shape x reuse the compiled solve).
    observables: tuple[tuple[str, Callable], ...]

    def __call__(self, t, params, flow):
        return {name: fn(t, params, flow) for name, fn in self.observables}


class _EventCondition(eqx.Module):
    event: TrainingEvent

    def __call__(self, t, y, args, **kwargs):
        return self.event.cond(t, y[0], args)  # y = (params, energy integral)


class _OnParams(eqx.Module):
    """Saves `save(t, params, flow)` from the audited state (params, energy integral)."""

    save: Callable

    def __call__(self, t, y, flow):
        return self.save(t, y[0], flow)


#: Internal switch for benchmarks/compile_time.py (audit overhead): False skips the energy
#: integrand, read when a solve is traced (set it before the first solve of a new problem).
AUDIT = True


class _AuditedField(eqx.Module):
    """The flow's field and the energy-audit integrand from one gradient evaluation.

    d/dt (θ, E) = (−κ·r⊙∇L, κ·Σ r(∇L)²): exactly `GradientFlow.vector_field` (same operations,
    so the same rounding) plus the dissipation rate, so along an exact flow L(t) − L(0) = −E(t).
    """

    def __call__(self, t, y, flow):
        grad = flow.gradient(y[0])
        scaled = grad if flow.rates is None else jax.tree_util.tree_map(lambda g, r: r * g, grad, flow.rates)
        field = jax.tree_util.tree_map(lambda g: -flow.time_scale * g, scaled)
        if not AUDIT:  # benchmarks only: the integrand skipped (E stays 0)
            return field, jnp.zeros((), y[1].dtype)
        power = sum(jnp.sum(g * h) for g, h in zip(jax.tree_util.tree_leaves(grad), jax.tree_util.tree_leaves(scaled)))
        return field, (flow.time_scale * power).astype(y[1].dtype)


def _params_norm(y):
    """The PID's RMS error norm over θ only: the energy integral never steers the step size."""
    return optx.rms_norm(y[0])


#: The energy audit's tolerance is ENERGY_TOLERANCE × rtol. The integral E is integrated with
#: the step sizes that control θ to rtol, and both L(θ(t)) and E(t) inherit relative errors of
#: order rtol·(steps' accumulated error growth); 100× leaves room for that accumulation over
#: the ~10²–10⁵ steps of a solve (measured residuals on smooth problems: ≲ rtol) while a
#: gradient that is not the loss's (stop_gradient, a changed loss) misses by O(1).
#: ENERGY_FLOOR: at very tight rtol (1e-10) a flow with kinks (hinge losses, ReLU patterns
#: crossed without `jump_ts`) integrates E across each kink to ~1e-8, not to rtol (measured:
#: 3.6e-8 on the Pellegrini–Biroli symmetric problem at rtol 1e-10); a relative miss below one
#: part per million is never a wrong gradient, so the warning threshold is at least that.
ENERGY_TOLERANCE = 100.0
ENERGY_FLOOR = 1e-6


def energy_tolerance(rtol) -> float:
    """The residual above which a concrete solve warns: max(100 × rtol, 1e-6)."""
    return max(ENERGY_TOLERANCE * float(rtol), ENERGY_FLOOR)

ENERGY_MESSAGE = (
    "The energy audit of the gradient flow failed: L(t_final) − L(0) should equal −∫κ‖∇L‖²_r dt "
    "along the solve, but the relative residual is {residual:.3g} (tolerance {tolerance:.3g} = "
    "max({factor:g} × rtol, 1e-6)). The likely causes: the loss that is differentiated is not the loss "
    "that is reported (a `jax.lax.stop_gradient` or custom derivative in the model or loss, "
    "a loss changed between differentiation and evaluation), data changed inside the model, "
    "or an accuracy problem (tighten `rtol`/`atol`)."
)


def energy_residual(loss0, loss1, energy):
    """|L1 − L0 + E| / (|L0 − L1| + floor): the relative miss of the energy identity. The floor,
    10³·eps·(|L0| + |L1|), keeps round-off of the two loss evaluations from reading as a miss
    when the loss barely moves."""
    eps = jnp.finfo(jnp.result_type(loss0)).eps
    floor = 1e3 * eps * (jnp.abs(loss0) + jnp.abs(loss1)) + jnp.finfo(jnp.result_type(loss0)).tiny
    return jnp.abs(loss1 - loss0 + energy) / (jnp.abs(loss0 - loss1) + floor)


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
            raise TypeError(message(f"event[{i}]", "be a TrainingEvent (e.g. gflow.loss_below(1e-3))",
                                    type(ev).__name__))
    conds = [_EventCondition(ev) for ev in events]
    directions = [ev.direction == "up" for ev in events]
    return diffrax.Event(conds, root_finder=optx.Newton(rtol=rtol, atol=atol), direction=directions)


INITIAL_FIX = ("Lower `init_scale` (the network's outputs overflow at this initialisation), or check "
               "the data and the loss.")


class _FlowChecks(eqx.Module):
    """`solve_flow`'s values computed inside the solve's program: the energy residual and,
    for a concrete solve, the initial loss and the number of non-finite initial gradient
    entries (one loss-and-gradient evaluation at θ0), which `check` turns into the up-front
    `ValueError` (before the solve's own failures are thrown)."""

    params0: Any
    initial: bool = eqx.field(static=True)

    def __call__(self, flow: GradientFlow, y_final) -> dict:
        params1, energy = y_final
        if self.initial:
            loss0, grad = jax.value_and_grad(flow.loss_value)(self.params0)
            bad = sum(jnp.sum(~jnp.isfinite(g)) for g in jax.tree_util.tree_leaves(grad))
        else:
            loss0, bad = flow.loss_value(self.params0), None
        return {"energy_residual": energy_residual(loss0, flow.loss_value(params1), energy),
                "initial_loss": loss0, "initial_bad_gradients": bad}

    def check(self, values: dict) -> None:
        """A non-finite loss or gradient at the start (would only show as a failed solve)."""
        if not self.initial:
            return
        value, bad = float(values["initial_loss"]), int(values["initial_bad_gradients"])
        if not math.isfinite(value):
            raise ValueError(message("initial loss", "be finite", f"{value} at t0", INITIAL_FIX))
        if bad:
            size = sum(int(jnp.size(p)) for p in jax.tree_util.tree_leaves(self.params0))
            raise ValueError(message("initial gradient", "be finite", f"{bad} NaN/inf entries of {size} at t0",
                                     INITIAL_FIX))


def member_tolerances(params0, rtol, atol):
    """rtol, atol with the dtype defaults filled in, checked finite and > 0."""
    if rtol is None or atol is None:
        d_rtol, d_atol = default_tolerances(params0)
        rtol = d_rtol if rtol is None else rtol
        atol = d_atol if atol is None else atol
    return check_finite_positive("rtol", rtol), check_finite_positive("atol", atol)


def step_tolerances(flow: GradientFlow, rtol, atol):
    """The tolerances the step-size controller sees (scaled for a padded width/data size)."""
    fraction = flow.model0.active_fraction()
    if fraction is None:
        return rtol, atol
    # Padding entries are 0 with 0 derivative, so they add 0 to the error norm's sum of
    # squares but count in its RMS denominator. Scaling both tolerances by √(real fraction)
    # turns the RMS over all entries into the RMS over the real ones: the step-size control
    # (and the initial step) of the unpadded problem, so padded and unpadded solves agree to
    # round-off, not merely to rtol.
    scale = jnp.sqrt(fraction)
    return rtol * scale, atol * scale


def audited_state(params0):
    """The ODE state of `solve_flow`: (θ, E) with the energy integral E(t0) = 0."""
    leaf = jax.tree_util.tree_leaves(params0)[0]
    return params0, np.zeros((), jnp.result_type(leaf))  # numpy: no eager program


def flow_controller(rtol, atol, *, norm=None, jump_ts=None):
    """gflow's step-size controller: PID (error `norm` over the state), guarded against
    divergence, clipped at `jump_ts`."""
    extra = {} if norm is None else {"norm": norm}
    controller = diffrax.PIDController(rtol=rtol, atol=atol, **extra)
    controller = DivergenceGuard(controller)  # a blow-up ends the solve with a result code
    if jump_ts is not None:
        controller = diffrax.ClipStepSizeController(controller, jump_ts=jnp.asarray(jump_ts))
    return controller


def starting_point(flow: GradientFlow, start: "FlowSolution | None", t1):
    """(t0, θ0, t1) of a solve of `flow` to `t1`, from t = 0 or continued from `start`; checks the
    flow's type, that θ0 is finite and that t0 < t1 (shared by `solve_flow` and `solve_discrete`)."""
    if not isinstance(flow, GradientFlow):
        raise TypeError(message("flow", "be a gflow.GradientFlow", type(flow).__name__))
    if start is not None:
        if not isinstance(start, FlowSolution):
            raise TypeError(message("start", "be a FlowSolution from a previous solve", type(start).__name__))
        t0, params0 = start.t_final, start.params_final
    else:
        t0, params0 = 0.0, flow.params0
    return t0, check_finite("initial parameters", params0), check_time_span(t0, t1)


def solve_flow(
    flow: GradientFlow,
    t1: float | Float[Array, ""],
    *,
    start: FlowSolution | None = None,
    ts: Times | None = None,
    num_times: int = 121,
    observables: Sequence[str | Callable] | dict[str, str | Callable] = ("loss",),
    solver: diffrax.AbstractSolver | str | MatrixFreeImplicit | AutoSwitch | None = DEFAULT_SOLVER,
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
    Defaults: `solver="auto"` with a PID controller; rtol/atol 1e-8/1e-10 in float64, 1e-5/1e-7
    in float32. `solver`: "auto" (the default, `gflow.AutoSwitch()`: Tsit5 while the flow is
    non-stiff, the matrix-free implicit solver while Tsit5's step is stiffness-limited, and
    back; the stiffness test of the explicit phase costs no vector-field evaluations, and a
    solve that never switches is exactly the Tsit5 solve; `stats["segment_solvers"]`,
    `stats["switch_time"]`), "explicit" (Tsit5: short horizons and fast transients),
    "implicit" (`gflow.MatrixFreeImplicit()`: an ESDIRK method whose stage equations use
    Hessian-vector products and GMRES, never a Jacobian; for long horizons near a minimum,
    where an explicit step is capped at ≈ 3.5/λ_max(H) and the explicit step count grows
    linearly with t1), or any diffrax solver (None: the default).
    Energy audit: alongside θ the solve integrates E(t) = ∫κ‖∇L‖²_r dt (outside the step-size
    control, so step counts are those of θ alone); along an exact gradient flow
    L(t) − L(0) = −E(t). `stats["energy_residual"]` = |L(t_final) − L(0) + E| / |L(0) − L(t_final)|,
    and a concrete solve with `throw=True` warns when it exceeds 100 × rtol (a loss that is not
    the one differentiated, `stop_gradient`, data changed inside the model).
    `jump_ts`: times where the vector field is discontinuous (hinge kinks, ReLU deaths).
    `event`: training event(s) that stop the solve at their exact time (`event_time`).
    `throw=True`: a failed solve (max_steps, non-finite values) raises with the fix; with
    `throw=False` the `result` code says what happened and everything saved so far is kept.
    A diverging flow (state or vector field non-finite, or the step size collapsing below the
    float spacing of t) stops at once with `RESULTS.nonfinite` / `RESULTS.dt_min_reached`.
    Works under `jax.jit` and `jax.vmap` (over inits, data, time scales). Compile cost: a concrete
    solve is one compiled program (plus the implicit segment's, only if it switches); under
    `jit`/`vmap` `solver="auto"` is a `lax.while_loop` over a `lax.cond` of both segments, so it
    compiles the explicit *and* the implicit solver (measured on a 544-parameter net: ≈ 3× the
    first-call CPU time of `solver="explicit"`). Under `jit`/`vmap`, pass `solver="explicit"` for a
    flow known to be non-stiff over `t1` (short horizons, fast transients).

    Refused up front (`ValueError`, when the values are concrete): t1 ≤ t0 or non-finite,
    `num_times` < 2, `max_steps` < 1, `rtol`/`atol` ≤ 0 or NaN, non-finite initial parameters,
    and a non-finite initial loss or gradient (one loss-and-gradient evaluation inside the
    solve's compiled program, raised before any solve failure; skipped under jit/vmap, where a
    non-finite start shows as a diverged `result`).
    """
    t0, params0, t1 = starting_point(flow, start, t1)
    if ts is None:
        check_integer("num_times", num_times, minimum=2, why="the grid holds t0 and t1")
    check_integer("max_steps", max_steps, minimum=1)
    obs = resolve_observables(observables)
    if save_params:
        obs = {**obs, "params": _params}
    save = _SaveObservables(tuple(obs.items()))

    if solver is None:
        solver = DEFAULT_SOLVER
    rtol, atol = member_tolerances(params0, rtol, atol)
    event = _make_event(event, flow, rtol, atol)
    step_rtol, step_atol = step_tolerances(flow, rtol, atol)
    y0 = audited_state(params0)
    # The initial-loss check runs when nothing is traced (under jit/vmap a non-finite start
    # shows as a diverged `result`), inside the solve's own program.
    checks = _FlowChecks(params0, all(is_concrete(x) for x in jax.tree_util.tree_leaves((params0, flow))))
    sol, values = _integrate(
        _AuditedField(),
        y0,
        flow,
        t0,
        t1,
        ts=ts,
        save=_OnParams(save),
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
        norm=_params_norm,
        extras=checks,
    )
    params_final, _ = sol.params_final
    residual = values["energy_residual"]
    sol = FlowSolution(
        ts=sol.ts,
        observables=sol.observables,
        params_final=params_final,
        t_final=sol.t_final,
        stats={**sol.stats, "energy_residual": residual},
        result=sol.result,
        event_time=sol.event_time,
        event_mask=sol.event_mask,
    )
    if throw and is_concrete(residual) and is_concrete(sol.result) and bool(values["okay"]):
        tolerance = energy_tolerance(rtol)
        if float(residual) > tolerance:
            warnings.warn(
                ENERGY_MESSAGE.format(residual=float(residual), tolerance=tolerance, factor=ENERGY_TOLERANCE),
                RuntimeWarning,
                stacklevel=2,
            )
    return sol
