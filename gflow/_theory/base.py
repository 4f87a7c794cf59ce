import abc
from collections.abc import Callable, Sequence

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree

from .._custom_types import Observables, Times
from .._flow.solve import FlowSolution, integrate
from .._validate import check_float_array, message


class AbstractTheory(eqx.Module):
    """A theory of a gradient flow, evaluated on the flow's clock.

    Every theory has the same shape:

    - `from_flow(flow, **options)` (classmethod) seeds it from the simulated network at t = 0,
      refusing by name a flow outside its regime (`gflow._theory._regime.check_flow`).
    - `time_scale`: the factor that turns the flow's time t into the theory's own time
      τ = time_scale · t (written once here: subclasses never rescale `ts` themselves).
    - `observables` (class attribute): the simulation observables that pair with the
      prediction, as names or a {name: callable (t, params, flow)} dict, so that
      `compare(Theory.from_flow(flow), solve_flow(flow, t1, observables=Theory.observables))`
      works as is.
    - `observables_at(tau, **solver_options)` (abstract): the predicted observables at theory
      times τ, {name: array (T, …)}.
    - `evaluate(ts, **solver_options)`: the prediction at flow times `ts` (T,), compiled once
      per shape (a theory is a pytree, so same-shaped theories reuse the compiled evaluation,
      and `jit`/`vmap` work).

    Concrete theories are final Modules; what they precompute (eigenvalues, initial mode
    strengths) are fields.
    """

    time_scale: eqx.AbstractVar[Float[Array, ""] | float]
    observables: eqx.AbstractClassVar[tuple[str, ...] | dict[str, Callable]]

    @classmethod
    @abc.abstractmethod
    def from_flow(cls, flow, **options) -> "AbstractTheory":
        """Seed the theory from `flow` (a `GradientFlow`) at t = 0."""
        raise NotImplementedError

    @abc.abstractmethod
    def observables_at(self, tau: Times, **solver_options) -> Observables:
        """Predicted observables at theory times `tau` (T,) = time_scale · t."""
        raise NotImplementedError

    def evaluate(self, ts: Times, **solver_options) -> Observables:
        """Predicted observables {name: (T, …)} at flow times `ts` (T,), the flow's clock."""
        ts = check_float_array("ts", ts, ndim=1)
        return _evaluate(self, ts, solver_options)


@eqx.filter_jit
def _evaluate(theory: AbstractTheory, ts, solver_options) -> Observables:
    # One compiled evaluation per (theory structure, shapes, static options).
    tau = jnp.asarray(theory.time_scale, ts.dtype) * ts
    return theory.observables_at(tau, **solver_options)


class AbstractReducedODE(AbstractTheory):
    """A theory given as a low-dimensional ODE dz/dτ = F(τ, z) on the theory's own clock τ,
    solved by gflow's integrator.

    Subclasses give `initial_state()`, `vector_field(tau, z, args)` and
    `readout(tau, z) -> {name: value}`; `solve(t1, ts=…)` integrates from t = 0 to `t1` (flow
    clock) and returns a `FlowSolution` whose `ts` are on the flow's clock; `evaluate(ts)` gives
    the readout on `ts` (which must start at t = 0).
    """

    @abc.abstractmethod
    def initial_state(self) -> PyTree:
        """The reduced state z at τ = 0 (a pytree of arrays)."""
        raise NotImplementedError

    @abc.abstractmethod
    def vector_field(self, tau, state, args) -> PyTree:
        """dz/dτ at theory time `tau` (same structure as `state`)."""
        raise NotImplementedError

    @abc.abstractmethod
    def readout(self, tau, state) -> Observables:
        """The predicted observables {name: value} of the reduced state at theory time `tau`."""
        raise NotImplementedError

    def _save_readout(self, tau, state, args):
        # A bound method of the Module (a pytree with a static function): repeated solves of
        # same-shaped theories reuse diffrax's compiled solve instead of recompiling per call.
        return self.readout(tau, state)

    def solve_on_clock(self, tau1, *, taus: Times | None = None, **kwargs) -> FlowSolution:
        """Integrate the reduced ODE from τ = 0 to `tau1` (theory clock; kwargs as in
        `solve_flow`)."""
        return integrate(self.vector_field, self.initial_state(), None, 0.0, tau1, ts=taus,
                         save=self._save_readout, **kwargs)

    def solve(self, t1, *, ts: Times | None = None, **kwargs) -> FlowSolution:
        """Integrate from t = 0 to `t1` on the flow's clock; the solution's `ts` are flow times."""
        kappa = jnp.asarray(self.time_scale)
        taus = None if ts is None else kappa * jnp.asarray(ts)
        sol = self.solve_on_clock(kappa * t1, taus=taus, **kwargs)
        return eqx.tree_at(lambda s: (s.ts, s.t_final), sol, (sol.ts / kappa, sol.t_final / kappa))

    def observables_at(self, tau: Times, **solver_options) -> Observables:
        return self.solve_on_clock(tau[-1], taus=tau, **solver_options).observables


SCALES = ("pointwise", "curve")


def relative_error(
    simulated: Float[Array, "T ..."], predicted: Float[Array, "T ..."], floor: float = 1e-3,
    scale: str = "pointwise",
) -> Float[Array, ""]:
    """The largest error of `simulated` against `predicted`, relative to a scale of the theory.

    - `scale="pointwise"` (default): max |sim − th| / max(|th|, floor · max|th|) over all
      entries: the error relative to each value, for quantities that keep their sign and decay
      (losses, mode strengths); the floor keeps entries that go to 0 from dividing by 0.
    - `scale="curve"`: max |sim − th| / max|th|: the error relative to the scale of the whole
      curve, for quantities that cross zero (network outputs), where a pointwise ratio is
      large beside a perfect overlay.
    Non-finite sim entries (e.g. after an event) are skipped."""
    if scale not in SCALES:
        raise ValueError(message("scale", f"be one of {SCALES}", repr(scale)))
    simulated = jnp.asarray(simulated)
    predicted = jnp.broadcast_to(jnp.asarray(predicted), simulated.shape)
    if scale == "curve":
        scale = jnp.max(jnp.abs(predicted))
    else:
        scale = jnp.maximum(jnp.abs(predicted), floor * jnp.max(jnp.abs(predicted)))
    scale = jnp.where(scale > 0, scale, 1.0)
    err = jnp.abs(simulated - predicted) / scale
    return jnp.max(jnp.where(jnp.isfinite(simulated), err, 0.0))


def compare(
    theory: AbstractTheory,
    solution: FlowSolution,
    names: Sequence[str] | None = None,
    *,
    floor: float = 1e-3,
    scale: str = "pointwise",
) -> dict[str, Float[Array, ""]]:
    """Max relative error of the theory against the simulation on the solution's time grid.

    For every observable both provide (or `names`), over all times and entries:
    - `scale="pointwise"` (default): max |sim − th| / max(|th|, floor·max|th|), the error
      relative to each predicted value (the floor keeps observables that go to 0 from dividing
      by 0). Right for losses and mode strengths; misleading for outputs that cross zero, where
      a value near 0 makes the ratio large however good the overlay.
    - `scale="curve"`: max |sim − th| / max|th|, the error relative to the observable's scale
      over the whole curve (use it for network outputs).
    See `relative_error`.
    """
    predicted = theory.evaluate(solution.ts)
    common = [n for n in solution.observables if n in predicted] if names is None else list(names)
    if not common:
        raise ValueError(
            message("theory/solution", "share at least one observable name",
                    f"theory {sorted(predicted)} and solution {sorted(solution.observables)}")
        )
    missing = [n for n in common if n not in predicted or n not in solution.observables]
    if missing:
        raise ValueError(message("names", "name observables both the theory and the solution have", missing))
    simulated = {n: solution.observables[n] for n in common}
    return _relative_errors(simulated, {n: predicted[n] for n in common}, floor, scale)


@eqx.filter_jit
def _relative_errors(simulated, predicted, floor, scale):
    # One compile per (names, shapes): repeated compares of same-shaped problems never re-trace.
    return {n: relative_error(simulated[n], predicted[n], floor, scale) for n in simulated}
