"""Training events: real-valued conditions whose zero crossing stops the solve at the exact time."""

from collections.abc import Callable

import equinox as eqx
import jax.numpy as jnp

from . import observables as obs


class TrainingEvent(eqx.Module):
    """Stops `solve_flow` when `value(t, params, flow)` crosses `threshold` in `direction`.

    `direction`: "down" (value falls below the threshold) or "up" (rises above it). The crossing
    time is found by root finding on the solver's interpolant, so `FlowSolution.event_time` is
    exact to solver tolerance.
    """

    name: str = eqx.field(static=True)
    value: Callable = eqx.field(static=True)
    threshold: float
    direction: str = eqx.field(static=True)

    def cond(self, t, params, flow):
        return self.value(t, params, flow) - self.threshold


def loss_below(epsilon: float) -> TrainingEvent:
    """Fires when L(θ) < ε."""
    return TrainingEvent("loss_below", obs.loss, epsilon, "down")


def gradient_norm_below(epsilon: float) -> TrainingEvent:
    """Fires when ‖∇L(θ)‖ < ε."""
    return TrainingEvent("gradient_norm_below", obs.gradient_norm, epsilon, "down")


def _min_margin(t, params, flow):
    margins = obs.margins(t, params, flow)
    if flow.data.sample_mask is not None:  # padding samples never hold the event back
        margins = jnp.where(flow.data.sample_mask, margins, jnp.inf)
    return jnp.min(margins)


def all_correct() -> TrainingEvent:
    """Fires at 100% training accuracy: min_μ y_μ f(x_μ) rises above 0 (binary labels)."""
    return TrainingEvent("all_correct", _min_margin, 0.0, "up")


def margins_at_least(margin: float = 1.0) -> TrainingEvent:
    """Fires when every training margin y_μ f(x_μ) is ≥ `margin` (1 by default)."""
    return TrainingEvent("margins_at_least", _min_margin, margin, "up")
