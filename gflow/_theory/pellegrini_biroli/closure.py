"""The closed-form pieces both mean-field node theories share (free functions of arrays).

??? cite "Reference"
    F. Pellegrini and G. Biroli, NeurIPS 2020 (arXiv:2006.11209), §3 (the single-node problem
    with a self-consistent dataset).

For a dataset symmetric under x → −x and x⊥ → −x⊥, the network output is f(x) = F(γ) x∥ with
F(γ) = αλ (C0 cosh 2γ + S0 sinh 2γ), C0 = ⟨a w∥⟩, S0 = ⟨a² + w∥²⟩/2 at τ = 0, and every node
follows a_i = a_i(0) cosh γ + w∥_i(0) sinh γ, w∥_i = w∥_i(0) cosh γ + a_i(0) sinh γ (w⊥ frozen).
"""

import jax.numpy as jnp
from jaxtyping import Array, Float


def output_slope(alpha, gain, C0, S0, gamma) -> Float[Array, "*T"]:
    """F(γ) = αλ (C0 cosh 2γ + S0 sinh 2γ): f(x) = F x∥."""
    return alpha * gain * (C0 * jnp.cosh(2 * gamma) + S0 * jnp.sinh(2 * gamma))


def node_paths(a0, w_par0, gamma) -> dict[str, Float[Array, "..."]]:
    """{'a', 'w_par'}: the hyperbolic node paths at γ (broadcast against a0, w_par0)."""
    ch, sh = jnp.cosh(gamma), jnp.sinh(gamma)
    return {"a": a0 * ch + w_par0 * sh, "w_par": w_par0 * ch + a0 * sh}


def saturation_gamma(alpha, gain, margin, C0, S0, p) -> Float[Array, "*P"]:
    """γ at which a sample of margin y x∥ = p > 0 is first satisfied (F(γ) p = h); 0 if it starts
    satisfied, inf for p ≤ 0. Solves C0 cosh 2γ + S0 sinh 2γ = R sinh(2γ + φ) = h/(αλp) with
    R = √(S0² − C0²), tanh φ = C0/S0 (needs S0 > |C0|)."""
    p = jnp.asarray(p)
    R = jnp.sqrt(S0**2 - C0**2)
    phi = jnp.arctanh(C0 / S0)
    r = margin / (alpha * gain * jnp.where(p > 0, p, 1.0))
    g = 0.5 * (jnp.arcsinh(r / R) - phi)
    return jnp.where(p > 0, jnp.maximum(g, 0.0), jnp.inf)
