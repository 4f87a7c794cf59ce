"""`AbstractModel`, the interface every gflow model follows, and the registry of activations."""

import abc

import equinox as eqx
import jax
import jax.nn as jnn
import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree

from .._validate import message


class AbstractModel(eqx.Module):
    """A network acting on ONE example: `model(x) -> f(x)` with x of shape (d,), f of shape (k,).

    Its inexact-array fields are the parameters. `trainable()` returns the `eqx.partition` filter
    spec that marks which of them the flow moves (the rest stay frozen); by default all of them.
    """

    @abc.abstractmethod
    def __call__(self, x: Float[Array, " d"]) -> Float[Array, " k"]:
        raise NotImplementedError

    def trainable(self) -> PyTree[bool]:
        """Filter spec for `eqx.partition`: True on every trainable array."""
        return jax.tree_util.tree_map(eqx.is_inexact_array, self)

    def active_fraction(self) -> Float[Array, ""] | None:
        """The fraction of trainable entries that are real rather than padding (padding sits still
        at zero); None when nothing is padded. `solve_flow` uses it to keep the adaptive step
        control that of the unpadded problem."""
        return None

    def unpadded(self) -> "AbstractModel":
        """The same network without padding (itself when nothing is padded)."""
        return self

    @property
    def input_size(self) -> int | None:
        """d, the size of one input example x (None if the model does not say)."""
        return None


def identity(x):
    """The linear activation σ(x) = x (registered as "linear" and "identity")."""
    return x


def _erf(x):
    return jax.scipy.special.erf(x / jnp.sqrt(2.0))


#: Activations by name (used by configs and the CLI; never import-by-string of user text).
ACTIVATIONS = {
    "relu": jnn.relu,
    "tanh": jnp.tanh,
    "sigmoid": jnn.sigmoid,
    "linear": identity,
    "identity": identity,
    "erf": _erf,
    "gelu": jnn.gelu,
    "softplus": jnn.softplus,
}


def resolve_activation(activation):
    """A callable activation from a callable or a registered name."""
    if callable(activation):
        return activation
    if isinstance(activation, str) and activation in ACTIVATIONS:
        return ACTIVATIONS[activation]
    raise ValueError(
        message("activation", f"be a callable or one of {tuple(ACTIVATIONS)}", repr(activation))
    )
