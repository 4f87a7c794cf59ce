"""Normalised Hermite series: the coefficients and power series of Berthier, Montanari & Zhou,
"Learning time-scales in two-layers neural networks", FoCM 2024 (arXiv:2303.00055), Sec. 2.

Conventions: normalised probabilists' Hermite functions h_k = He_k/√k!, so that
E[h_j(G) h_k(G)] = δ_jk for G ~ N(0, 1); the coefficients of f are f_k = E[f(G) h_k(G)].
"""

import math
import warnings
from collections.abc import Callable

import jax
import jax.nn as jnn
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..._models.base import resolve_activation
from ..._validate import message

#: Truncation degree for non-polynomial functions (a series of 30–60 terms suffices).
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


def polynomial_degree(fn) -> int | None:
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
    poly_degree = polynomial_degree(fn)
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
    if polynomial_degree(fn) is not None:
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
    (Berthier–Montanari–Zhou, App. E.2), so no degree ≥ 1 is learnt; if also φ_0 = 0 nothing is learnt."""
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
