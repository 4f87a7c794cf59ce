"""Closed-form mode strengths ũ(τ) of deep linear networks, and their half times.

All functions work in Saxe's whitened units: ũ = λu (λ = v_αᵀ Sxx v_α), c̃ = λc, and the
theory clock τ (the flow's time t times its `time_scale`; for depth D ≥ 3 also times
λ^{2/D − 1}, see `DeepLinearModes`). They act elementwise and broadcast, so they jit and vmap.

??? cite "Reference"
    Saxe, McClelland & Ganguli, "Exact solutions to the nonlinear dynamics of learning in deep
    linear neural networks", ICLR 2014 (arXiv:1312.6120), Eqs. (6)–(8) and Sec. 3 (depth);
    the unbalanced two-layer form (Riccati in q = e^φ, ũ = (|c̃|/2) sinh φ) is derived from their
    per-mode equations with the conserved c = a² − b².
"""

import jax
import jax.numpy as jnp

_SERIES_TERMS = 60


def two_layer_strength(s, u0, c, tau):
    """ũ(τ) of dũ/dτ = √(c̃² + 4ũ²)(s − ũ) (two layers, imbalance c̃ = λ(a² − b²)).

    c̃ = 0: Saxe's sigmoid ũ = s/(1 + (s/ũ0 − 1)e^{−2sτ}) (ũ0 > 0), ũ0/(1 + 2ũ0τ) for s = 0, the
    decaying anti-balanced branch for ũ0 < 0, and 0 for ũ0 = 0 (a saddle). c̃ ≠ 0: with
    Δ = √(4s² + c̃²), q± the roots of the Riccati equation and K = (q0 − q+)/(q0 − q−)·e^{−Δτ},
    q = (q+ − K q−)/(1 − K) and ũ = (|c̃|/4)(q − 1/q); every difference written without
    cancellation.
    """
    abs_c = jnp.abs(c)
    balanced = abs_c == 0
    # --- c̃ = 0: the Saxe sigmoid, in overflow-free forms.
    safe_u0 = jnp.where(u0 == 0, 1.0, u0)
    safe_s = jnp.where(s == 0, 1.0, s)
    grow = jnp.where(
        s > 0,
        s / (1.0 + (s / safe_u0 - 1.0) * jnp.exp(-2.0 * s * tau)),
        u0 / (1.0 + 2.0 * u0 * tau),
    )
    decay_factor = jnp.where(s > 0, -jnp.expm1(-2.0 * s * tau) / safe_s, 2.0 * tau)
    decay = u0 * jnp.exp(-2.0 * s * tau) / (1.0 - u0 * decay_factor)
    sigmoid = jnp.where(u0 > 0, grow, jnp.where(u0 < 0, decay, 0.0))
    # --- c̃ ≠ 0: the Riccati solution.
    safe_c = jnp.where(balanced, 1.0, abs_c)
    delta = jnp.sqrt(4.0 * s**2 + safe_c**2)
    q_plus = (2.0 * s + delta) / safe_c
    q_minus = -safe_c / (2.0 * s + delta)
    r0 = jnp.sqrt(4.0 * u0**2 + safe_c**2)
    q0 = jnp.where(u0 >= 0, (2.0 * u0 + r0) / safe_c, safe_c / (r0 - 2.0 * u0))
    K = (q0 - q_plus) / (q0 - q_minus) * jnp.exp(-delta * tau)
    q = (q_plus - K * q_minus) / (1.0 - K)
    riccati = 0.25 * safe_c * (q - 1.0 / q)
    return jnp.where(balanced, sigmoid, riccati)


def two_layer_half_time(s, u0, c):
    """τ at which the two-layer ũ(τ) (any c̃) first reaches s/2; 0 if ũ0 ≥ s/2, inf if never.

    Inverts the Riccati solution: with Q = |c̃|q = 2ũ + √(4ũ² + c̃²) (Q+ at ũ = s, Q½ at ũ = s/2,
    Q− = −c̃²/(2s + Δ)), τ½ = [ln((Q+ − Q0)/(Q+ − Q½)) + ln((Q½ − Q−)/(Q0 − Q−))]/Δ, a sum of
    positive terms throughout (no cancellation). At c̃ = 0 it is Saxe's ln(s/ũ0 − 1)/(2s).
    Never reached: s = 0 (nothing to learn), or c̃ = 0 with ũ0 ≤ 0 (stays at the saddle 0 or
    decays to it).
    """
    c2 = c**2
    delta = jnp.sqrt(4.0 * s**2 + c2)
    never = (s <= 0) | ((c == 0) & (u0 <= 0))
    started = u0 >= 0.5 * s
    # Safe stand-ins where the answer is fixed (never / already there), so no NaN is formed.
    safe = never | started
    s_ = jnp.where(safe, 1.0, s)
    u_ = jnp.where(safe, 0.25, u0)
    delta = jnp.where(safe, jnp.sqrt(4.0 + c2), delta)
    r0 = jnp.sqrt(4.0 * u_**2 + c2)
    q_plus = 2.0 * s_ + delta
    q_minus = -c2 / (2.0 * s_ + delta)
    q_half = s_ + jnp.sqrt(s_**2 + c2)
    q0 = jnp.where(u_ >= 0, 2.0 * u_ + r0, c2 / (r0 - 2.0 * u_))
    tau = (jnp.log((q_plus - q0) / (q_plus - q_half)) + jnp.log((q_half - q_minus) / (q0 - q_minus))) / delta
    return jnp.where(never, jnp.inf, jnp.where(started, 0.0, tau))


def _hyp_integral(v, gap, s, depth):
    """I(v) = ∫₀^v w/(s − w^D) dw = (v²/2s) ₂F₁(1, 2/D; 1 + 2/D; v^D/s), for 0 ≤ v < s^{1/D}.

    `gap` = s^{1/D} − v, passed separately so the logarithmic end is exact. Series for
    z = v^D/s ≤ ½; partial fractions over the D roots ρ_k of w^D = s otherwise:
    I = −(1/(D s)) Σ_k ρ_k² log(1 − v/ρ_k).
    """
    z = v**depth / s
    k = jnp.arange(_SERIES_TERMS, dtype=v.dtype)
    p = 2.0 / depth
    zs = jnp.minimum(z, 0.5)
    k = k.reshape((1,) * zs.ndim + k.shape)
    series = v**2 / (2.0 * s) * jnp.sum(zs[..., None] ** k * p / (p + k), axis=-1)
    root = s ** (1.0 / depth)
    angles = 2.0 * jnp.pi * jnp.arange(1, depth, dtype=v.dtype) / depth
    cdtype = jnp.complex128 if v.dtype == jnp.float64 else jnp.complex64
    unit = jnp.exp(jax.lax.complex(jnp.zeros_like(angles), angles)).reshape((1,) * root.ndim + angles.shape)
    rho = root.astype(cdtype)[..., None] * unit
    others = jnp.sum(rho**2 * jnp.log(1.0 - v.astype(cdtype)[..., None] / rho), axis=-1).real
    first = root**2 * jnp.log(gap / root)
    fractions = -(first + others) / (depth * s)
    return jnp.where(z <= 0.5, series, fractions)


def _time_of(v, gap, s, depth):
    """F(v) with dτ̃ = dF: F(v) = v^{2−D}/((2−D)s) + I(v)/s (D ≥ 3), so τ̃(ũ) = F(ũ^{1/D}) − F(ũ0^{1/D})."""
    return v ** (2 - depth) / ((2 - depth) * s) + _hyp_integral(v, gap, s, depth) / s


def _safe_deep(s, u0):
    # Modes outside 0 < ũ0 < s (a saddle at ũ0 = 0; refused elsewhere) get harmless stand-ins.
    inside = (u0 > 0) & (u0 < s)
    return inside, jnp.where(inside, s, 1.0), jnp.where(inside, u0, 0.5)


def deep_balanced_strength(s, u0, tau, depth: int):
    """ũ(τ̃) of dũ/dτ̃ = D ũ^{2−2/D}(s − ũ) (balanced, depth D ≥ 3), for 0 < ũ0 < s; 0 for ũ0 = 0.

    Solves F(v) − F(v0) = τ̃ for the per-layer strength v = ũ^{1/D} by bisection on
    y = −log((v_max − v)/(v_max − v0)), v_max = s^{1/D} (200 halvings: to round-off); returns s
    once τ̃ exceeds the time to reach s(1 − 1e-15). Elementwise in (s, u0, τ̃) (they broadcast).
    """
    inside, s, u0 = _safe_deep(s, u0)
    s, u0, tau = jnp.broadcast_arrays(s, u0, tau)
    vmax = s ** (1.0 / depth)
    v0 = u0 ** (1.0 / depth)
    gap0 = vmax - v0
    f0 = _time_of(v0, gap0, s, depth)
    y_max = jnp.log(gap0 / (vmax * 1e-15))

    def residual(y):
        gap = gap0 * jnp.exp(-y)
        return _time_of(vmax - gap, gap, s, depth) - f0 - tau

    def halve(_, bracket):
        lo, hi = bracket
        mid = 0.5 * (lo + hi)
        below = residual(mid) < 0
        return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

    lo, hi = jax.lax.fori_loop(0, 200, halve, (jnp.zeros_like(tau), y_max))
    y = 0.5 * (lo + hi)
    u = jnp.where(residual(y_max) < 0, s, (vmax - gap0 * jnp.exp(-y)) ** depth)
    return jnp.where(inside, u, 0.0)


def deep_balanced_half_time(s, u0, depth: int):
    """τ̃ at which the balanced depth-D ũ first reaches s/2: F((s/2)^{1/D}) − F(ũ0^{1/D}) for
    0 < ũ0 < s/2; 0 for ũ0 ≥ s/2; inf for ũ0 = 0 (the saddle) or s = 0."""
    inside, s_, u_ = _safe_deep(s, u0)
    vmax = s_ ** (1.0 / depth)
    v0 = u_ ** (1.0 / depth)
    v_half = (0.5 * s_) ** (1.0 / depth)
    tau = _time_of(v_half, vmax - v_half, s_, depth) - _time_of(v0, vmax - v0, s_, depth)
    return jnp.where(~inside, jnp.inf, jnp.where(u0 >= 0.5 * s, 0.0, tau))
