import abc
from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PyTree

from .._custom_types import Observables, Times
from .._flow.solve import FlowSolution, integrate
from .._validate import check_float_array, message


class AbstractTheory(eqx.Module):
    """A theory of a gradient flow, on the flow's clock.

    `evaluate(ts)` returns {name: array (T, …)} under the same names as the simulation's
    observables, so `compare(theory, solution)` pairs them. Concrete theories are final Modules:
    what they precompute (eigenvalues, initial mode strengths) are fields, so a theory is a
    pytree and works under `jit`/`vmap`. `from_flow(flow)` seeds one from the network at t = 0.
    """

    @abc.abstractmethod
    def evaluate(self, ts: Times) -> Observables:
        raise NotImplementedError


class AbstractReducedODE(AbstractTheory):
    """A theory given as a low-dimensional ODE dz/dt = F(t, z), solved by gflow's integrator.

    Subclasses give `initial_state()`, `vector_field(t, z, args)` and
    `observables(t, z) -> {name: value}`; `solve(t1, ...)` returns a `FlowSolution` and
    `evaluate(ts)` its observables on `ts` (which must start at the theory's t0 = 0).
    """

    @abc.abstractmethod
    def initial_state(self) -> PyTree:
        raise NotImplementedError

    @abc.abstractmethod
    def vector_field(self, t, state, args) -> PyTree:
        raise NotImplementedError

    @abc.abstractmethod
    def observables(self, t, state) -> Observables:
        raise NotImplementedError

    def _save_observables(self, t, state, args):
        # A bound method of the Module (a pytree with a static function): repeated solves of
        # same-shaped theories reuse diffrax's compiled solve instead of recompiling per call.
        return self.observables(t, state)

    def solve(self, t1, *, ts: Times | None = None, **kwargs) -> FlowSolution:
        """Integrate the reduced ODE from 0 to `t1` (kwargs as in `solve_flow`)."""
        return integrate(
            self.vector_field,
            self.initial_state(),
            None,
            0.0,
            t1,
            ts=ts,
            save=self._save_observables,
            **kwargs,
        )

    def evaluate(self, ts: Times, **kwargs) -> Observables:
        ts = jnp.asarray(ts)
        return self.solve(ts[-1], ts=ts, **kwargs).observables


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
    return {n: relative_error(solution.observables[n], predicted[n], floor, scale) for n in common}
