"""Plateaus and learning time scales of the reduced flow of Berthier, Montanari & Zhou,
"Learning time-scales in two-layers neural networks", FoCM 2024 (arXiv:2303.00055), Sec. 6:
the exact phase 0 (t_0 ∝ ε), the phase-1 scalar ODE (t_1 ≍ √ε log(1/ε)), the plateau exit
times of the full particle flow, and the fit of log t against log ε.

Every function takes a `SingleIndexMeanField` and compiles once per shape (module-level
`eqx.filter_jit`; the vector field and save functions are module-level, the theory is an
argument): repeated calls on same-shaped theories do not re-trace, and all work under jit/vmap.
Times are on the flow's clock t = τ / `time_scale` (τ: the paper's first-layer time).
"""

import math

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from ..._custom_types import Times
from ..._flow.divergence import diverged
from ..._flow.solve import flow_controller, integrate
from ..._flow.solvers import resolve_solver
from ..._validate import check_float_array, check_integer, message

#: Gauss–Legendre nodes for the phase-1 time integral (smooth integrand: exact to round-off).
_LEGENDRE_NODES = 64
#: Bisection steps for a crossing inside one solver step (2^-60 of the step: round-off).
_BISECTIONS = 60


# -- phase 0: exact ---------------------------------------------------------------------------
def phase_zero_risk(theory, ts: Times) -> Float[Array, " T"]:
    """Exact phase 0 at s = 0: r_0(τ) = r_0(0) e^{−σ_0² τ/ε}, so
    R = R(0) − ½ r_0(0)²(1 − e^{−2σ_0² τ/ε}), at flow times `ts` (T,) (τ = time_scale·t)."""
    theory.need_coefficient(0, "phase 0 (r_0 decays at rate σ_0²/ε)")
    return _phase_zero_risk(theory, jnp.asarray(ts))


@eqx.filter_jit
def _phase_zero_risk(theory, ts):
    r0 = theory.residuals(theory.initial_state())[0]
    tau = theory.time_scale * ts
    decay = -jnp.expm1(-2.0 * theory.activation_coefficients[0] ** 2 * tau / theory.eps)
    return theory.initial_risk() - 0.5 * r0**2 * decay


def phase_zero_time(theory) -> Float[Array, ""]:
    """t_0 = ε ln√2 / (σ_0² · time_scale): the exact phase-0 risk crosses (R(0) + P_0)/2."""
    theory.need_coefficient(0, "phase 0 (r_0 decays at rate σ_0²/ε)")
    return theory.eps * 0.5 * math.log(2.0) / (theory.activation_coefficients[0] ** 2 * theory.time_scale)


# -- phase 1: the scalar ODE dθ/dτ = σ_1 (φ_1 − σ_1 M_1)/√ε ------------------------------------------
def _phase_one_constants(theory):
    theory.need_coefficient(1, "phase 1 (dθ/dt = σ_1 r_1/√ε)")
    c = 0.5 * jnp.sqrt(theory.eps) * jnp.var(theory.a0)
    return theory.activation_coefficients[1], theory.target_coefficients[1], c


def _phase_one_field(tau, theta, args):
    sig1, phi1, c, root_eps = args
    return sig1 * (phi1 - sig1 * c * jnp.sinh(2.0 * theta)) / root_eps


def _save_theta(tau, theta, args):
    return {"theta": theta}


def phase_one_angle(theory, ts: Times, **kwargs) -> Float[Array, " T"]:
    """θ at flow times `ts` (T,) of the phase-1 scalar ODE dθ/dτ = σ_1(φ_1 − σ_1 M_1)/√ε with
    M_1 = ½√ε Var(a(0)) sinh 2θ, θ(0) = 0: phase 1 linearised about s = 0 (a_i = ā + α_i cosh θ,
    s_i = √ε α_i sinh θ), leading order in ε, degrees ≥ 2 ignored. kwargs as `solve_flow`."""
    sig1, phi1, c = _phase_one_constants(theory)
    taus = theory.time_scale * jnp.asarray(ts)
    args = (sig1, phi1, c, jnp.sqrt(theory.eps))
    sol = integrate(_phase_one_field, jnp.zeros((), taus.dtype), args, 0.0, taus[-1], ts=taus,
                    save=_save_theta, **kwargs)
    return sol.observables["theta"]


def phase_one_time(theory) -> Float[Array, ""]:
    """t_1 of the phase-1 scalar ODE: σ_1 M_1 = φ_1 (1 − 1/√2), where R ≈ P_1 + ½ r_1² crosses
    (P_0 + P_1)/2; τ_1 = √ε ∫_0^{θ*} dθ / (σ_1(φ_1 − σ_1 c sinh 2θ)) by Gauss–Legendre
    quadrature (smooth integrand on [0, θ*]); returns τ_1 / time_scale."""
    return _phase_one_time(*_phase_one_constants(theory), theory.eps, theory.time_scale)


@eqx.filter_jit
def _phase_one_time(sig1, phi1, c, eps, time_scale):
    target = phi1 * (1.0 - 1.0 / math.sqrt(2.0)) / sig1
    theta_star = 0.5 * jnp.arcsinh(target / c)
    x, w = np.polynomial.legendre.leggauss(_LEGENDRE_NODES)
    theta = 0.5 * theta_star * (jnp.asarray(x) + 1.0)
    integrand = 1.0 / (sig1 * (phi1 - sig1 * c * jnp.sinh(2.0 * theta)))
    return jnp.sqrt(eps) * 0.5 * theta_star * jnp.sum(jnp.asarray(w) * integrand) / time_scale


# -- plateau exits of the particle flow -------------------------------------------------------------
class ExitTimes(eqx.Module):
    """The plateau exit times of `exit_times`, with the solve's result code.

    - `times` (L,): t_l on the flow's clock; `inf` only when the solve succeeded and the risk
      did not reach the level by `t1`; `nan` when the level has no exit (P_{l−1} = P_l) or the
      solve failed before reaching it (see `result`).
    - `thresholds` (L,): the risk levels (P_{l−1} + P_l)/2 (`exit_thresholds`).
    - `result`: diffrax `RESULTS` (successful, or why the solve stopped early).
    - `t_final`: where the solve stopped (flow clock); `num_steps`: the solver's steps.
    """

    times: Float[Array, " L"]
    thresholds: Float[Array, " L"]
    result: diffrax.RESULTS
    t_final: Float[Array, ""]
    num_steps: Int[Array, ""]

    @property
    def succeeded(self):
        """True when the solve reached `t1` or the last level."""
        return self.result == diffrax.RESULTS.successful


_EXIT_FAILED = (
    "`exit_times`: the reduced-flow solve stopped before `t1` ({why}), so the exit times after "
    "that point are unknown (not 'never reached'). Fixes: {fix} Pass `throw=False` to get "
    "`ExitTimes.result` and the times found before the failure."
)
_EXIT_MESSAGES = (
    _EXIT_FAILED.format(why="`max_steps` reached", fix="raise `max_steps`, or for small ε use an implicit "
                        "solver (the default `diffrax.Kvaerno5()`): phase 0 relaxes at rate σ_0²/ε."),
    _EXIT_FAILED.format(why="the state became non-finite or the step size collapsed", fix="use an implicit "
                        "solver (the default `diffrax.Kvaerno5()`) or a small first step `dt0` ≲ ε/σ_0²: an "
                        "explicit first step across the stiff phase 0 (rate σ_0²/ε) overflows."),
    _EXIT_FAILED.format(why="the solver failed", fix="tighten `rtol`/`atol` or change `solver`."),
)


def exit_times(theory, t1: float | Float[Array, ""], degrees: int = 2, *, solver=None,
               rtol: float | Float[Array, ""] = 1e-9, atol: float | Float[Array, ""] = 1e-12,
               max_steps: int = 100_000, dt0: float | Float[Array, ""] | None = None,
               throw: bool = True) -> ExitTimes:
    """Plateau exit times t_l, l = 0..`degrees`−1: the first flow time the risk crosses
    `exit_thresholds()[l]`, up to flow time `t1`.

    One solve of the particle flow (stopped once the lowest level is crossed) saves R and
    dR/dτ (the energy identity) after every accepted step; each crossing is then the root of
    the cubic Hermite interpolant of R on its step (the accuracy of diffrax's dense output and
    events). The risk decreases monotonically, so each level is crossed once. Default solver:
    `diffrax.Kvaerno5()` (phase 0 is stiff at rate σ_0²/ε). A failed solve raises a named error
    (`throw=True`) or is reported in `ExitTimes.result` (`throw=False`); it never reads as "not
    reached". Compiled once per (theory shape, degrees, solver, max_steps, throw); works under
    jit/vmap (e.g. over ε)."""
    if not isinstance(degrees, int) or isinstance(degrees, bool) or not 1 <= degrees <= theory.degree + 1:
        raise ValueError(message("degrees", f"be an integer in [1, {theory.degree + 1}]", repr(degrees)))
    max_steps = check_integer("max_steps", max_steps, minimum=1)
    solver = resolve_solver(diffrax.Kvaerno5() if solver is None else solver, atol)
    dtype = theory.a0.dtype
    t1 = check_float_array("t1", jnp.asarray(t1, dtype), ndim=0)
    tols = jnp.asarray(rtol, dtype), jnp.asarray(atol, dtype)
    dt0 = None if dt0 is None else jnp.asarray(dt0, dtype)
    return _exit_times(theory, t1, tols, dt0, degrees, solver, max_steps, bool(throw))


def _field(tau, state, args):
    return args[0].vector_field(tau, state, None)


def _risk_and_rate(tau, state, args):
    theory = args[0]
    return jnp.stack([theory.risk(state), theory.energy_dissipation(state)])


def _below_lowest_level(tau, state, args, **kwargs):
    theory, lowest = args
    return theory.risk(state) <= lowest


@eqx.filter_jit
def _exit_times(theory, t1, tols, dt0, degrees, solver, max_steps, throw):
    levels = theory.exit_thresholds()[:degrees]
    plateaus = theory.plateaus()
    before = jnp.concatenate([theory.initial_risk()[None], plateaus[:-1]])[:degrees]
    exists = before > plateaus[:degrees]
    lowest = jnp.where(jnp.any(exists), jnp.min(jnp.where(exists, levels, jnp.inf)), jnp.inf)
    tau1 = theory.time_scale * t1
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(_field), solver, jnp.zeros_like(tau1), tau1, dt0, theory.initial_state(), (theory, lowest),
        saveat=diffrax.SaveAt(t0=True, steps=True, fn=_risk_and_rate),
        stepsize_controller=flow_controller(*tols), event=diffrax.Event(_below_lowest_level),
        max_steps=max_steps, throw=False,
    )
    result = diffrax.RESULTS.where(sol.result == diffrax.RESULTS.event_occurred, diffrax.RESULTS.successful,
                                   sol.result)
    ok = result == diffrax.RESULTS.successful
    taus, risk, rate = sol.ts, sol.ys[:, 0], sol.ys[:, 1]  # (S,), inf after the last step
    below = risk[None, :] <= levels[:, None]  # (L, S)
    reached = jnp.any(below, axis=1)
    j = jnp.argmax(below, axis=1)  # the first step ending below each level
    i = jnp.maximum(j - 1, 0)
    tau = _hermite_root(taus[i], taus[j], risk[i], risk[j], rate[i], rate[j], levels)
    times = jnp.where(reached, tau / theory.time_scale, jnp.where(ok, jnp.inf, jnp.nan))
    times = jnp.where(exists, times, jnp.nan)
    if throw:
        failed = ~ok
        which = jnp.where(sol.result == diffrax.RESULTS.max_steps_reached, 0, jnp.where(diverged(sol.result), 1, 2))
        times = eqx.branched_error_if(times, failed, which, _EXIT_MESSAGES)
    t_final = jnp.max(jnp.where(jnp.isfinite(taus), taus, 0.0)) / theory.time_scale
    return ExitTimes(times, levels, result, t_final, sol.stats["num_steps"])


def _hermite_root(ta, tb, ra, rb, da, db, level):
    """θ-bisection of the cubic Hermite interpolant of R on [ta, tb] (values r, slopes d) for
    R = level (R(ta) > level ≥ R(tb)); returns the crossing τ (ta when the step is empty)."""
    h = tb - ta
    safe = jnp.where(h > 0, h, 0.0)

    def cubic(x):
        x2, x3 = x * x, x * x * x
        return ((2 * x3 - 3 * x2 + 1) * ra + (x3 - 2 * x2 + x) * safe * da + (-2 * x3 + 3 * x2) * rb
                + (x3 - x2) * safe * db) - level

    def bisect(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        above = cubic(mid) > 0
        return jnp.where(above, mid, lo), jnp.where(above, hi, mid)

    lo, hi = jax.lax.fori_loop(0, _BISECTIONS, bisect, (jnp.zeros_like(level), jnp.ones_like(level)))
    return ta + 0.5 * (lo + hi) * safe


# -- fits -----------------------------------------------------------------------------------------
def fit_time_scale(eps: Float[Array, " E"], times: Float[Array, " E"]) -> dict[str, Float[Array, ""]]:
    """Least-squares fit log t = slope · log ε + intercept over E ≥ 3 points; returns {"slope",
    "slope_stderr", "intercept"} (standard error from the residual variance, E − 2 degrees of
    freedom). Works for any power law t ∝ ε^slope (the paper's t_0 ∝ ε, t_1 ≍ √ε log(1/ε))."""
    x = jnp.log(jnp.asarray(eps))
    y = jnp.log(jnp.asarray(times))
    if x.shape != y.shape or x.ndim != 1 or x.shape[0] < 3:
        raise ValueError(message("times", "have the shape of eps, (E,) with E ≥ 3", f"shapes {x.shape}, {y.shape}"))
    xc = x - jnp.mean(x)
    slope = jnp.sum(xc * (y - jnp.mean(y))) / jnp.sum(xc**2)
    intercept = jnp.mean(y) - slope * jnp.mean(x)
    resid = y - (slope * x + intercept)
    stderr = jnp.sqrt(jnp.sum(resid**2) / (x.shape[0] - 2) / jnp.sum(xc**2))
    return {"slope": slope, "slope_stderr": stderr, "intercept": intercept}
