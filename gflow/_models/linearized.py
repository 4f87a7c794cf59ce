"""`LinearizedModel`: the first-order Taylor (lazy, NTK) model of a network at its init."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree

from .base import AbstractModel


class LinearizedModel(AbstractModel):
    """The first-order Taylor model of `model` at its current parameters θ0:
    f_lin(x; θ) = f(x; θ0) + J(x)(θ − θ0), with θ − θ0 = `delta` (starts at 0).

    Its gradient flow under MSE is solved exactly by `gflow.ntk.LinearizedMSE` (Jacot, Gabriel &
    Hongler 2018, arXiv:1806.07572; Lee et al. 2019, arXiv:1902.06720). Only `delta` is trained;
    the base model is held fixed (`stop_gradient`).
    """

    delta: PyTree
    base: AbstractModel

    def __init__(self, model: AbstractModel):
        params, _ = eqx.partition(model, model.trainable())
        self.delta = jax.tree_util.tree_map(jnp.zeros_like, params)
        self.base = jax.tree_util.tree_map(jax.lax.stop_gradient, model)

    def trainable(self):
        """Filter spec for `eqx.partition`: True on `delta` only (the base network is frozen)."""
        spec = jax.tree_util.tree_map(lambda _: False, self)
        return eqx.tree_at(lambda m: m.delta, spec, jax.tree_util.tree_map(lambda _: True, self.delta))

    @property
    def input_size(self) -> int | None:
        """d, the input size of the base model."""
        return self.base.input_size

    def __call__(self, x: Float[Array, " d"]) -> Float[Array, " k"]:
        params, static = eqx.partition(self.base, self.base.trainable())
        f = lambda p: eqx.combine(p, static)(x)
        out, tangent = jax.jvp(f, (params,), (self.delta,))
        return out + tangent
