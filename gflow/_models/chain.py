"""`ReLUChain`: the bias-free depth-L ReLU chain of Tachet des Combes et al. 2018 (arXiv:1809.06848)."""

from collections.abc import Sequence

import jax
from jaxtyping import Array, Float

from .._validate import check_float_array, message
from .base import AbstractModel


class ReLUChain(AbstractModel):
    """A bias-free ReLU chain f(x) = v · relu(W_{L−1} ⋯ relu(W_1 x)) on one example x ∈ R^d.

    `weights` = (W_1, …, W_{L−1}) with W_l of shape (h_l, h_{l−1}) (h_0 = d), `v` of shape
    (1, h_{L−1}); depth L = len(weights) + 1. With no hidden layer (L = 1) it is the linear
    classifier f = v·x. All arrays are trained. Used for the depth-L modes of Tachet des Combes
    et al. 2018 (see `gflow.proper_chain_init`).
    """

    weights: tuple[Float[Array, "out in"], ...] | None  # None for L = 1 (an empty tuple trips diffrax)
    v: Float[Array, "1 h"]

    def __init__(self, weights: Sequence[Array], v: Array):
        weights = tuple(check_float_array(f"weights[{l}]", w, ndim=2) for l, w in enumerate(weights))
        v = check_float_array("v", v, ndim=(1, 2))
        if v.ndim == 1:
            v = v[None, :]
        for l in range(1, len(weights)):
            if weights[l].shape[1] != weights[l - 1].shape[0]:
                raise ValueError(message(f"weights[{l}]", f"have {weights[l - 1].shape[0]} columns (the width of "
                                         f"layer {l})", f"shape {weights[l].shape}"))
        if weights and v.shape[1] != weights[-1].shape[0]:
            raise ValueError(message("v", f"have shape (1, {weights[-1].shape[0]})", f"shape {v.shape}"))
        self.weights = weights if weights else None
        self.v = v

    @property
    def depth(self) -> int:
        """L, the number of weight layers (the hidden matrices W_1 … W_{L−1} plus the readout v)."""
        return 1 if self.weights is None else len(self.weights) + 1

    @property
    def input_size(self) -> int:
        """d, the size of one input example x."""
        return self.v.shape[-1] if self.weights is None else self.weights[0].shape[-1]

    def __call__(self, x: Float[Array, " d"]) -> Float[Array, " 1"]:
        h = x
        for w in self.weights or ():
            h = jax.nn.relu(w @ h)
        return self.v @ h


