"""`MLP`: a fully connected network on one example."""

import math
from collections.abc import Callable, Sequence

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from .._validate import message
from .base import AbstractModel, resolve_activation


class MLP(AbstractModel):
    """Fully connected network f(x) = W_D σ(⋯ σ(W_1 x + b_1) ⋯) + b_D on one example.

    `widths` = (d, hidden…, k). Init: W_l ~ N(0, s²/fan_in), biases 0 (s = `init_scale`).
    """

    weights: tuple[Float[Array, "out in"], ...]
    biases: tuple[Float[Array, " out"], ...] | None
    activation: Callable = eqx.field(static=True)

    def __init__(
        self,
        widths: Sequence[int],
        activation: str | Callable = "tanh",
        *,
        bias: bool = True,
        init_scale: float | Float[Array, ""] = 1.0,
        key: PRNGKeyArray,
    ):
        widths = tuple(int(w) for w in widths)
        if len(widths) < 2 or any(w < 1 for w in widths):
            raise ValueError(message("widths", "list at least 2 positive widths (input, …, output)", widths))
        keys = jr.split(key, len(widths) - 1)
        self.weights = tuple(
            init_scale * jr.normal(k, (o, i)) / math.sqrt(i)
            for k, i, o in zip(keys, widths[:-1], widths[1:])
        )
        self.biases = tuple(jnp.zeros((o,)) for o in widths[1:]) if bias else None
        self.activation = resolve_activation(activation)

    @property
    def input_size(self) -> int:
        """d, the size of one input example x (the columns of the first weight matrix)."""
        return self.weights[0].shape[-1]

    def __call__(self, x: Float[Array, " d"]) -> Float[Array, " k"]:
        n = len(self.weights)
        for l, w in enumerate(self.weights):
            x = w @ x
            if self.biases is not None:
                x = x + self.biases[l]
            if l < n - 1:
                x = self.activation(x)
        return x
