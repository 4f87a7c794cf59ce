"""Failed training and the 0-1 error of single-unit modes (Tachet des Combes et al. 2018): the
initial-parameter phase diagram, crossing and death times, the CE-vs-hinge clock delay and the
ensemble error curve.

??? cite "Reference"
    Tachet des Combes, Pezeshki, Shabanian, Courville & Bengio, "On the Learning Dynamics of
    Deep Neural Networks", arXiv:1809.06848 (2018), failed training regions, sigmoidal error
    curves, cross-entropy vs hinge.

A unit with init (u₀, ṽ₀ = y v₀) on a mode of norm s follows the loss-independent hyperbola of
`paths.unit_path`; `rate` is κλ = κ p s (κ the flow's `time_scale`), so every time returned is on
the flow's clock t. All functions broadcast their arguments, are compiled once per shape and work
under jit and vmap.
"""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int

from ..._validate import message
from .paths import clock_integral, death_clock

#: Phase-map codes: dead at init, dies in training, recovers, correct from the start.
REGION_D, REGION_F, REGION_R, REGION_S = 0, 1, 2, 3
_LOSSES = ("hinge", "logistic")


def _check_loss(loss):
    if loss not in _LOSSES:
        raise ValueError(message("loss", "be 'hinge' or 'logistic'", repr(loss)))


def phase_region(u0: Float[ArrayLike, "..."], vt0: Float[ArrayLike, "..."]) -> Int[Array, "..."]:
    """Region of a unit's init (u₀, ṽ₀ = y v₀): D (u₀ ≤ 0, dead at init), F (ṽ₀ ≤ −u₀, dies in
    training), R (−u₀ < ṽ₀ ≤ 0, recovers), S (ṽ₀ > 0, correct from the start), as the codes
    REGION_D/F/R/S (broadcast shape). The separatrix is the ray ṽ₀ = −u₀ with the half-axis u₀ = 0;
    identical for hinge and cross-entropy (the weight-space path does not depend on the loss)."""
    return _phase_region(jnp.asarray(u0), jnp.asarray(vt0))


@eqx.filter_jit
def _phase_region(u0, vt0):
    return jnp.where(u0 <= 0, REGION_D, jnp.where(vt0 <= -u0, REGION_F, jnp.where(vt0 <= 0, REGION_R, REGION_S)))


def crossing_time(
    u0: Float[ArrayLike, "..."], vt0: Float[ArrayLike, "..."], s: Float[ArrayLike, "..."],
    rate: Float[ArrayLike, "..."], loss: str,
) -> Float[Array, "..."]:
    """Time t_c at which a region-R mode (one unit) becomes correctly classified (z = 0).

    Hinge: t_c = ln(B/A)/(2κλ); cross-entropy: t_c = (1/κλ)∫₀^{τ_c}(1 + eᶻ)dτ with
    τ_c = ½ ln(B/A) (→ twice the hinge time at small init). A = u₀ + ṽ₀, B = u₀ − ṽ₀,
    `rate` = κλ = κ p s. 0 for region S, inf for D and F. `loss`: "hinge" or "logistic"."""
    _check_loss(loss)
    return _crossing_time(*(jnp.asarray(a) for a in (u0, vt0, s, rate)), loss)


@eqx.filter_jit
def _crossing_time(u0, vt0, s, rate, loss):
    u0, vt0, s, rate = jnp.broadcast_arrays(u0, vt0, s, rate)
    region = _phase_region(u0, vt0)
    A, B = u0 + vt0, u0 - vt0
    ok = region == REGION_R
    tau_c = 0.5 * jnp.log(jnp.where(ok, B / jnp.where(ok, A, 1.0), 1.0))
    t = tau_c / rate if loss == "hinge" else clock_integral(s, A, B, tau_c) / rate
    return jnp.where(ok, t, jnp.where(region == REGION_S, 0.0, jnp.inf))


def clock_delay(
    u0: Float[ArrayLike, "..."], vt0: Float[ArrayLike, "..."], s: Float[ArrayLike, "..."],
    rate: Float[ArrayLike, "..."], tau: Float[ArrayLike, "..."],
) -> Float[Array, "..."]:
    """How much later cross-entropy reaches the point τ of the shared weight-space path than hinge:
    t_CE(τ) − t_H(τ) = (1/κλ)∫₀^τ e^{z(τ')} dτ' > 0, with `rate` = κλ and
    z(τ) = (s/4)(A²e^{2τ} − B²e^{−2τ}), A = u₀ + ṽ₀, B = u₀ − ṽ₀ (hinge: t_H = τ/κλ). Valid while
    the hinge mode is active (z < 1). At small |z| the delay equals t_H: CE runs at half speed."""
    return _clock_delay(*(jnp.asarray(a) for a in (u0, vt0, s, rate, tau)))


@eqx.filter_jit
def _clock_delay(u0, vt0, s, rate, tau):
    u0, vt0, s, rate, tau = jnp.broadcast_arrays(u0, vt0, s, rate, tau)
    return (clock_integral(s, u0 + vt0, u0 - vt0, tau) - tau) / rate


def death_time(
    u0: Float[ArrayLike, "..."], vt0: Float[ArrayLike, "..."], s: Float[ArrayLike, "..."],
    rate: Float[ArrayLike, "..."], loss: str,
) -> Float[Array, "..."]:
    """Time at which a region-F unit dies (u = 0): τ_d/κλ (hinge) or (1/κλ)∫₀^{τ_d}(1 + eᶻ)dτ
    (cross-entropy), τ_d = ½ ln(−B/A); 0 for region D, inf for R and S (and for A = 0, which only
    tends to 0). `rate` = κλ = κ p s; `loss`: "hinge" or "logistic"."""
    _check_loss(loss)
    return _death_time(*(jnp.asarray(a) for a in (u0, vt0, s, rate)), loss)


@eqx.filter_jit
def _death_time(u0, vt0, s, rate, loss):
    u0, vt0, s, rate = jnp.broadcast_arrays(u0, vt0, s, rate)
    tau_d = death_clock(u0, vt0)
    fin = jnp.isfinite(tau_d)
    tau = jnp.where(fin, tau_d, 0.0)
    t = tau / rate if loss == "hinge" else clock_integral(s, u0 + vt0, u0 - vt0, tau) / rate
    return jnp.where(u0 <= 0, 0.0, jnp.where(fin, t, jnp.inf))


def ensemble_error(rate_times_t: Float[ArrayLike, "..."], loss: str = "hinge", *,
                   conditional: bool = False) -> Float[Array, "..."]:
    """Ensemble 0-1 error of one-unit modes with isotropic Gaussian (u₀, ṽ₀) at κλt =
    `rate_times_t`: P(mode wrong at t) = 5/8 + arctan(e^{−2κλt})/(2π) (hinge; κλt instead of
    2κλt for cross-entropy at small init), or the region-R conditional (4/π) arctan(e^{−2κλt})
    with `conditional=True`. A sigmoid in log t."""
    _check_loss(loss)
    return _ensemble_error(jnp.asarray(rate_times_t), loss, conditional)


@eqx.filter_jit
def _ensemble_error(x, loss, conditional):
    arg = 2.0 * x if loss == "hinge" else x
    r = jnp.arctan(jnp.exp(-arg))
    return 4.0 / jnp.pi * r if conditional else 0.625 + r / (2.0 * jnp.pi)
