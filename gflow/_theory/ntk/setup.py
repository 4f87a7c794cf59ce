"""The NTK figure's problem: a tanh network in NTK scaling on a small sine regression.

??? cite "Reference"
    Lee et al., "Wide Neural Networks of Any Depth Evolve as Linear Models Under Gradient
    Descent", NeurIPS 2019 (arXiv:1902.06720), Sec. 2 (NTK parameterization).
"""

import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float

from ..._data.base import Dataset
from ..._flow.problem import GradientFlow
from ..._losses import squared_error
from ..._models.two_layer import TwoLayer


def ntk_figure_problem(width: int = 512, n: int = 8) -> tuple[GradientFlow, Float[Array, "5 3"]]:
    """(flow, x_test): f(x) = (1/√m) Σ v_i tanh(w_i·x/√d) of width m = `width` in NTK scaling,
    fitted under `squared_error` to y = sin(x·w*) on n Gaussian inputs in d = 3
    (w* = (1, −0.5, 0.3)); x_test (5, 3): five points on the line through ±2 w*. Flow clock κ = 1."""
    kx, km = jr.split(jr.PRNGKey(3))
    direction = jnp.array([1.0, -0.5, 0.3])
    x = jr.normal(kx, (n, 3))
    y = jnp.sin(x @ direction)[:, None]
    x_test = jnp.linspace(-2.0, 2.0, 5)[:, None] * direction[None, :]
    flow = GradientFlow(TwoLayer(3, width, "tanh", scaling="ntk", key=km), squared_error, Dataset(x, y))
    return flow, x_test
