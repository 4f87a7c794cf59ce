import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree

from .base import AbstractModel


class LinearizedModel(AbstractModel):
    """The first-order Taylor model of `model` at its current parameters θ0:
    f_lin(x; θ) = f(x; θ0) + J(x)(θ − θ0), with θ − θ0 = `delta` (starts at 0).

    Its gradient flow under MSE is solved exactly by `LinearizedMSE` (classic.md §B).
    """

    delta: PyTree
    base: AbstractModel

    def __init__(self, model: AbstractModel):
        params, _ = eqx.partition(model, model.trainable())
        self.delta = jax.tree_util.tree_map(jnp.zeros_like, params)
        self.base = jax.tree_util.tree_map(jax.lax.stop_gradient, model)

    def trainable(self):
        spec = jax.tree_util.tree_map(lambda _: False, self)
        return eqx.tree_at(lambda m: m.delta, spec, jax.tree_util.tree_map(lambda _: True, self.delta))

    @property
    def input_size(self) -> int | None:
        return self.base.input_size

    def __call__(self, x: Float[Array, " d"]) -> Float[Array, " k"]:
        params, static = eqx.partition(self.base, self.base.trainable())
        f = lambda p: eqx.combine(p, static)(x)
        out, tangent = jax.jvp(f, (params,), (self.delta,))
        return out + tangent
