"""Datasets: `Dataset(x, y)` (a finite sample), the `AbstractDataset` interface, input–output
modes."""

import abc
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from .._validate import check_finite, check_float_array, is_concrete, message


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
        """L = E_μ ℓ(model(x_μ), y_μ), a scalar: the mean over the samples, or the population
        expectation. `model` acts on one example; `loss(prediction, target)` is per example."""
        raise NotImplementedError


class Dataset(AbstractDataset):
    """A finite training set: inputs `x` (n, d), targets `y` (n, k).

    A 1-D `y` of shape (n,) is read as (n, 1) (binary labels ±1, scalar regression targets).
    `modes` optionally records the input–output SVD the data was built with (so that mode
    strengths use that basis even where singular values repeat or vanish).

    Padded data size (for sweeps over data sizes in one compile): `sample_mask` (n,) marks the
    samples that count; every mean over samples (the loss, covariances, the training error) runs
    over them alone. `first(n')` makes one; `unpadded()` drops the padding.
    """

    x: Float[Array, "n d"]
    y: Float[Array, "n k"]
    modes: InputOutputModes | None = None
    sample_mask: Bool[Array, " n"] | None = None

    def __init__(self, x, y, modes: InputOutputModes | None = None, *, sample_mask=None):
        x = check_float_array("x", x, ndim=2)
        y = check_float_array("y", y, ndim=(1, 2))
        if y.ndim == 1:
            y = y[:, None]
        if x.shape[0] != y.shape[0]:
            raise ValueError(
                message("y", f"have one row per row of `x` (n = {x.shape[0]})",
                        f"x of shape {tuple(x.shape)} and y of shape {tuple(y.shape)}")
            )
        if x.shape[0] == 0:
            raise ValueError(message("x", "hold at least one example (n ≥ 1 rows)", f"x of shape {tuple(x.shape)}",
                                     "A mean loss over no examples is 0/0 (NaN)."))
        if x.shape[1] == 0 or y.shape[1] == 0:
            raise ValueError(message("x" if x.shape[1] == 0 else "y", "have at least one column",
                                     f"x of shape {tuple(x.shape)} and y of shape {tuple(y.shape)}"))
        if x.dtype != y.dtype:
            raise TypeError(message("y", f"have the dtype of `x` ({x.dtype})", f"dtype {y.dtype}"))
        self.x = check_finite("x", x)
        self.y = check_finite("y", y)
        self.modes = modes
        if sample_mask is not None:
            sample_mask = jnp.asarray(sample_mask)
            if sample_mask.dtype != jnp.bool_ or sample_mask.shape != (x.shape[0],):
                raise ValueError(message("sample_mask", f"be a boolean array of shape (n,) = ({x.shape[0]},)",
                                         f"{sample_mask.dtype} array of shape {sample_mask.shape}"))
        self.sample_mask = sample_mask

    @property
    def n(self) -> int:
        """The number of samples stored (padding included; see `num_samples`)."""
        return self.x.shape[-2]

    @property
    def num_samples(self) -> int | Float[Array, ""]:
        """The number of samples that count (n, or the number of True entries of `sample_mask`)."""
        if self.sample_mask is None:
            return self.n
        return jnp.sum(self.sample_mask.astype(self.x.dtype))

    def sample_mean(self, values: Float[Array, "n ..."]) -> Float[Array, "..."]:
        """The mean of per-sample `values` over the samples that count (axis 0)."""
        if self.sample_mask is None:
            return jnp.mean(values, axis=0)
        mask = self.sample_mask.reshape(-1, *([1] * (values.ndim - 1)))
        return jnp.sum(jnp.where(mask, values, 0), axis=0) / self.num_samples.astype(values.dtype)

    def first(self, n: int | float | Float[Array, ""]) -> "Dataset":
        """The first `n` samples as a padded dataset: same arrays, `sample_mask` = index < n.

        `n` may be traced (one compile for a whole grid of data sizes); it must be an integer in
        [1, self.n]. The recorded `modes` are dropped (they belong to the whole set).
        """
        expected = f"be an integer in [1, n = {self.n}]"
        if is_concrete(n):
            value = np.asarray(n)
            if value.ndim != 0 or not (1 <= value <= self.n) or value != np.round(value):
                raise ValueError(message("n", expected, repr(n)))
        else:
            if jnp.ndim(n) != 0:
                raise ValueError(message("n", "be a scalar", f"shape {jnp.shape(n)}"))
            bad = (n < 1) | (n > self.n) | (n != jnp.round(n))
            n = eqx.error_if(n, bad, message("n", expected, "a value that is not"))
        n = jnp.asarray(n, dtype=self.x.dtype)
        mask = jnp.arange(self.n, dtype=self.x.dtype) < n
        # tree_at, not __init__: the arrays were checked already (and may be traced now).
        return eqx.tree_at(lambda d: (d.modes, d.sample_mask), self, (None, mask), is_leaf=lambda v: v is None)

    def unpadded(self) -> "Dataset":
        """The samples that count, as an unmasked dataset (itself if nothing is padded; concrete
        masks only)."""
        if self.sample_mask is None:
            return self
        if not is_concrete(self.sample_mask):
            raise ValueError(message("sample_mask", "be concrete to unpad (not traced under jit/vmap)", "a tracer"))
        keep = np.asarray(self.sample_mask)
        return Dataset(self.x[keep], self.y[keep])

    @property
    def d(self) -> int:
        """d, the input dimension (the columns of `x`)."""
        return self.x.shape[-1]

    def mean_loss(self, model: Callable, loss: Callable) -> Float[Array, ""]:
        """L = (1/n) Σ_μ ℓ(model(x_μ), y_μ), a scalar; the mean runs over the samples that count
        (`sample_mask`)."""
        predictions = jax.vmap(model)(self.x)
        return self.sample_mean(jax.vmap(loss)(predictions, self.y))

    def _covariance(self, a, b):
        if self.sample_mask is None:
            return a.T @ b / self.n
        return self.sample_mean(a[:, :, None] * b[:, None, :])

    def input_covariance(self) -> Float[Array, "d d"]:
        """Sxx = Xᵀ X / n (empirical, full batch)."""
        return self._covariance(self.x, self.x)

    def input_output_covariance(self) -> Float[Array, "k d"]:
        """Syx = Yᵀ X / n."""
        return self._covariance(self.y, self.x)

    def output_covariance(self) -> Float[Array, "k k"]:
        """Syy = Yᵀ Y / n."""
        return self._covariance(self.y, self.y)


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
