"""`DeepLinear`: the deep linear network f(x) = W_D ⋯ W_1 x of Saxe, McClelland & Ganguli 2013."""

import math
from collections.abc import Sequence

import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from .._validate import check_float_array, message
from .base import AbstractModel


def _random_orthonormal_columns(key, n: int, r: int) -> Float[Array, "n r"]:
    q, _ = jnp.linalg.qr(jr.normal(key, (n, r)))
    return q


class DeepLinear(AbstractModel):
    """Deep linear network f(x) = W_D ⋯ W_2 W_1 x, with D = len(widths) − 1 ≥ 2 weight matrices.

    `weights[l]` has shape (widths[l+1], widths[l]). The random init is W_l ~ N(0, s²/widths[l])
    entrywise, s = `init_scale`. For Saxe's exact mode dynamics use `DeepLinear.aligned`.
    """

    weights: tuple[Float[Array, "out in"], ...]

    def __init__(
        self,
        widths: Sequence[int],
        *,
        init_scale: float | Float[Array, ""] = 1.0,
        key: PRNGKeyArray | None = None,
        weights: Sequence[Array] | None = None,
    ):
        widths = tuple(int(w) for w in widths)
        if len(widths) < 3 or any(w < 1 for w in widths):
            raise ValueError(
                message("widths", "list at least 3 positive layer widths (input, hidden…, output)", widths)
            )
        if weights is None:
            if key is None:
                raise ValueError(message("key", "be a PRNG key when `weights` is not given", None))
            keys = jr.split(key, len(widths) - 1)
            weights = tuple(
                init_scale * jr.normal(k, (n_out, n_in)) / math.sqrt(n_in)
                for k, n_in, n_out in zip(keys, widths[:-1], widths[1:])
            )
        else:
            weights = tuple(
                check_float_array(f"weights[{l}]", w, ndim=2) for l, w in enumerate(weights)
            )
            shapes = tuple(w.shape for w in weights)
            want = tuple((o, i) for i, o in zip(widths[:-1], widths[1:]))
            if shapes != want:
                raise ValueError(message("weights", f"have shapes {want} for widths {widths}", shapes))
        self.weights = tuple(weights)

    @classmethod
    def aligned(
        cls,
        input_modes: Float[Array, "d r"],
        output_modes: Float[Array, "k r"],
        layer_strengths: Float[Array, "D r"],
        hidden_widths: Sequence[int],
        *,
        key: PRNGKeyArray,
    ) -> "DeepLinear":
        """Saxe's aligned init: W_l = R_{l+1} diag(a_l) R_lᵀ with R_1 = V_r, R_{D+1} = U_r.

        `layer_strengths[l, α]` is a_{l,α}(0); hidden R_l are random orthonormal columns
        (each hidden width must be ≥ r). Then U_rᵀ W(t) V_r = diag(Π_l a_{l,α}(t)) for all t.
        """
        a = check_float_array("layer_strengths", layer_strengths, ndim=2)
        depth, r = a.shape
        hidden_widths = tuple(int(h) for h in hidden_widths)
        if len(hidden_widths) != depth - 1:
            raise ValueError(
                message("hidden_widths", f"list D − 1 = {depth - 1} widths (one per hidden layer)", hidden_widths)
            )
        if input_modes.shape[1] != r or output_modes.shape[1] != r:
            raise ValueError(
                message("input_modes/output_modes", f"have r = {r} columns",
                        f"{input_modes.shape} and {output_modes.shape}")
            )
        if any(h < r for h in hidden_widths):
            raise ValueError(message("hidden_widths", f"be ≥ r = {r} (one hidden direction per mode)", hidden_widths))
        keys = jr.split(key, max(depth - 1, 1))
        bases = [input_modes] + [
            _random_orthonormal_columns(k, h, r) for k, h in zip(keys, hidden_widths)
        ] + [output_modes]
        weights = tuple(bases[l + 1] @ jnp.diag(a[l]) @ bases[l].T for l in range(depth))
        widths = (input_modes.shape[0], *hidden_widths, output_modes.shape[0])
        return cls(widths, weights=weights)

    @property
    def depth(self) -> int:
        """D, the number of weight matrices."""
        return len(self.weights)

    @property
    def input_size(self) -> int:
        """d, the size of one input example x (the columns of W_1)."""
        return self.weights[0].shape[-1]

    def end_to_end(self) -> Float[Array, "k d"]:
        """The product W = W_D ⋯ W_1."""
        w = self.weights[0]
        for layer in self.weights[1:]:
            w = layer @ w
        return w

    def __call__(self, x: Float[Array, " d"]) -> Float[Array, " k"]:
        for w in self.weights:
            x = w @ x
        return x
