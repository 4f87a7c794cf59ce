"""One sweep member: how it is built from (key, hyperparameters), solved, and summarised.

The stored variables of a member are its observables on the save grid and the summaries
(`SUMMARIES`); failures are result codes (diffrax's `RESULTS`, or the ones below)."""

from collections.abc import Callable

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float

from .._flow import GradientFlow, solve_flow
from .._flow.observables import OBSERVABLES, resolve_observables
from .._flow.solve import energy_residual
from .._validate import message

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
            time_to_loss_below=first_crossing(self.ts, loss, self.loss_threshold),
            plateau_exit_time=jnp.where(loss[0] > final_loss, first_crossing(self.ts, loss, half), jnp.inf),
        )
        if "classification_error" in saved:
            out["time_to_all_correct"] = first_crossing(self.ts, saved["classification_error"], 0.0, interpolate=False)
        return out

    def readout(self, state, key_data, hyper):
        """`summarize` of a finished slot of the slot runner."""
        flow, finite = self.build(key_data, hyper)
        params, energy = state.y
        residual = energy_residual(flow.loss_value(flow.params0), flow.loss_value(params), energy)
        return self.summarize(flow, finite, state.saved, params, state.t, state.num_steps,
                              state.num_rejected_steps, state.result, residual)


def member_solver(make_flow, t1, ts, observables, solve_kwargs, loss_threshold, typed_keys):
    """(`solve_one(key, hyper) -> (stored variables, flow)`, the `Member`)."""
    obs = resolve_observables(observables)
    if "loss" not in obs:
        obs = {"loss": OBSERVABLES["loss"], **obs}
    clash = set(obs) & set(SUMMARIES)
    if clash:
        raise ValueError(message("observables", f"use names other than the summaries {SUMMARIES}", sorted(clash)))
    member = Member(make_flow, jnp.asarray(ts), tuple(obs.items()), loss_threshold, typed_keys)

    def solve_one(key_data, hyper):
        flow, finite = member.build(key_data, hyper)
        sol = solve_flow(flow, t1, ts=ts, observables=obs, throw=False, **solve_kwargs)
        out = member.summarize(flow, finite, sol.observables, sol.params_final, sol.t_final,
                               sol.stats["num_steps"], sol.stats["num_rejected_steps"], sol.result._value,
                               sol.stats["energy_residual"])
        return out, flow

    return solve_one, member
