"""One sweep member: how it is built from (key, hyperparameters), solved, and summarised.

A member is a gradient flow (`solve_flow`) or, given an `Optimizer`, a discrete optimizer on
that flow's clock (`solve_discrete`). The stored variables of a member are its observables on
the save grid and the summaries (`SUMMARIES`); failures are result codes (diffrax's `RESULTS`,
or the ones below)."""

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float

from .._discrete import discrete_from
from .._flow import GradientFlow, solve_flow
from .._flow.observables import OBSERVABLES, resolve_observables
from .._flow.solve import energy_residual
from .._validate import message
from .identity import _canonical, _describe

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


def first_crossing(ts: Float[Array, " T"], values: Float[Array, " T"], level: float | Float[Array, ""],
                   interpolate: bool = True) -> Float[Array, ""]:
    """The first time a saved curve `values` (T,) on the grid `ts` (T,) (flow clock) is ≤
    `level`, linearly interpolated between save times (`interpolate=False`: the first save time
    at or below); `ts[0]` if it starts there, inf if it never gets there. Non-finite entries
    (after an event or a failure) never count. Jit/vmap-able; a sweep's summaries
    (time_to_loss_below, plateau_exit_time, …) are this function of its saved curves."""
    below = jnp.isfinite(values) & (values <= level)
    i = jnp.argmax(below)
    hit = jnp.any(below)
    j = jnp.maximum(i - 1, 0)
    v0, v1 = values[j], values[i]
    frac = jnp.where(v0 > v1, (v0 - level) / jnp.where(v0 > v1, v0 - v1, 1.0), 1.0)
    t = ts[j] + jnp.clip(frac, 0.0, 1.0) * (ts[i] - ts[j]) if interpolate else ts[i]
    t = jnp.where(i == 0, ts[0], t)
    return jnp.where(hit, t, jnp.inf)


class Member(eqx.Module):
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
            raise TypeError(message("make_flow(key, hyperparameters)", "return a gflow.GradientFlow",
                                    type(flow).__name__))
        leaves = jax.tree_util.tree_leaves(flow.params0)
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))
        # A non-finite init is recorded as this member's failure instead of stopping the batch.
        clean = jax.tree_util.tree_map(lambda x: jnp.where(finite, x, jnp.zeros_like(x)), flow.params0)
        return eqx.tree_at(lambda f: f.params0, flow, clean), finite

    def flow(self, key_data, hyper):
        return self.build(key_data, hyper)[0]

    def summarize(self, flow, finite, saved, params_final, t_final, num_steps, num_rejected, code, residual,
                  ts=None):
        """The stored variables of one member: its observables on `ts` and the summaries (event
        times read off `ts`: the save grid, or a discrete member's actual step times)."""
        ts = self.ts if ts is None else ts
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
            time_to_loss_below=first_crossing(ts, loss, self.loss_threshold),
            plateau_exit_time=jnp.where(loss[0] > final_loss, first_crossing(ts, loss, half), jnp.inf),
        )
        if "classification_error" in saved:
            out["time_to_all_correct"] = first_crossing(ts, saved["classification_error"], 0.0, interpolate=False)
        return out

    def readout(self, state, key_data, hyper):
        """`summarize` of a finished slot of the slot runner."""
        flow, finite = self.build(key_data, hyper)
        params, energy = state.y
        residual = energy_residual(flow.loss_value(flow.params0), flow.loss_value(params), energy)
        return self.summarize(flow, finite, state.saved, params, state.t, state.num_steps,
                              state.num_rejected_steps, state.result, residual)


def _is_transformation(x) -> bool:
    return callable(getattr(x, "init", None)) and callable(getattr(x, "update", None))


def _setting(where: str, value, grid: Mapping[str, np.ndarray], *, strict: bool, upper: float = math.inf):
    """`value`, a number or the name of a grid parameter, checked to lie in (0, upper) (`strict`)
    or [0, upper): the number itself, or every value of the named grid parameter."""
    bound = ("> 0" if strict else "≥ 0") + (f" and < {upper:g}" if upper < math.inf else "")
    if isinstance(value, str):
        if value not in grid:
            raise ValueError(message(where, "be a number or the name of a grid parameter",
                                     f"{value!r}, not among the grid's {sorted(grid)}"))
        values, where = np.asarray(grid[value], float), f"grid parameter {value!r} (the {where})"
    elif isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise TypeError(message(where, "be a number or the name of a grid parameter (str)", type(value).__name__))
    else:
        values = np.asarray([float(value)])
    bad = np.flatnonzero(~(np.isfinite(values) & ((values > 0) if strict else (values >= 0)) & (values < upper)))
    if bad.size:
        raise ValueError(message(where, f"be finite and {bound}", f"{values[bad[0]]:g}"))
    return value if isinstance(value, str) else float(value)


@dataclasses.dataclass(frozen=True)
class Optimizer:
    """How the members of a gradient-descent sweep are stepped: `solve_discrete(flow,
    optimizer, t1, learning_rate=η, momentum=β)` for each member.

    `optimizer`: an optax `GradientTransformation` (the same for every member) or a callable
    `hyper -> GradientTransformation` built from the member's (traced) hyperparameters, e.g.
    `lambda h: optax.sgd(h["learning_rate"])`. `learning_rate` η and `momentum` β set the
    clock t_k = k·η/(1−β): numbers, or names of grid parameters."""

    optimizer: Any
    learning_rate: float | str
    momentum: float | str = 0.0

    @classmethod
    def check(cls, optimizer, learning_rate, momentum, grid: Mapping[str, np.ndarray]) -> "Optimizer":
        if not (_is_transformation(optimizer) or callable(optimizer)):
            raise TypeError(message("optimizer", "be an optax GradientTransformation or a callable "
                                    "hyper -> GradientTransformation (e.g. `lambda h: optax.sgd(h['eta'])`)",
                                    type(optimizer).__name__))
        if learning_rate is None:
            if "learning_rate" not in grid:
                raise ValueError(message("learning_rate", "be given with `optimizer` (the clock t = k·η): a number "
                                         "or the name of a grid parameter", "None"))
            learning_rate = "learning_rate"
        learning_rate = _setting("learning_rate", learning_rate, grid, strict=True)
        momentum = _setting("momentum", momentum, grid, strict=False, upper=1.0)
        return cls(optimizer, learning_rate, momentum)

    def resolve(self, hyper):
        """(optax transformation, η, β) of one member."""
        opt = self.optimizer if _is_transformation(self.optimizer) else self.optimizer(hyper)
        if not _is_transformation(opt):
            raise TypeError(message("optimizer(hyperparameters)", "return an optax GradientTransformation",
                                    type(opt).__name__))
        pick = lambda v: hyper[v] if isinstance(v, str) else v  # noqa: E731
        return opt, pick(self.learning_rate), pick(self.momentum)

    def describe(self) -> dict:
        """The JSON-able part of the sweep's identity (the optimizer's arithmetic is in the
        fingerprint of the traced member; this names it and the clock)."""
        opt = self.optimizer
        name = _canonical(repr(opt)) if _is_transformation(opt) else _describe(opt)
        setting = lambda v: {"grid": v} if isinstance(v, str) else v  # noqa: E731
        return {"optimizer": name, "learning_rate": setting(self.learning_rate), "momentum": setting(self.momentum)}


def member_solver(make_flow, t1, ts, observables, solve_kwargs, loss_threshold, typed_keys,
                  method: Optimizer | None = None):
    """(`solve_one(key, hyper) -> (stored variables, flow)`, the `Member`): a gradient-flow
    member (`solve_flow` with `solve_kwargs`) or, with `method`, a discrete one (`solve_discrete`)."""
    obs = resolve_observables(observables)
    if "loss" not in obs:
        obs = {"loss": OBSERVABLES["loss"], **obs}
    clash = set(obs) & set(SUMMARIES)
    if clash:
        raise ValueError(message("observables", f"use names other than the summaries {SUMMARIES}", sorted(clash)))
    member = Member(make_flow, jnp.asarray(ts), tuple(obs.items()), loss_threshold, typed_keys)

    if method is not None:
        def solve_discrete_one(key_data, hyper):
            flow, finite = member.build(key_data, hyper)
            opt, eta, beta = method.resolve(hyper)
            # `solve_discrete` from its checked start: θ0 is finite (`build`), t0 = 0 < t1
            sol = discrete_from(flow, opt, 0.0, flow.params0, t1, learning_rate=eta, momentum=beta, ts=ts,
                                observables=obs, throw=False)
            # No energy audit for a discrete method (NaN), no rejected steps; the event times are
            # read off the member's own step times.
            out = member.summarize(flow, finite, sol.observables, sol.params_final, sol.t_final,
                                   sol.stats["num_steps"], jnp.zeros((), jnp.int32), sol.result._value,
                                   jnp.asarray(jnp.nan, sol.t_final.dtype), ts=sol.ts)
            return out, flow

        return solve_discrete_one, member

    def solve_one(key_data, hyper):
        flow, finite = member.build(key_data, hyper)
        sol = solve_flow(flow, t1, ts=ts, observables=obs, throw=False, **solve_kwargs)
        out = member.summarize(flow, finite, sol.observables, sol.params_final, sol.t_final,
                               sol.stats["num_steps"], sol.stats["num_rejected_steps"], sol.result._value,
                               sol.stats["energy_residual"])
        return out, flow

    return solve_one, member
