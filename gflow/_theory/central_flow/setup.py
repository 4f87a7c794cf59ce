"""A small network that reaches the edge of stability quickly under gradient descent, for the
central-flow tests, figures and notebook."""

import jax.numpy as jnp
import jax.random as jr

from ..._data.base import Dataset
from ..._flow.problem import GradientFlow
from ..._losses import squared_error
from ..._models.two_layer import TwoLayer


def edge_of_stability_problem(d: int = 8, width: int = 12, n: int = 48, *, seed: int = 2,
                              init_scale: float = 0.7) -> GradientFlow:
    """Squared-error tanh net f(x) = Σ_i a_i tanh(w_i·x) (standard scaling), d = 8, width 12
    (P = 108 parameters), n = 48 Gaussian inputs, target y = sin(2 x·c) with c = linspace(1, −1, d).

    With learning rate η = 1/S(θ0) (`float(1 / sharpness(0, flow.params0, flow))`, halfway to the
    edge at the start) gradient descent sharpens progressively and crosses the edge η S = 2 at
    k ≈ 70; in float64 its oscillation needs time to grow, so it overshoots (η S ≈ 3.3) until a
    catapult at k ≈ 140, relaxes through a few smaller cycles, and from k ≈ 700 oscillates at the
    edge with η S ∈ [2.002, 2.005] while its loss keeps decreasing: the regime the central flow
    describes, where gradient flow (which keeps sharpening to η S ≈ 4) is off by two orders of
    magnitude in the loss."""
    kx, km = jr.split(jr.PRNGKey(seed))
    x = jr.normal(kx, (n, d))
    y = jnp.sin(2 * x @ jnp.linspace(1.0, -1.0, d))[:, None]
    model = TwoLayer(d, width, "tanh", init_scale=init_scale, key=km)
    return GradientFlow(model, squared_error, Dataset(x, y))
