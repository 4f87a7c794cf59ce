"""The setup of Berthier, Montanari & Zhou, "Learning time-scales in two-layers neural networks",
FoCM 2024 (arXiv:2303.00055), Sec. 2: single-index population data y = φ(⟨u*, x⟩), x ~ N(0, I_d),
with its exact population risk, and the network f = (1/m) Σ_i a_i σ(⟨w_i, x⟩/‖w_i‖) with the
layer rates of Eqs. (5)–(6) (ε ∂_t a = −m ∂_a R, ∂_t w = −m ∇_w R on the sphere).
"""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from ..._data.base import AbstractDataset, Dataset
from ..._losses import squared_error
from ..._models.base import resolve_activation
from ..._validate import check_float_array, check_positive, message, regime_error
from .hermite import (
    DEFAULT_DEGREE,
    hermite_coefficients,
    polynomial_degree,
    power_series,
    second_moment,
    warn_if_unlearnable,
)


class SingleIndex(AbstractDataset):
    """Population data x ~ N(0, I_d), y = φ(⟨u*, x⟩) (+ N(0, τ²) label noise), ‖u*‖ = 1.

    ??? cite "Reference"
        Berthier, Montanari & Zhou, "Learning time-scales in two-layers neural networks",
        Foundations of Computational Mathematics 2024 (arXiv:2303.00055).

    `mean_loss(model, squared_error)` is the EXACT population risk of a `TwoLayer` with
    `sphere=True`, f = c Σ_i a_i σ(⟨w_i, x⟩/‖w_i‖) (c = `model.output_scale`, 1/m for
    `scaling="mean_field"`, α = 1), by Mehler's formula:
    R = ½‖φ‖² + ½τ² − c Σ_i a_i V(q_i) + ½c² Σ_ij a_i a_j U(G_ij), q = Ŵu*, G = ŴŴᵀ, with
    V(q) = Σ_k φ_k σ_k q^k, U(q) = Σ_k σ_k² q^k (off the diagonal) and U(1) = E[σ(G)²] exactly.
    Exact for polynomial σ, φ; series truncated at `degree` otherwise.
    Fields: `u_star` (d,), `activation_coefficients`/`target_coefficients` (K+1,),
    `activation_norm2` = E[σ²], `target_norm2` = ‖φ‖², `noise` τ.
    """

    u_star: Float[Array, " d"]
    activation_coefficients: Float[Array, " K"]
    target_coefficients: Float[Array, " K"]
    activation_norm2: Float[Array, ""]
    target_norm2: Float[Array, ""]
    noise: Float[Array, ""]
    target: Callable = eqx.field(static=True)
    activation: Callable = eqx.field(static=True)

    def __init__(
        self,
        target: Callable,
        d: int,
        u_star=None,
        *,
        activation: str | Callable = "relu",
        degree: int | None = None,
        noise: float = 0.0,
    ):
        if not callable(target):
            raise TypeError(message("target", "be a callable φ (e.g. gflow.bmz.HermiteSeries([...]))",
                                    type(target).__name__))
        if not isinstance(d, int) or isinstance(d, bool) or d < 1:
            raise ValueError(message("d", "be an integer ≥ 1", repr(d)))
        activation = resolve_activation(activation)
        if u_star is None:
            u_star = jnp.zeros(d).at[0].set(1.0)
        u_star = check_float_array("u_star", u_star, ndim=1)
        if u_star.shape[0] != d:
            raise ValueError(message("u_star", f"have shape (d,) = ({d},)", f"shape {tuple(u_star.shape)}"))
        if not isinstance(u_star, jax.core.Tracer):
            norm = float(jnp.linalg.norm(u_star))
            if abs(norm - 1.0) > 1e-8:
                raise ValueError(message("u_star", "have unit norm ‖u*‖ = 1", f"‖u*‖ = {norm:.6g}",
                                         "Pass `u_star / jnp.linalg.norm(u_star)`."))
        if degree is None:
            degrees = [polynomial_degree(f) for f in (target, activation)]
            degree = DEFAULT_DEGREE if None in degrees else max(degrees)
        phi = hermite_coefficients(target, degree)
        sig = hermite_coefficients(activation, degree)
        warn_if_unlearnable(sig, phi)
        dtype = u_star.dtype
        self.u_star = u_star
        self.activation_coefficients = jnp.asarray(sig, dtype)
        self.target_coefficients = jnp.asarray(phi, dtype)
        self.activation_norm2 = jnp.asarray(second_moment(activation), dtype)
        self.target_norm2 = jnp.asarray(second_moment(target), dtype)
        self.noise = jnp.asarray(check_positive("noise", noise, strict=False), dtype)
        self.target = target
        self.activation = activation

    @property
    def d(self) -> int:
        """The input dimension d."""
        return self.u_star.shape[-1]

    @property
    def degree(self) -> int:
        """K, the Hermite degree of the series (coefficients k = 0..K)."""
        return self.target_coefficients.shape[-1] - 1

    def _check_model(self, model, loss):
        from ..._models.two_layer import TwoLayer

        if not isinstance(model, TwoLayer) or not model.sphere or model.b is not None:
            raise TypeError(message("model", "be a TwoLayer with sphere=True and no bias (SingleIndex's exact "
                                    "population risk)", type(model).__name__ if not isinstance(model, TwoLayer)
                                    else f"sphere={model.sphere}, bias={model.b is not None}"))
        if model.a.shape[0] != 1:
            raise ValueError(message("model", "have out_dim = 1", f"out_dim = {model.a.shape[0]}"))
        if model.active_width is not None:
            raise ValueError(message("model", "have no padded width (SingleIndex's exact risk uses every unit)",
                                     "TwoLayer(active_width=…)", "Use `model.unpadded()`."))
        if model.activation is not self.activation:
            raise ValueError(message("model.activation", "be the activation the SingleIndex data was built with "
                                     f"({self.activation!r})", repr(model.activation)))
        if model.d != self.d:
            raise ValueError(message("model", f"act on d = {self.d} inputs", f"d = {model.d}"))
        if loss is not squared_error:
            raise ValueError(message("loss", "be gflow.squared_error (the population risk is in closed form for "
                                     "the square loss only)", getattr(loss, "__name__", repr(loss)),
                                     "Use `data.sample(n, key)` for other losses."))

    def alignments(self, model) -> Float[Array, " m"]:
        """s_i = ⟨w_i, u*⟩/‖w_i‖."""
        return (model.w @ self.u_star) / jnp.linalg.norm(model.w, axis=-1)

    def mean_loss(self, model, loss) -> Float[Array, ""]:
        self._check_model(model, loss)
        c = model.output_scale
        w_hat = model.w / jnp.linalg.norm(model.w, axis=-1, keepdims=True)
        q = w_hat @ self.u_star
        gram = w_hat @ w_hat.T
        sig, phi = self.activation_coefficients, self.target_coefficients
        v = power_series(phi * sig, q)
        u = jnp.where(jnp.eye(gram.shape[0], dtype=bool), self.activation_norm2, power_series(sig**2, gram))
        a = model.a[0]
        return 0.5 * (self.target_norm2 + self.noise**2) - c * jnp.dot(a, v) + 0.5 * c**2 * (a @ u @ a)

    def sample(self, n: int, key: PRNGKeyArray) -> Dataset:
        """A finite sample: n Gaussian inputs (n, d) and targets φ(⟨u*, x⟩) + τ ξ (n, 1)."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(message("n", "be an integer ≥ 1", repr(n)))
        kx, kn = jr.split(key)
        x = jr.normal(kx, (n, self.d), self.u_star.dtype)
        y = self.target(x @ self.u_star) + self.noise * jr.normal(kn, (n,), self.u_star.dtype)
        return Dataset(x, y[:, None])


def layer_rates(model, eps: float | Float[Array, ""]):
    """Per-parameter rates for `GradientFlow(..., rates=...)`: m/ε on the second layer `a`, m on
    the first layer `w` (Eqs. (5)–(6): ε ȧ = −m ∂_a R, ẇ = −m ∇_w R; t is first-layer time).
    `eps` may be traced (vmap over ε). Frozen layers are skipped."""
    eps = check_positive("eps", eps)
    params, _ = eqx.partition(model, model.trainable())
    m = model.width
    dtype = model.a.dtype
    rates = params
    if params.a is not None:
        rates = eqx.tree_at(lambda p: p.a, rates, jnp.full_like(model.a, 1.0) * (m / jnp.asarray(eps, dtype)))
    if params.w is not None:
        rates = eqx.tree_at(lambda p: p.w, rates, jnp.full_like(model.w, float(m)))
    return rates


def span_coordinates(model, data: SingleIndex):
    """The span trick: every velocity lies in span{u*, w_1..w_m}, so the flow in R^d
    (d ≥ m+1) is the flow in the m+1 coordinates of an orthonormal basis Q (d, m+1) of that span
    (QR of [u*, Wᵀ]). Returns (model with w ↦ W Q, data with u* ↦ Qᵀu*, Q); lift back with
    W = W_reduced Qᵀ. Exact up to round-off (Gaussian data is rotation invariant)."""
    m, d = model.width, data.d
    if d < m + 1:
        raise regime_error("The span trick", "d ≥ m + 1 (the span of u* and the m first-layer weights)",
                           f"got d = {d} and m = {m}", "Integrate in R^d directly instead.")
    basis, _ = jnp.linalg.qr(jnp.concatenate([data.u_star[:, None], model.w.T], axis=1))
    reduced_model = eqx.tree_at(lambda mo: mo.w, model, model.w @ basis)
    reduced_data = eqx.tree_at(lambda da: da.u_star, data, basis.T @ data.u_star)
    return reduced_model, reduced_data, basis


def quantile_weights(m: int, dtype=float) -> Float[Array, " m"]:
    """a_i(0) = −1 + (2i − 1)/m, i = 1..m: the Unif[−1, 1] quantiles (no 1/√m sampling noise)."""
    return -1.0 + (2.0 * jnp.arange(1, m + 1, dtype=dtype) - 1.0) / m


def single_index_network(
    data: SingleIndex,
    width: int,
    *,
    a0=None,
    dimension: int | None = None,
    key: PRNGKeyArray | None = None,
):
    """A BMZ network on `data` and the data it trains on, in m+1 span coordinates.

    f = (1/m) Σ a_i σ(⟨w_i, x⟩/‖w_i‖) (mean-field scaling, sphere-normalised first layer),
    a(0) = `a0` (default: `quantile_weights(m)`). `dimension=None` is d = ∞: u* = e_0 and
    w_i = e_i (s_i(0) = 0, ⟨w_i, w_j⟩ = 0). A finite `dimension` d ≥ m+1 draws w_i ~ Unif(S^{d−1})
    with `key` and applies `span_coordinates`. `data` gives σ, φ; its own d is ignored.
    Returns (TwoLayer, SingleIndex), both in dimension m+1.
    """
    m = width
    dtype = data.u_star.dtype
    a0 = quantile_weights(m, dtype) if a0 is None else check_float_array("a0", a0, ndim=1)
    if a0.shape[0] != m:
        raise ValueError(message("a0", f"have shape (width,) = ({m},)", f"shape {tuple(a0.shape)}"))
    if dimension is None:
        u = jnp.zeros(m + 1, dtype).at[0].set(1.0)
        w = jnp.eye(m + 1, dtype=dtype)[1:]
        model = _bmz_two_layer(data, w, a0)
        return model, eqx.tree_at(lambda da: da.u_star, data, u)
    if key is None:
        raise ValueError(message("key", "be a PRNG key when `dimension` is finite", None))
    if not isinstance(dimension, int) or dimension < m + 1:
        raise regime_error("The span trick", "d ≥ m + 1 (the span of u* and the m first-layer weights)",
                           f"got dimension = {dimension!r} and m = {m}")
    w = jr.normal(key, (m, dimension), dtype)
    w = w / jnp.linalg.norm(w, axis=-1, keepdims=True)
    u = jnp.zeros(dimension, dtype).at[0].set(1.0)
    model = _bmz_two_layer(data, w, a0)
    full_data = eqx.tree_at(lambda da: da.u_star, data, u)
    reduced_model, reduced_data, _ = span_coordinates(model, full_data)
    return reduced_model, reduced_data


def _bmz_two_layer(data, w, a0):
    from ..._models.two_layer import TwoLayer

    return TwoLayer(w.shape[1], w.shape[0], data.activation, scaling="mean_field", sphere=True, w=w, a=a0)
