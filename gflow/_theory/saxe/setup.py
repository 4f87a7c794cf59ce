"""The deep linear problem of Saxe et al.'s figures: whitened regression and an aligned init.

??? cite "Reference"
    Saxe, McClelland & Ganguli, "Exact solutions to the nonlinear dynamics of learning in deep
    linear neural networks", ICLR 2014 (arXiv:1312.6120), Sec. 2 and Fig. 3 (mode strengths
    learned in order of their singular values from a small init).
"""

import jax.numpy as jnp
import jax.random as jr
from jaxtyping import PRNGKeyArray

from ..._data.generators import whitened_regression
from ..._flow.problem import GradientFlow
from ..._losses import squared_error
from ..._models.linear import DeepLinear
from ..._validate import message


def saxe_problem(depth: int = 2, key: PRNGKeyArray | None = None, initial_strength: float = 1e-3) -> GradientFlow:
    """A whitened 8 → 6 → ⋯ → 6 → 4 regression (P = 64) with s = (4, 2, 1, 0.5) and a small
    balanced aligned init u_α(0) = `initial_strength` (D = `depth` weight matrices, hidden
    width 6; `key` draws the data, the hidden bases are fixed). Its `DeepLinearModes` is
    exact; t on the flow's clock (κ = 1)."""
    if not isinstance(depth, int) or depth < 2:
        raise ValueError(message("depth", "be an integer ≥ 2 (the number of weight matrices)", depth))
    key = jr.PRNGKey(0) if key is None else key
    s = jnp.array([4.0, 2.0, 1.0, 0.5])
    data = whitened_regression(s, 8, 4, 64, key=key)
    a = jnp.full((depth, 4), initial_strength ** (1.0 / depth))
    model = DeepLinear.aligned(data.modes.V, data.modes.U, a, [6] * (depth - 1), key=jr.PRNGKey(1))
    return GradientFlow(model, squared_error, data)
