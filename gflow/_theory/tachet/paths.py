"""The loss-independent weight-space path of a mode's hidden unit (Tachet des Combes et al. 2018).

??? cite "Reference"
    Tachet des Combes, Pezeshki, Shabanian, Courville & Bengio, "On the Learning Dynamics of
    Deep Neural Networks", arXiv:1809.06848 (2018).

Under the independent-mode assumption a unit on mode k with u = w·e_k > 0 and ṽ = y_k v follows
du/dτ = ṽ, dṽ/dτ = u in its mode's clock τ (dτ/dt = λ g(z), λ = p s, g = −ℓ'): with
A = u₀ + ṽ₀ and B = u₀ − ṽ₀, u = (Ae^τ + Be^{−τ})/2, ṽ = (Ae^τ − Be^{−τ})/2 and its share of the
margin is s u ṽ = (s/4)(A²e^{2τ} − B²e^{−2τ}). A unit with A < 0 < u₀ dies (u = 0) at
τ_d = ½ ln(−B/A); a unit with u₀ ≤ 0 never moves.
"""

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(24)
_GL_PANELS = 16


def gauss_legendre_unit() -> tuple[Float[Array, " m"], Float[Array, " m"]]:
    """Nodes and weights of composite Gauss–Legendre (16 panels × 24 nodes) on [0, 1]."""
    nodes, weights = jnp.asarray(_GL_NODES), jnp.asarray(_GL_WEIGHTS)
    edges = jnp.linspace(0.0, 1.0, _GL_PANELS + 1)
    mid = 0.5 * (edges[1:] + edges[:-1])
    half = 0.5 * (edges[1:] - edges[:-1])
    x = (mid[:, None] + half[:, None] * nodes[None, :]).reshape(-1)
    w = (half[:, None] * weights[None, :]).reshape(-1)
    return x, w


def death_clock(u0, vt0):
    """τ_d = ½ ln(−B/A) for a unit with A < 0 < u₀ (region F), inf otherwise (same shape)."""
    A, B = u0 + vt0, u0 - vt0
    dies = (u0 > 0) & (A < 0)
    safe = jnp.where(dies, -B / jnp.where(dies, A, -1.0), 2.0)
    return jnp.where(dies, 0.5 * jnp.log(safe), jnp.inf)


def unit_path(u0, vt0, s, tau):
    """(u, ṽ, s·relu(u)·ṽ) of units (u₀, ṽ₀) on modes of norm s at their mode clocks τ
    (all broadcast to τ's shape); dead units keep u = 0 and contribute 0."""
    u0, vt0, s = (jnp.broadcast_to(a, tau.shape) for a in (u0, vt0, s))
    A, B = u0 + vt0, u0 - vt0
    tau_d = death_clock(u0, vt0)
    alive0 = u0 > 0
    t = jnp.minimum(tau, tau_d)
    u = 0.5 * (A * jnp.exp(t) + B * jnp.exp(-t))
    vt = 0.5 * (A * jnp.exp(t) - B * jnp.exp(-t))
    dead = tau >= tau_d
    u = jnp.where(alive0, jnp.where(dead, 0.0, u), u0)
    vt = jnp.where(alive0, vt, vt0)
    contribution = jnp.where(alive0 & ~dead, 0.25 * s * (A**2 * jnp.exp(2 * t) - B**2 * jnp.exp(-2 * t)), 0.0)
    return u, vt, contribution


def clock_integral(s, A, B, tau_end):
    """∫₀^{τ_end} (1 + e^{z(τ)}) dτ, z = (s/4)(A²e^{2τ} − B²e^{−2τ}): the cross-entropy time
    λt(τ) of a single-unit mode, by composite Gauss–Legendre (the integrand lies in (1, 2] where
    z ≤ 0, so 16 × 24 nodes reach round-off). Arguments broadcast."""
    x, w = gauss_legendre_unit()
    s, A, B, tau_end = jnp.broadcast_arrays(s, A, B, tau_end)
    lead = (1,) * tau_end.ndim
    x, w = x.reshape(lead + x.shape), w.reshape(lead + w.shape)
    tau = tau_end[..., None] * x
    z = 0.25 * s[..., None] * (A[..., None] ** 2 * jnp.exp(2 * tau) - B[..., None] ** 2 * jnp.exp(-2 * tau))
    return tau_end * jnp.sum(w * (1.0 + jnp.exp(z)), axis=-1)
