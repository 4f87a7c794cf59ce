"""Stop a diverging flow at once with a named result instead of burning `max_steps`.

A gradient flow that blows up (an unbounded loss, a negative time scale, an overflowing
initialisation) makes the adaptive controller reject step after step while the step size shrinks
towards nothing; diffrax would carry on until `max_steps`. `DivergenceGuard` wraps the step-size
controller and ends the solve with a diffrax `RESULTS` code as soon as

- the proposed step size is non-finite, or
- a step is rejected and the next step proposed is below 10 spacings of floating-point numbers
  at the current time (no step can make progress; scipy's `solve_ivp` uses the same test).

The code is `RESULTS.nonfinite` when the step size or the error estimate is non-finite (a NaN
vector field, a state that overflowed) and `RESULTS.dt_min_reached` when the step size
collapsed with finite values (a finite-time blow-up).

Both are per-member result codes (under `vmap` each member stops on its own, with
`throw=False` the code is kept), and the test is a few scalar operations per step (nothing
the size of the state).
"""

import diffrax
import jax
import jax.numpy as jnp

from .controllers import AbstractWrappedController

DIVERGED_MESSAGE = (
    "The gradient flow diverged: its state or vector field became non-finite, or the step size "
    "collapsed below the floating-point spacing of t (the parameters blow up in finite time, "
    "or the flow is too stiff for any explicit step). Check that the loss is bounded below, "
    "that `time_scale` and `rates` are finite and positive, and lower `init_scale`; for a stiff "
    "flow pass an implicit solver. Use `throw=False` to keep the trajectory up to `t_final`."
)

#: Result codes that mean "diverged" (see the module docstring).
DIVERGED_CODES = (diffrax.RESULTS.nonfinite, diffrax.RESULTS.dt_min_reached)


def diverged(result) -> jax.Array:
    """Whether a `RESULTS` value says the flow diverged (works on batched results)."""
    return (result == diffrax.RESULTS.nonfinite) | (result == diffrax.RESULTS.dt_min_reached)


class DivergenceGuard(AbstractWrappedController):
    """Wraps an adaptive controller (the PID); see the module docstring for when it stops."""

    inner: diffrax.AbstractAdaptiveStepSizeController

    def init(self, terms, t0, t1, y0, dt0, args, func, error_order):
        tnext, inner = self.inner.init(terms, t0, t1, y0, dt0, args, func, error_order)
        dtype = jnp.result_type(tnext)
        # A floor for t ≈ 0 (where the spacing of floats is denormal): eps² of the time span.
        eps = jnp.finfo(dtype).eps
        floor = (eps * eps * jnp.abs(jnp.asarray(t1, dtype) - jnp.asarray(t0, dtype))).astype(dtype)
        return tnext, (inner, floor)

    def adapt_step_size(self, t0, t1, y0, y1_candidate, args, y_error, error_order, controller_state):
        inner, floor = controller_state
        keep, next_t0, next_t1, made_jump, inner, result = self.inner.adapt_step_size(
            t0, t1, y0, y1_candidate, args, y_error, error_order, inner
        )
        dt = next_t1 - next_t0
        t = jnp.abs(next_t0)
        spacing = jnp.nextafter(t, jnp.asarray(jnp.inf, t.dtype)) - t
        collapsed = ~keep & (dt < 10 * jnp.maximum(spacing, floor))
        nonfinite = ~jnp.isfinite(dt)
        # One sum over the error estimate (no larger than the controller's own error norm).
        error_finite = jnp.isfinite(sum(jnp.sum(e) for e in jax.tree_util.tree_leaves(y_error)))
        code = diffrax.RESULTS.where(nonfinite | ~error_finite, diffrax.RESULTS.nonfinite,
                                     diffrax.RESULTS.dt_min_reached)
        stop = (nonfinite | collapsed) & diffrax.is_successful(result)
        result = diffrax.RESULTS.where(stop, code, result)
        # Keep the times finite so nothing downstream sees NaN times (the loop stops here anyway).
        next_t1 = jnp.where(jnp.isfinite(next_t1), next_t1, next_t0)
        return keep, next_t0, next_t1, made_jump, (inner, floor), result
