"""Single-index data y = φ(⟨u*, x⟩), x ~ N(0, I_d): Hermite machinery and the exact population risk.

Conventions (shared/theory/bmz.md §1): normalised probabilists' Hermite functions
h_k = He_k/√k!, E[h_j(G) h_k(G)] = δ_jk for G ~ N(0, 1); coefficients f_k = E[f(G) h_k(G)].
"""

import math
import warnings
from collections.abc import Callable

import equinox as eqx
import jax
import jax.nn as jnn
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._losses import squared_error
from .._models.base import resolve_activation
from .._validate import check_float_array, check_positive, message, regime_error
from .base import AbstractDataset, Dataset

#: Truncation degree for non-polynomial functions (bmz.md §1: K ≈ 30–60).
DEFAULT_DEGREE = 40
#: Gauss–Hermite_e nodes for non-polynomial functions.
QUADRATURE_NODES = 200


class HermiteSeries:
    """The polynomial f(z) = Σ_k c_k h_k(z) in normalised Hermite functions (hashable, so it can
    be a model's static activation). `coefficients` c_0..c_K; its Hermite coefficients are exact."""

    def __init__(self, coefficients):
        coefficients = tuple(float(c) for c in np.asarray(coefficients, dtype=float).ravel())
        if not coefficients:
            raise ValueError(message("coefficients", "hold at least one Hermite coefficient", "none"))
        self.coefficients = coefficients

    def __call__(self, z):
        z = jnp.asarray(z)
        h_prev, h = jnp.zeros_like(z), jnp.ones_like(z)
        out = self.coefficients[0] * h
        for k in range(1, len(self.coefficients)):
            h_prev, h = h, (z * h - math.sqrt(k - 1) * h_prev) / math.sqrt(k)
            out = out + self.coefficients[k] * h
        return out

    def __hash__(self):
        return hash(("HermiteSeries", self.coefficients))

    def __eq__(self, other):
        return isinstance(other, HermiteSeries) and other.coefficients == self.coefficients

    def __repr__(self):
        return f"HermiteSeries({list(self.coefficients)})"


def hermite_functions(z: Float[Array, "*shape"], degree: int) -> Float[Array, "*shape K"]:
    """h_0(z) … h_K(z) (K = `degree`), by the recurrence √(k+1) h_{k+1} = z h_k − √k h_{k−1}."""
    z = jnp.asarray(z)
    hs = [jnp.ones_like(z)]
    if degree >= 1:
        hs.append(z)
    for k in range(1, degree):
        hs.append((z * hs[k] - math.sqrt(k) * hs[k - 1]) / math.sqrt(k + 1))
    return jnp.stack(hs, axis=-1)


def _relu_coefficients(degree: int) -> np.ndarray:
    """ReLU in closed form: σ_0 = 1/√(2π), σ_1 = ½, σ_k = He_{k−2}(0)/(√(2π) √k!) for k ≥ 2."""
    c = np.zeros(degree + 1)
    c[0] = 1.0 / math.sqrt(2 * math.pi)
    if degree >= 1:
        c[1] = 0.5
    for k in range(2, degree + 1):
        j2 = k - 2
        if j2 % 2 == 0:
            j = j2 // 2
            # He_{2j}(0) = (−1)^j (2j−1)!! = (−1)^j (2j)!/(2^j j!), in logs (k! overflows floats).
            log_abs = math.lgamma(2 * j + 1) - j * math.log(2.0) - math.lgamma(j + 1) - 0.5 * math.lgamma(k + 1)
            c[k] = (-1) ** j * math.exp(log_abs) / math.sqrt(2 * math.pi)
    return c


def _polynomial_degree(fn) -> int | None:
    if isinstance(fn, HermiteSeries):
        return len(fn.coefficients) - 1
    if isinstance(fn, np.polynomial.Polynomial):
        return fn.degree()
    if fn is resolve_activation("identity") or fn is resolve_activation("linear"):
        return 1
    return None


def hermite_coefficients(fn: Callable, degree: int | None = None, *, nodes: int = QUADRATURE_NODES) -> np.ndarray:
    """Normalised Hermite coefficients f_k = E[f(G) h_k(G)], k = 0..`degree`, as a NumPy array.

    Exact for polynomials (`HermiteSeries`, `numpy.polynomial.Polynomial`, the identity), closed
    form for ReLU (`jax.nn.relu`), Gauss–Hermite_e quadrature with `nodes` nodes otherwise.
    `degree` defaults to the polynomial's degree, else `DEFAULT_DEGREE`.
    """
    poly_degree = _polynomial_degree(fn)
    if degree is None:
        degree = poly_degree if poly_degree is not None else DEFAULT_DEGREE
    if not isinstance(degree, int) or isinstance(degree, bool) or degree < 0:
        raise ValueError(message("degree", "be an integer ≥ 0", repr(degree)))
    out = np.zeros(degree + 1)
    if isinstance(fn, HermiteSeries):
        c = np.asarray(fn.coefficients)
    elif isinstance(fn, np.polynomial.Polynomial):
        he = np.polynomial.hermite_e.poly2herme(fn.convert().coef)
        c = he * np.sqrt([math.factorial(k) for k in range(len(he))])
    elif poly_degree == 1:
        c = np.array([0.0, 1.0])
    elif fn is jnn.relu:
        return _relu_coefficients(degree)
    else:
        x, w = np.polynomial.hermite_e.hermegauss(nodes)
        w = w / math.sqrt(2 * math.pi)
        values = np.asarray(fn(x), dtype=float)
        return np.asarray(hermite_functions(jnp.asarray(x), degree)).T @ (w * values)
    n = min(len(c), degree + 1)
    out[:n] = c[:n]
    return out


def second_moment(fn: Callable, *, nodes: int = QUADRATURE_NODES) -> float:
    """E[f(G)²], exactly (Parseval) for polynomials, ½ for ReLU, by quadrature otherwise."""
    if _polynomial_degree(fn) is not None:
        return float(np.sum(hermite_coefficients(fn) ** 2))
    if fn is jnn.relu:
        return 0.5
    x, w = np.polynomial.hermite_e.hermegauss(nodes)
    return float(np.sum(w / math.sqrt(2 * math.pi) * np.asarray(fn(x), dtype=float) ** 2))


def power_series(coefficients: Float[Array, " K"], q: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
    """Σ_k c_k q^k (Horner), e.g. V(q) = Σ φ_k σ_k q^k and U(q) = Σ σ_k² q^k."""
    out = jnp.zeros_like(q) + coefficients[-1]
    for k in range(coefficients.shape[0] - 2, -1, -1):
        out = out * q + coefficients[k]
    return out


def powers(s: Float[Array, " m"], degree: int) -> Float[Array, "m K"]:
    """s^0 … s^K by repeated products (a float exponent would give NaN derivatives at s = 0)."""
    out = [jnp.ones_like(s)]
    for _ in range(degree):
        out.append(out[-1] * s)
    return jnp.stack(out, axis=-1)


def warn_if_unlearnable(activation_coefficients, target_coefficients) -> None:
    """Warn when σ_1 φ_1 = 0 (concrete values only): from s(0) = 0 the alignments never move
    (bmz.md §1, App. E.2), so no degree ≥ 1 is learnt; if also φ_0 = 0 nothing is learnt."""
    sig, phi = activation_coefficients, target_coefficients
    if isinstance(sig, jax.core.Tracer) or isinstance(phi, jax.core.Tracer):
        return
    sig, phi = np.asarray(sig), np.asarray(phi)
    if phi.shape[0] < 2 or sig.shape[0] < 2:
        return
    if phi[0] == 0 and phi[1] == 0:
        warnings.warn(
            "The target has φ_0 = φ_1 = 0: from s(0) = 0 the alignments s_i = ⟨w_i, u*⟩ stay 0 and "
            "nothing is learnt (Berthier–Montanari–Zhou App. E.2); the risk stays at ½‖φ‖².",
            UserWarning, stacklevel=3,
        )
    elif sig[1] * phi[1] == 0 and np.any(phi[2:] != 0):
        which = "σ_1" if sig[1] == 0 else "φ_1"
        warnings.warn(
            f"{which} = 0 breaks the assumption σ_1 φ_1 ≠ 0: from s(0) = 0 the alignments stay 0 and "
            "no Hermite degree ≥ 1 of the target is learnt.",
            UserWarning, stacklevel=3,
        )


class SingleIndex(AbstractDataset):
    """Population data x ~ N(0, I_d), y = φ(⟨u*, x⟩) (+ N(0, τ²) label noise), ‖u*‖ = 1.

    ??? cite "Reference"
        Berthier, Montanari & Zhou, "Learning time-scales in two-layers neural networks",
        Foundations of Computational Mathematics 2024 (arXiv:2303.00055).

    `mean_loss(model, squared_error)` is the EXACT population risk of a `TwoLayer` with
    `sphere=True`, f = c Σ_i a_i σ(⟨w_i, x⟩/‖w_i‖) (c = `model.output_scale`, 1/m for
    `scaling="mean_field"`, α = 1), by Mehler's formula (bmz.md §1):
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
            raise TypeError(message("target", "be a callable φ (e.g. gflow.HermiteSeries([...]))", type(target).__name__))
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
            degrees = [_polynomial_degree(f) for f in (target, activation)]
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
        return self.u_star.shape[-1]

    @property
    def degree(self) -> int:
        return self.target_coefficients.shape[-1] - 1

    def _check_model(self, model, loss):
        from .._models.two_layer import TwoLayer

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


def order_parameters(t, params, flow) -> Float[Array, " K"]:
    """Observable M_k = c Σ_i a_i s_i^k, k = 0..K (c = 1/m in mean-field scaling), on SingleIndex data."""
    model = flow.model(params)
    s = flow.data.alignments(model)
    return model.output_scale * jnp.sum(model.a[0][:, None] * powers(s, flow.data.degree), axis=0)


def alignments(t, params, flow) -> Float[Array, " m"]:
    """Observable s_i = ⟨w_i, u*⟩/‖w_i‖ (m,), on SingleIndex data."""
    return flow.data.alignments(flow.model(params))


def layer_rates(model, eps: float | Float[Array, ""]):
    """Per-parameter rates for `GradientFlow(..., rates=...)`: m/ε on the second layer `a`, m on
    the first layer `w` (bmz.md §1: ε ȧ = −m ∂_a R, ẇ = −m ∇_w R; t is first-layer time).
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
    """The span trick (bmz.md §1): every velocity lies in span{u*, w_1..w_m}, so the flow in R^d
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
    from .._models.two_layer import TwoLayer

    return TwoLayer(w.shape[1], w.shape[0], data.activation, scaling="mean_field", sphere=True, w=w, a=a0)
