"""Special functions for closed-form learning curves, in JAX (float64-accurate, jit/vmap-able).

- `expi(x)`: the exponential integral Ei(x) (principal value), `jax.scipy.special.expi`
  (tested against scipy to ≤ 1e-12 relative away from its root x₀ ≈ 0.3725).
- `lambertw(x, branch)`: the real Lambert W on branch 0 (x ≥ −1/e) or −1 (−1/e ≤ x < 0).
- `wrightomega(k)`: the Wright omega ω(k) = W₀(eᵏ), the root of ω + ln ω = k (no overflow).
- `invert_increasing(f, y, lo, hi)`: x with f(x) = y for increasing f on [lo, hi]
  (bracketed Newton–bisection in `lax.while_loop`; differentiable by the implicit function
  theorem).
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from ._validate import message

# 1/e as a double-double: _INV_E_HI + _INV_E_LO = 1/e to ~1e-33, so x + 1/e is exact near −1/e.
_INV_E_HI = 0.36787944117144233
_INV_E_LO = -1.2428753672788363e-17
_HALLEY_STEPS = 8
# The float nearest −1/e lies 1.2e-17 below it: accept it as the branch point (W = −1).
_ROUNDING = 2e-17


_EULER_GAMMA = 0.5772156649015329
_SERIES_TERMS = 120
_ASYMPTOTIC_TERMS = 40
_FRACTION_DEPTH = 80


def expi(x: Float[ArrayLike, "*shape"]) -> Float[Array, "*shape"]:
    """Ei(x) = −∫_{−x}^∞ e^{−t}/t dt (principal value); Ei(0) = −∞, Ei(−∞) = 0.

    x > 0: the positive-term series γ + ln x + Σ xᵏ/(k·k!) for x ≤ 40, the asymptotic series
    (eˣ/x) Σ k!/xᵏ beyond; x < 0: Ei(x) = −E₁(−x), with E₁ by its series for −x ≤ 1 and its
    continued fraction otherwise. (`jax.scipy.special.expi` is not used: in jax 0.10 it takes
    minutes to compile on CPU.) Accurate to a few ulp in relative terms away from the root
    x₀ ≈ 0.3725, where the absolute error is ~1e-16.
    """
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(float)
    ax = jnp.abs(x)
    # Series Σ_{k≥1} xᵏ/(k·k!) for x ∈ [−1, 40] (terms positive for x > 0).
    xs = jnp.clip(x, -1.0, 40.0)

    def series_step(k, carry):
        term, total = carry
        kf = k.astype(x.dtype)
        term = term * xs / kf
        return term, total + term / kf

    _, series = jax.lax.fori_loop(1, _SERIES_TERMS + 1, series_step, (jnp.ones_like(x), jnp.zeros_like(x)))
    small = _EULER_GAMMA + jnp.log(jnp.where(ax > 0, ax, 1.0)) + series
    # Asymptotic series for x > 40.
    xa = jnp.maximum(x, 40.0)

    def asymptotic_step(k, carry):
        term, total = carry
        term = term * k.astype(x.dtype) / xa
        return term, total + term

    _, asym = jax.lax.fori_loop(1, _ASYMPTOTIC_TERMS + 1, asymptotic_step, (jnp.ones_like(x), jnp.ones_like(x)))
    large = jnp.exp(jnp.minimum(xa, 709.0)) / xa * asym
    large = jnp.where(xa > 709.0, jnp.exp(xa - jnp.log(xa)) * asym, large)
    # −E₁(y), y = −x > 1, by the continued fraction e^{−y}/(y+1− 1²/(y+3− 2²/(y+5− …))).
    y = jnp.maximum(-x, 1.0)

    def fraction_step(i, t):
        k = (_FRACTION_DEPTH - i).astype(x.dtype)
        return y + 2.0 * k - 1.0 - k**2 / t

    t = jax.lax.fori_loop(0, _FRACTION_DEPTH, fraction_step, y + 2.0 * _FRACTION_DEPTH + 1.0)
    negative = -jnp.exp(-y) / t
    out = jnp.where(x > 40.0, large, jnp.where(x >= -1.0, small, negative))
    return jnp.where(x == 0, -jnp.inf, out)


def _branch_point_series(p):
    """W near the branch point as a series in p = ±√(2(e x + 1)) (Corless et al. 1996, 4.22)."""
    coeffs = (
        -1.0, 1.0, -1.0 / 3.0, 11.0 / 72.0, -43.0 / 540.0, 769.0 / 17280.0, -221.0 / 8505.0,
        680863.0 / 43545600.0, -1963.0 / 204120.0, 226287557.0 / 37623398400.0,
    )
    out = jnp.zeros_like(p)
    for c in reversed(coeffs):
        out = out * p + c
    return out


def lambertw(x: Float[ArrayLike, "*shape"], branch: int = 0) -> Float[Array, "*shape"]:
    """Real Lambert W: the w with w eʷ = x, on `branch` 0 (w ≥ −1, x ≥ −1/e) or −1
    (w ≤ −1, −1/e ≤ x < 0). Outside the domain the result is NaN (like scipy's real part is
    not defined there); callers validate their arguments.

    Halley iterations from an asymptotic / branch-point initial guess; near the branch point
    (|x + 1/e| < 2e-4) the 10-term series in p = √(2e(x + 1/e)) is used directly, with x + 1/e
    formed exactly, so W is accurate there too.
    """
    if branch not in (0, -1):
        raise ValueError(message("branch", "be 0 or -1 (the real branches of Lambert W)", repr(branch)))
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(float)
    delta = (x + _INV_E_HI) + _INV_E_LO  # x + 1/e, exact for x near −1/e
    p = jnp.sqrt(jnp.maximum(2.0 * jnp.e * delta, 0.0))
    sign = 1.0 if branch == 0 else -1.0
    near = delta < 2e-4
    series = _branch_point_series(sign * p)
    if branch == 0:
        big = x > 3.0
        safe = jnp.where(big, x, 3.0)
        l1 = jnp.log(safe)
        l2 = jnp.log(l1)
        guess_big = l1 - l2 + l2 / l1
        guess_small = jnp.where(delta < 0.3, _branch_point_series(p), jnp.log1p(jnp.maximum(x, -0.3)))
        guess = jnp.where(big, guess_big, guess_small)
        # w eʷ = x is well conditioned for small |x|; w + ln(w/x) = 0 for large x (no overflow).
        log_form = big
        domain = delta >= -_ROUNDING
    else:
        far = delta >= 0.3
        safe = jnp.where(far & (x < 0), -x, 0.1)
        l1 = jnp.log(safe)
        l2 = jnp.log(-l1)
        guess = jnp.where(far, l1 - l2 + l2 / l1, _branch_point_series(-p))
        log_form = jnp.ones_like(x, dtype=bool)
        domain = (delta >= -_ROUNDING) & (x < 0)

    def step(_, w):
        # Halley on f(w) = w eʷ − x.
        ew = jnp.exp(jnp.where(log_form, 0.0, w))
        f = w * ew - x
        fp = ew * (w + 1.0)
        fpp = ew * (w + 2.0)
        # Halley on g(w) = w + ln(w/x) (same root, for large |w|).
        ratio = jnp.where(log_form, w / jnp.where(x == 0, 1.0, x), 1.0)
        g = w + jnp.log(jnp.where(ratio > 0, ratio, 1.0))
        safe_w = jnp.where(w == 0, 1.0, w)
        gp = 1.0 + 1.0 / safe_w
        gpp = -1.0 / safe_w**2
        F = jnp.where(log_form, g, f)
        Fp = jnp.where(log_form, gp, fp)
        Fpp = jnp.where(log_form, gpp, fpp)
        denom = Fp - 0.5 * F * Fpp / jnp.where(Fp == 0, 1.0, Fp)
        ok = (Fp != 0) & (denom != 0) & (F != 0)
        new = w - F / jnp.where(ok, denom, 1.0)
        return jnp.where(ok & jnp.isfinite(new), new, w)

    w = jax.lax.fori_loop(0, _HALLEY_STEPS, step, guess)
    w = jnp.where(near, series, w)
    if branch == 0:
        w = jnp.where(x == 0, 0.0, w)
    else:
        w = jnp.where(x == 0, -jnp.inf, w)
    return jnp.where(domain, w, jnp.nan)


def wrightomega(k: Float[ArrayLike, "*shape"]) -> Float[Array, "*shape"]:
    """Wright omega ω(k) = W₀(eᵏ): the root of ω + ln ω = k (real k), without overflow."""
    k = jnp.asarray(k)
    if not jnp.issubdtype(k.dtype, jnp.floating):
        k = k.astype(float)
    big = k > 1.0
    small = lambertw(jnp.exp(jnp.minimum(k, 1.0)), 0)
    kb = jnp.where(big, k, 2.0)
    w = kb - jnp.log(kb) + jnp.log(kb) / kb

    def step(_, w):
        g = w + jnp.log(w) - kb
        gp = 1.0 + 1.0 / w
        gpp = -1.0 / w**2
        return w - g / (gp - 0.5 * g * gpp / gp)

    w = jax.lax.fori_loop(0, _HALLEY_STEPS, step, w)
    return jnp.where(big, w, small)


def _invert(f, y, lo, hi, args, rtol, max_steps):
    dtype = jnp.result_type(y, lo, hi)
    y = jnp.asarray(y, dtype)
    lo = jnp.asarray(lo, dtype)
    hi = jnp.asarray(hi, dtype)

    def value_and_slope(x):
        return jax.jvp(lambda x: f(x, args), (x,), (jnp.ones_like(x),))

    def cond(state):
        lo, hi, x, _, i = state
        return (i < max_steps) & (hi - lo > rtol * jnp.maximum(jnp.abs(x), 1e-300))

    def body(state):
        lo, hi, x, last_side, i = state
        fx, dfx = value_and_slope(x)
        r = fx - y
        side = jnp.where(r < 0, -1, 1)
        lo = jnp.where(r <= 0, x, lo)
        hi = jnp.where(r >= 0, x, hi)
        newton = x - r / jnp.where(dfx > 0, dfx, 1.0)
        inside = (dfx > 0) & (newton > lo) & (newton < hi) & jnp.isfinite(newton)
        # Newton inside the bracket, except when the same end moved twice in a row: then bisect,
        # so the bracket at least halves every other step (a one-sided Newton approach on a
        # steep convex f takes tiny steps that say nothing about the distance to the root).
        use_newton = inside & (side != last_side)
        x_new = jnp.where(use_newton, newton, 0.5 * (lo + hi))
        done = r == 0
        lo = jnp.where(done, x, lo)
        hi = jnp.where(done, x, hi)
        x_new = jnp.where(done, x, x_new)
        return lo, hi, x_new, side, i + 1

    x0 = 0.5 * (lo + hi)
    state = (lo, hi, x0, jnp.asarray(0), jnp.asarray(0))
    lo, hi, x, _, _ = jax.lax.while_loop(cond, body, state)
    return jnp.clip(x, lo, hi)


def invert_increasing(
    f: Callable[[Array, Any], Array],
    y: Float[ArrayLike, ""],
    lo: Float[ArrayLike, ""],
    hi: Float[ArrayLike, ""],
    args: Any = None,
    *,
    rtol: float = 1e-15,
    max_steps: int = 200,
) -> Float[Array, ""]:
    """The x in [lo, hi] with f(x, args) = y, for f strictly increasing on [lo, hi] (scalar).

    Bracketed Newton–bisection in `lax.while_loop` (the slope comes from `jax.jvp`), stopped
    when the bracket is below `rtol`·|x| (or f(x) = y exactly). If y is outside [f(lo), f(hi)] the result is clipped to
    the nearer end. `vmap` it for many targets. Derivatives with respect to `y` and `args` follow
    the implicit function theorem: dx = (dy − ∂f/∂args·dargs) / f'(x).
    """

    @jax.custom_jvp
    def solve(y, args):
        return _invert(f, y, lo, hi, args, rtol, max_steps)

    @solve.defjvp
    def solve_jvp(primals, tangents):
        y, args = primals
        dy, dargs = tangents
        x = solve(y, args)
        _, dfx = jax.jvp(lambda x: f(x, args), (x,), (jnp.ones_like(x),))
        _, dfa = jax.jvp(lambda a: f(x, a), (args,), (dargs,))
        return x, (dy - dfa) / dfx

    return solve(jnp.asarray(y), args)
