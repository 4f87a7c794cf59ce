"""`MeanFieldHinge`: the explicit mean-field solution for separable Gaussian data at P = ∞."""

import math
import warnings
from typing import ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ..._custom_types import Observables
from ..._validate import check_float_array, is_concrete, message
from ..base import AbstractReducedODE
from ._checks import check_pb_flow, seed_moments
from .closure import node_paths, output_slope, saturation_gamma
from .observables import NODE_OBSERVABLES
from .setup import SQRT_2_OVER_PI, check_margin, gain


class MeanFieldHinge(AbstractReducedODE):
    """Explicit mean-field solution for separable Gaussian data, P = ∞.

    ??? cite "Reference"
        F. Pellegrini and G. Biroli, "An analytic theory of shallow networks dynamics for hinge
        loss classification", NeurIPS 2020 (arXiv:2006.11209), §3 and Fig. 1.

    State γ(τ) on the mean-field clock τ = α t / M (`time_scale` = α·flow.time_scale/M, 1 for
    `mean_field_hinge_flow`). Closure: F(γ) = αλ (C0 cosh 2γ + S0 sinh 2γ), x_c = h/F,
    dγ/dτ = λ c(x_c), c(x) = √(2/π)(1 − e^{−x²/2}), γ(0) = 0. Every node:
    a_i = a_i(0) cosh γ + w∥_i(0) sinh γ, w∥_i = w∥_i(0) cosh γ + a_i(0) sinh γ, w⊥_i frozen.
    Readout: `gamma`, `F`, `x_c`, `unsatisfied_fraction` = erf(x_c/√2), `loss` = h u − F c,
    `a` (T, M), `w_par` (T, M) (M = 0 when no nodes are given).
    Assumes x ~ N(0, I_d), noiseless teacher labels, M, P → ∞ and S0 + C0 > 0; for a finite
    sample use `MeanFieldHingeFiniteP`. The rich/lazy knob is `knob` = αλS0/h.
    """

    time_scale: Float[Array, ""]
    alpha: Float[Array, ""]
    margin: Float[Array, ""]
    gain: Float[Array, ""]
    C0: Float[Array, ""]
    S0: Float[Array, ""]
    a0: Float[Array, " M"]
    w_par0: Float[Array, " M"]
    observables: ClassVar[dict] = NODE_OBSERVABLES

    def __init__(self, *, d: int, alpha=1.0, margin=1.0, activation: str = "relu", C0=0.0, S0=1.0,
                 a0=None, w_par0=None, time_scale=1.0):
        check_margin(margin)
        self.gain = jnp.asarray(gain(activation, d), dtype=float)
        self.alpha = jnp.asarray(alpha, dtype=float)
        self.margin = jnp.asarray(margin, dtype=float)
        self.C0 = jnp.asarray(C0, dtype=float)
        self.S0 = jnp.asarray(S0, dtype=float)
        self.time_scale = jnp.asarray(time_scale, dtype=float)
        self.a0 = jnp.zeros(0) if a0 is None else check_float_array("a0", a0, ndim=1)
        self.w_par0 = jnp.zeros(0) if w_par0 is None else check_float_array("w_par0", w_par0, ndim=1)
        if self.a0.shape != self.w_par0.shape:
            raise ValueError(message("w_par0", f"have the shape of `a0` {self.a0.shape}", self.w_par0.shape))

    @classmethod
    def from_flow(cls, flow, teacher: Float[Array, " d"] | None = None, *, moments="empirical") -> "MeanFieldHinge":
        """Seed the node paths from the network at t = 0.

        - `teacher`: ŵ* (d,); default: the one the data records (`separable_gaussian`).
        - `moments`: what F(γ) is built from. "empirical" (default): the nodes' own C0 = ⟨a w∥⟩
          and S0 = ⟨a² + w∥²⟩/2 at t = 0, so F(0) = αλC0 is the network's initial slope. At
          finite M, C0 ≈ N(0, σ_a²σ_w²/M) ≠ 0: the prediction is conditioned on this population
          (removing the O(M^{-1/2}) moment fluctuation), and `late_time` and `tau_sat` account
          for C0. "population": C0 = 0, S0 = 1 (the paper's independent N(0, 1) initialisation,
          the M = ∞ theory). Or an explicit pair (C0, S0) with S0 > |C0|.
        Warns (`UserWarning`) when the training x∥ fail a Kolmogorov–Smirnov test for N(0, 1) at
        the 1% level, pointing to `MeanFieldHingeFiniteP`.
        """
        model, h, teacher, act, time_scale = check_pb_flow("MeanFieldHinge", flow, teacher)
        par = flow.data.x @ teacher
        if is_concrete(par):
            _ks_warning(np.asarray(par))
        a0, w_par0 = model.a[0], model.w @ teacher
        C0, S0 = seed_moments("MeanFieldHinge", moments, a0, w_par0)
        return cls(d=model.d, alpha=model.alpha, margin=h, activation=act, C0=C0, S0=S0, a0=a0, w_par0=w_par0,
                   time_scale=time_scale)

    @property
    def knob(self) -> Float[Array, ""]:
        """A = αλS0/h: ≫ 1 lazy (bulk fitted at γ ≈ 1/(2A)), ≪ 1 rich (γ ≈ ½ ln(2/A))."""
        return self.alpha * self.gain * self.S0 / self.margin

    @property
    def regime(self) -> str:
        """'lazy' (A > 10), 'rich' (A < 0.1) or 'crossover' (concrete values only); at late times
        the dynamics is always rich."""
        A = float(self.knob)
        return "lazy" if A > 10 else "rich" if A < 0.1 else "crossover"

    def F(self, gamma):
        """f(x) = F(γ) x∥: F = αλ (C0 cosh 2γ + S0 sinh 2γ)."""
        return output_slope(self.alpha, self.gain, self.C0, self.S0, gamma)

    def x_c(self, gamma):
        """Active-set boundary h/F (∞ while F ≤ 0: every sample unsatisfied)."""
        F = self.F(gamma)
        return jnp.where(F > 0, self.margin / jnp.where(F > 0, F, 1.0), jnp.inf)

    def drive(self, gamma):
        """c(x_c) = ⟨y x∥⟩_U = √(2/π)(1 − e^{−x_c²/2})."""
        return SQRT_2_OVER_PI * -jnp.expm1(-0.5 * self.x_c(gamma) ** 2)

    def initial_state(self):
        return jnp.zeros((), dtype=self.alpha.dtype)

    def vector_field(self, tau, gamma, args):
        return self.gain * self.drive(gamma)

    def readout(self, tau, gamma) -> Observables:
        F = self.F(gamma)
        xc = self.x_c(gamma)
        u = jnp.where(F > 0, jax.scipy.special.erf(xc / math.sqrt(2.0)), 1.0)
        loss = self.margin * u - F * self.drive(gamma)
        return {"gamma": gamma, "F": F, "x_c": xc, "unsatisfied_fraction": u, "loss": loss,
                **node_paths(self.a0, self.w_par0, gamma)}

    def observables_at(self, tau, **solver_options) -> Observables:
        # Defaults: explicit adaptive RK (Tsit5; the hinge makes the field piecewise smooth, step
        # rejection localises its kinks, an implicit solver gains nothing) at rtol 1e-10, atol
        # 1e-12 (the state is small, so a tight solve is cheap next to any simulation).
        solver_options = {"solver": diffrax.Tsit5(), "rtol": 1e-10, "atol": 1e-12, **solver_options}
        return super().observables_at(tau, **solver_options)

    def gamma_sat(self, p: Float[ArrayLike, "*P"]) -> Float[Array, "*P"]:
        """γ at which a sample with y x∥ = p > 0 is first satisfied (F(γ) p = h), 0 if it starts so."""
        return _gamma_sat(self, p)

    def tau_sat(self, p: Float[ArrayLike, "*P"], num_nodes: int = 96) -> Float[Array, "*P"]:
        """τ_sat(p) = ∫₀^{γ_p} dg / (λ c(h/F(g))) (theory clock τ) by Gauss–Legendre quadrature."""
        return _tau_sat(self, p, num_nodes)

    def late_time(self) -> dict[str, Float[Array, ""]]:
        """Late-time constants (x_c ≪ 1; theory clock τ): γ − ¼ ln τ → `gamma_offset`,
        u √τ → `u_sqrt_tau`, x_c² τ → `xc2_tau`, L √τ → `loss_sqrt_tau`; τ_sat(p) ≈ xc2_tau / p²
        for small p.

        With F ≈ ½αλ(S0 + C0) e^{2γ} and c ≈ x_c²/√(2π) (x_c ≪ 1), dγ/dτ ≈ λh²/(√(2π)F²) gives
        e^{4γ} ≈ 16h²τ / (√(2π) α² λ (S0 + C0)²): `gamma_offset` = ¼ ln(16h²/(√(2π)α²λ(S0 + C0)²))
        and x_c² τ → √(2π)/(4λ), independent of α, h and the initialisation.
        """
        return _late_time(self)


@eqx.filter_jit
def _gamma_sat(theory: MeanFieldHinge, p):
    return saturation_gamma(theory.alpha, theory.gain, theory.margin, theory.C0, theory.S0, p)


@eqx.filter_jit
def _tau_sat(theory: MeanFieldHinge, p, num_nodes: int):
    g = jnp.asarray(saturation_gamma(theory.alpha, theory.gain, theory.margin, theory.C0, theory.S0, p))
    nodes, weights = np.polynomial.legendre.leggauss(num_nodes)
    shape = (1,) * g.ndim + (num_nodes,)
    s = jnp.asarray(0.5 * (nodes + 1.0)).reshape(shape)
    integrand = 1.0 / (theory.gain * theory.drive(g[..., None] * s))
    return 0.5 * g * jnp.sum(jnp.asarray(weights).reshape(shape) * integrand, axis=-1)


@eqx.filter_jit
def _late_time(theory: MeanFieldHinge) -> dict[str, Float[Array, ""]]:
    lam, h = theory.gain, theory.margin
    xc2_tau = math.sqrt(2 * math.pi) / (4 * lam)
    late_scale = theory.S0 + theory.C0  # F ≈ ½ αλ (S0 + C0) e^{2γ}
    return {
        "gamma_offset": 0.25 * jnp.log(16 * h**2 / (math.sqrt(2 * math.pi) * theory.alpha**2 * lam * late_scale**2)),
        "xc2_tau": xc2_tau,
        "u_sqrt_tau": SQRT_2_OVER_PI * jnp.sqrt(xc2_tau),
        "loss_sqrt_tau": h * jnp.sqrt(xc2_tau) / math.sqrt(2 * math.pi),
    }


def _ks_warning(par: np.ndarray) -> None:
    """Warn when the projections x∥ fail a KS test for N(0, 1) at the 1% level."""
    p = np.sort(par)
    n = p.shape[0]
    cdf = 0.5 * (1.0 + np.vectorize(math.erf)(p / math.sqrt(2.0)))
    ks = max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n))
    if ks > 1.63 / math.sqrt(n):
        warnings.warn(
            f"MeanFieldHinge assumes Gaussian data x∥ ~ N(0, 1) (P = ∞); the training projections "
            f"fail a Kolmogorov–Smirnov test (D = {ks:.3f} > {1.63 / math.sqrt(n):.3f}). "
            "Use MeanFieldHingeFiniteP.from_flow for the exact finite-P solution.",
            UserWarning, stacklevel=3)
