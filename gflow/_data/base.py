import abc
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._validate import check_finite, check_float_array, message


class InputOutputModes(eqx.Module):
    """The data's input–output modes: Syx = U diag(s) Vᵀ and Sxx v_α = λ_α v_α.

    `U` (k, r), `s` (r,), `V` (d, r), `lam` (r,): the r modes a deep linear network can learn.
    """

    U: Float[Array, "k r"]
    s: Float[Array, " r"]
    V: Float[Array, "d r"]
    lam: Float[Array, " r"]


class AbstractDataset(eqx.Module):
    """Where the loss is averaged: a finite sample or a population (infinite data).

    `mean_loss(model, loss)` returns L = E_μ ℓ(f(x_μ), y_μ), the quantity whose gradient flow gflow
    integrates.
    """

    @abc.abstractmethod
    def mean_loss(self, model: Callable, loss: Callable) -> Float[Array, ""]:
        raise NotImplementedError


class Dataset(AbstractDataset):
    """A finite training set: inputs `x` (n, d), targets `y` (n, k).

    A 1-D `y` of shape (n,) is read as (n, 1) (binary labels ±1, scalar regression targets).
    `modes` optionally records the input–output SVD the data was built with (so that mode
    strengths use that basis even where singular values repeat or vanish).
    """

    x: Float[Array, "n d"]
    y: Float[Array, "n k"]
    modes: InputOutputModes | None = None

    def __init__(self, x, y, modes: InputOutputModes | None = None):
        x = check_float_array("x", x, ndim=2)
        y = check_float_array("y", y, ndim=(1, 2))
        if y.ndim == 1:
            y = y[:, None]
        if x.shape[0] != y.shape[0]:
            raise ValueError(
                message("y", f"have one row per row of `x` (n = {x.shape[0]})",
                        f"x of shape {tuple(x.shape)} and y of shape {tuple(y.shape)}")
            )
        if x.dtype != y.dtype:
            raise TypeError(message("y", f"have the dtype of `x` ({x.dtype})", f"dtype {y.dtype}"))
        self.x = check_finite("x", x)
        self.y = check_finite("y", y)
        self.modes = modes

    @property
    def n(self) -> int:
        return self.x.shape[-2]

    @property
    def d(self) -> int:
        return self.x.shape[-1]

    def mean_loss(self, model: Callable, loss: Callable) -> Float[Array, ""]:
        predictions = jax.vmap(model)(self.x)
        return jnp.mean(jax.vmap(loss)(predictions, self.y))

    def input_covariance(self) -> Float[Array, "d d"]:
        """Sxx = Xᵀ X / n (empirical, full batch)."""
        return self.x.T @ self.x / self.n

    def input_output_covariance(self) -> Float[Array, "k d"]:
        """Syx = Yᵀ X / n."""
        return self.y.T @ self.x / self.n

    def output_covariance(self) -> Float[Array, "k k"]:
        """Syy = Yᵀ Y / n."""
        return self.y.T @ self.y / self.n


def input_output_modes(data: Dataset, rank: int | None = None) -> InputOutputModes:
    """The modes recorded in `data`, or else the SVD of Syx with λ_α = v_αᵀ Sxx v_α.

    `rank` keeps the r strongest modes (default: all min(k, d)).
    """
    if data.modes is not None:
        modes = data.modes
    else:
        U, s, Vt = jnp.linalg.svd(data.input_output_covariance(), full_matrices=False)
        V = Vt.T
        lam = jnp.einsum("dr,de,er->r", V, data.input_covariance(), V)
        modes = InputOutputModes(U, s, V, lam)
    if rank is not None:
        modes = jax.tree_util.tree_map(lambda a: a[..., :rank], modes)
    return modes
