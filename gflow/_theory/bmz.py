"""Berthier–Montanari–Zhou 2023: the reduced (d-independent, mean-field) particle flow of a
two-layer network on single-index data, its plateaus and its learning time scales."""

import math

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
from jaxtyping import Array, Float

from .._custom_types import Observables, Times
from .._data.single_index import SingleIndex, power_series, powers, quantile_weights, warn_if_unlearnable
from .._flow.solve import integrate
from .._validate import check_float_array, check_positive, is_concrete, message, check_unpadded, regime_error
from .base import AbstractReducedODE

#: Gauss–Legendre nodes for the phase-1 time integral (smooth integrand: exact to round-off).
_LEGENDRE_NODES = 64


class SingleIndexMeanField(AbstractReducedODE):
    """The reduced particle flow of Berthier, Montanari & Zhou (d → ∞, then m → ∞).

    ??? cite "Reference"
        Berthier, Montanari & Zhou, "Learning time-scales in two-layers neural networks",
        Foundations of Computational Mathematics 2024 (arXiv:2303.00055), Eqs. (5)–(6), (23), (38).

    State: N particles (a_i, s_i), s_i = ⟨w_i, u*⟩, arrays `a` (N,) and `s` (N,). With
    M_k = (1/N) Σ_j a_j s_j^k, r_k = φ_k − σ_k M_k, ψ(s) = Σ_k σ_k r_k s^k:

        ε ȧ_i = ψ(s_i),    ṡ_i = (1 − s_i²) a_i ψ'(s_i),

    risk R = ½ Σ_k r_k² + ½(‖φ‖² − Σ_{k≤K} φ_k²). Time t is first-layer time (the network's
    flow with rate m on W and m/ε on a, `gflow.layer_rates`). Observables: "loss" (R),
    "order_parameters" (M_0..M_K). Network vs this flow: O(1/m) + O(1/√(εd)) (bmz.md §2).

    Stiffness: phase 0 relaxes at rate σ_0²/ε. Explicit Tsit5 is fine for ε ≳ 1e-2; for
    ε ≤ 1e-3 pass `solver=diffrax.Kvaerno5()` (L-stable ESDIRK, the default of `exit_times`).
    Fields are arrays: the theory jits and vmaps (e.g. over ε).
    """

    activation_coefficients: Float[Array, " K"]
    target_coefficients: Float[Array, " K"]
    target_norm2: Float[Array, ""]
    eps: Float[Array, ""]
    a0: Float[Array, " N"]
    s0: Float[Array, " N"]

    def __init__(self, activation_coefficients, target_coefficients, eps, a0, *, s0=None, target_norm2=None):
        sig = check_float_array("activation_coefficients", activation_coefficients, ndim=1)
        phi = check_float_array("target_coefficients", target_coefficients, ndim=1)
        if sig.shape != phi.shape:
            raise ValueError(message("target_coefficients", f"have the shape of activation_coefficients {sig.shape}",
                                     f"shape {phi.shape}"))
        a0 = check_float_array("a0", a0, ndim=1)
        s0 = jnp.zeros_like(a0) if s0 is None else check_float_array("s0", s0, ndim=1)
        if s0.shape != a0.shape:
            raise ValueError(message("s0", f"have the shape of a0 {a0.shape}", f"shape {s0.shape}"))
        eps = check_positive("eps", jnp.asarray(eps, a0.dtype) if is_concrete(eps) else eps)
        warn_if_unlearnable(sig, phi)
        self.activation_coefficients = sig
        self.target_coefficients = phi
        self.target_norm2 = jnp.sum(phi**2) if target_norm2 is None else jnp.asarray(target_norm2, phi.dtype)
        self.eps = jnp.asarray(eps, a0.dtype)
        self.a0 = a0
        self.s0 = s0

    @classmethod
    def from_data(cls, data: SingleIndex, eps, num_particles: int = 256, *, a0=None) -> "SingleIndexMeanField":
        """Theory for `data` with a(0) at the Unif[−1, 1] quantiles (or `a0`) and s(0) = 0."""
        if not isinstance(data, SingleIndex):
            raise TypeError(message("data", "be a gflow.SingleIndex", type(data).__name__))
        dtype = data.u_star.dtype
        a0 = quantile_weights(num_particles, dtype) if a0 is None else a0
        return cls(data.activation_coefficients, data.target_coefficients, eps, a0, target_norm2=data.target_norm2)

    @classmethod
    def from_flow(cls, flow, eps) -> "SingleIndexMeanField":
        """Particles (a_i, s_i) of the network at t = 0 (needs mean-field scaling with α = 1)."""
        check_unpadded("SingleIndexMeanField", flow)
        model, data = flow.model0, flow.data
        if not isinstance(data, SingleIndex):
            raise TypeError(message("flow.data", "be a gflow.SingleIndex", type(data).__name__))
        if not math.isclose(model.output_scale * model.width, 1.0):
            raise regime_error("SingleIndexMeanField", "f = (1/m) Σ a_i σ(·) (scaling='mean_field', alpha=1)",
                               f"got output scale {model.output_scale} at m = {model.width}")
        return cls(data.activation_coefficients, data.target_coefficients, eps, model.a[0],
                   s0=data.alignments(model), target_norm2=data.target_norm2)

    # -- the flow ------------------------------------------------------------------------------
    @property
    def degree(self) -> int:
        return self.target_coefficients.shape[-1] - 1

    def order_parameters(self, state) -> Float[Array, " K"]:
        """M_k = (1/N) Σ a_i s_i^k, k = 0..K."""
        a, s = state
        return jnp.mean(a[:, None] * powers(s, self.degree), axis=0)

    def residuals(self, state) -> Float[Array, " K"]:
        """r_k = φ_k − σ_k M_k."""
        return self.target_coefficients - self.activation_coefficients * self.order_parameters(state)

    def risk(self, state) -> Float[Array, ""]:
        """R = ½ Σ_k r_k² + the tail ½(‖φ‖² − Σ_{k≤K} φ_k²)."""
        r = self.residuals(state)
        return 0.5 * jnp.sum(r**2) + 0.5 * (self.target_norm2 - jnp.sum(self.target_coefficients**2))

    def _psi(self, state):
        _, s = state
        c = self.activation_coefficients * self.residuals(state)
        k = jnp.arange(1, self.degree + 1, dtype=c.dtype)
        return power_series(c, s), power_series(c[1:] * k, s)

    def initial_state(self):
        return (self.a0, self.s0)

    def vector_field(self, t, state, args):
        a, s = state
        psi, dpsi = self._psi(state)
        return (psi / self.eps, (1.0 - s**2) * a * dpsi)

    def observables(self, t, state) -> Observables:
        return {"loss": self.risk(state), "order_parameters": self.order_parameters(state)}

    def energy_dissipation(self, state) -> Float[Array, ""]:
        """dR/dt = −E[ψ(s)²]/ε − E[(1 − s²) a² ψ'(s)²] ≤ 0 (the energy identity, bmz.md §2)."""
        a, s = state
        psi, dpsi = self._psi(state)
        return -jnp.mean(psi**2) / self.eps - jnp.mean((1.0 - s**2) * a**2 * dpsi**2)

    # -- plateaus and time scales ------------------------------------------------------------
    def initial_risk(self) -> Float[Array, ""]:
        return self.risk(self.initial_state())

    def plateaus(self) -> Float[Array, " K"]:
        """P_l = ½ Σ_{k>l} φ_k² + ½ Σ_{k≤l, σ_k=0} φ_k² + tail, l = 0..K (risk after degree l)."""
        phi2 = self.target_coefficients**2
        lost = jnp.where(self.activation_coefficients == 0, phi2, 0.0)
        tail = self.target_norm2 - jnp.sum(phi2)
        after = jnp.sum(phi2) - jnp.cumsum(phi2)
        return 0.5 * (after + jnp.cumsum(lost) + tail)

    def exit_thresholds(self) -> Float[Array, " K"]:
        """Midpoints (P_{l−1} + P_l)/2, with P_{−1} = R(0): the risk level whose crossing defines t_l."""
        p = self.plateaus()
        before = jnp.concatenate([self.initial_risk()[None], p[:-1]])
        return 0.5 * (before + p)

    def phase_zero_risk(self, ts: Times) -> Float[Array, " T"]:
        """Exact phase 0 at s = 0: r_0(t) = r_0(0) e^{−σ_0² t/ε}, R = R(0) − ½ r_0(0)²(1 − e^{−2σ_0²t/ε})."""
        self._need_coefficient(0, "phase 0 (r_0 decays at rate σ_0²/ε)")
        r0 = self.residuals(self.initial_state())[0]
        decay = -jnp.expm1(-2.0 * self.activation_coefficients[0] ** 2 * jnp.asarray(ts) / self.eps)
        return self.initial_risk() - 0.5 * r0**2 * decay

    def phase_zero_time(self) -> Float[Array, ""]:
        """t_0 = ε ln√2 / σ_0²: the exact phase-0 risk crosses the midpoint between R(0) and P_0."""
        self._need_coefficient(0, "phase 0 (r_0 decays at rate σ_0²/ε)")
        return self.eps * 0.5 * math.log(2.0) / self.activation_coefficients[0] ** 2

    def _phase_one_constants(self):
        self._need_coefficient(1, "phase 1 (dθ/dt = σ_1 r_1/√ε)")
        variance = jnp.var(self.a0)
        return self.activation_coefficients[1], self.target_coefficients[1], 0.5 * jnp.sqrt(self.eps) * variance

    def phase_one_angle(self, ts: Times, **kwargs) -> Float[Array, " T"]:
        """θ(t) of the phase-1 scalar ODE dθ/dt = σ_1(φ_1 − σ_1 M_1)/√ε, M_1 = ½√ε Var(a(0)) sinh 2θ,
        θ(0) = 0 (bmz.md §3; leading order in ε, ignores s̄ and degrees ≥ 2). kwargs as `solve_flow`."""
        sig1, phi1, c = self._phase_one_constants()
        root_eps = jnp.sqrt(self.eps)
        ts = jnp.asarray(ts)

        def field(t, theta, args):
            return sig1 * (phi1 - sig1 * c * jnp.sinh(2.0 * theta)) / root_eps

        sol = integrate(field, jnp.zeros((), ts.dtype), None, 0.0, ts[-1], ts=ts,
                        save=lambda t, y, args: {"theta": y}, **kwargs)
        return sol.observables["theta"]

    def phase_one_time(self) -> Float[Array, ""]:
        """t_1 of the phase-1 scalar ODE: the time at which R ≈ P_1 + ½ r_1² crosses (P_0 + P_1)/2,
        i.e. σ_1 M_1 = φ_1 (1 − 1/√2); t_1 = √ε ∫_0^{θ*} dθ / (σ_1(φ_1 − σ_1 c sinh 2θ)), by
        Gauss–Legendre quadrature (the integrand is smooth on [0, θ*])."""
        sig1, phi1, c = self._phase_one_constants()
        target = phi1 * (1.0 - 1.0 / math.sqrt(2.0)) / sig1
        theta_star = 0.5 * jnp.arcsinh(target / c)
        x, w = np.polynomial.legendre.leggauss(_LEGENDRE_NODES)
        theta = 0.5 * theta_star * (jnp.asarray(x) + 1.0)
        integrand = 1.0 / (sig1 * (phi1 - sig1 * c * jnp.sinh(2.0 * theta)))
        return jnp.sqrt(self.eps) * 0.5 * theta_star * jnp.sum(jnp.asarray(w) * integrand)

    def _need_coefficient(self, k, phase):
        for name, coeffs in (("σ", self.activation_coefficients), ("φ", self.target_coefficients)):
            if self.degree < k:
                raise regime_error("SingleIndexMeanField", f"Hermite degree ≥ {k} for {phase}",
                                   f"got degree {self.degree}")
            if is_concrete(coeffs) and float(coeffs[k]) == 0.0:
                raise regime_error("SingleIndexMeanField", f"{name}_{k} ≠ 0 for {phase}",
                                   f"got {name}_{k} = 0", "That phase does not happen for this activation/target.")

    def exit_times(self, t1, degrees: int = 2, *, solver=None, rtol: float = 1e-9, atol: float = 1e-12,
                   max_steps: int = 100_000) -> Float[Array, " L"]:
        """t_l for l = 0..`degrees`−1: the first time the risk crosses `exit_thresholds()[l]`, found by
        diffrax events (exact crossing by Newton root-finding), one event per degree, chained in a
        `lax.scan` (one compile). `inf` if not reached by `t1`; `nan` if P_{l−1} = P_l (no exit to
        detect). The risk decreases monotonically (energy identity), so the crossings come in order.
        Default solver: Kvaerno5 (phase 0 is stiff). Works under jit/vmap (e.g. over ε)."""
        if not isinstance(degrees, int) or not 1 <= degrees <= self.degree + 1:
            raise ValueError(message("degrees", f"be an integer in [1, {self.degree + 1}]", repr(degrees)))
        solver = diffrax.Kvaerno5() if solver is None else solver
        thresholds = self.exit_thresholds()[:degrees]
        plateaus = self.plateaus()
        before = jnp.concatenate([self.initial_risk()[None], plateaus[:-1]])[:degrees]
        t1 = jnp.asarray(t1, self.a0.dtype)

        def step(carry, threshold):
            t0, state, done = carry

            def cond(t, y, args, **kwargs):
                return self.risk(y) - threshold

            event = diffrax.Event(cond, root_finder=optx.Newton(rtol=rtol, atol=atol))
            sol = integrate(self.vector_field, state, None, t0, t1, ts=jnp.stack([t1]),
                            save=lambda t, y, args: {"loss": self.risk(y)}, solver=solver, rtol=rtol, atol=atol,
                            event=event, throw=False, max_steps=max_steps)
            fired = jnp.isfinite(sol.event_time) & ~done
            t_exit = jnp.where(fired, sol.event_time, jnp.inf)
            return (jnp.where(fired, sol.t_final, t0), sol.params_final, done | ~fired), t_exit

        init = (jnp.zeros((), t1.dtype), self.initial_state(), jnp.zeros((), bool))
        _, times = jax.lax.scan(step, init, thresholds)
        return jnp.where(before > plateaus[:degrees], times, jnp.nan)


def fit_time_scale(eps: Float[Array, " E"], times: Float[Array, " E"]) -> dict[str, Float[Array, ""]]:
    """Least-squares fit log t = slope · log ε + intercept; returns {"slope", "slope_stderr",
    "intercept"} (standard error from the residual variance, E − 2 degrees of freedom; needs E ≥ 3)."""
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
