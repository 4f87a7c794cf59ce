"""Training events: real-valued conditions whose zero crossing stops the solve at the exact time."""

from collections.abc import Callable

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from . import observables as obs


class TrainingEvent(eqx.Module):
    """Stops `solve_flow` when `value(t, params, flow)` crosses `threshold` in `direction`.

    `direction`: "down" (value falls below the threshold) or "up" (rises above it). The crossing
    time is found by root finding on the solver's interpolant, so `FlowSolution.event_time` is
    exact to solver tolerance.
    """

    name: str = eqx.field(static=True)
    value: Callable = eqx.field(static=True)
    threshold: float | Float[Array, ""]
    direction: str = eqx.field(static=True)

    def cond(self, t, params, flow):
        """value − threshold: the function whose zero crossing is the event."""
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


def _stability_sharpness(t, params, flow):
    """κ·λ_max(∇²L(θ)): the top eigenvalue of the Jacobian of minus the flow's vector field
    (Lanczos on Hessian-vector products, `gflow._flow.sharpness`; flows with `rates` refused)."""
    from .sharpness import top_hessian_eigenpair

    eigenvalue, _ = top_hessian_eigenpair(flow, params)
    return flow.time_scale * eigenvalue


def edge_of_stability(learning_rate, *, momentum=0.0) -> TrainingEvent:
    """Fires when η·κλ_max(H(θ)) rises above 2(1 + β): the edge of stability, past which the
    flow (and the modified flow) no longer describes gradient descent (β = 0) or heavy ball.

    `learning_rate` η: the optimizer's step (a scalar, may be traced); `momentum` β in [0, 1).
    λ_max is the top eigenvalue of the Hessian of L (Hessian-vector products only), κ the flow's
    `time_scale`; the threshold is λ_max = 2(1 + β)/(ηκ), the linear stability limit of GD
    (β = 0, 2/η) and heavy ball on the local quadratic (characteristic polynomial
    z² − (1 + β − ηκλ)z + β). For `solve_flow` it fires at the crossing (root-found in t);
    `solve_discrete` checks it at every step and stops at the first step past the limit
    (including step 0). Past the limit GD may still self-stabilise rather than diverge (Cohen
    et al. 2021, "Gradient Descent on Neural Networks Typically Occurs at the Edge of
    Stability", arXiv:2103.00065); the event says that the flow stops describing it. Flows with
    per-parameter `rates` are refused.
    """
    from .modified import check_momentum

    check_momentum(momentum)
    threshold = 2 * (1 + momentum) / learning_rate
    if isinstance(threshold, float):
        return TrainingEvent("edge_of_stability", _stability_sharpness, threshold, "up")
    # an array threshold (a traced η under vmap): set after __init__, whose annotation is `float`
    event = TrainingEvent("edge_of_stability", _stability_sharpness, 0.0, "up")
    return eqx.tree_at(lambda e: e.threshold, event, threshold)
