"""`MeanFieldHingeFiniteP`: the exact finite-P mean-field solution (γ piecewise linear in τ)."""

from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..._custom_types import Observables, Times
from ..._validate import check_float_array, is_concrete, message, regime_error
from ..base import AbstractTheory
from ._checks import check_pb_flow, seed_moments
from .closure import node_paths, output_slope, saturation_gamma
from .observables import NODE_OBSERVABLES
from .setup import GAINS, check_margin, gain


class MeanFieldHingeFiniteP(AbstractTheory):
    """The exact finite-P mean-field solution: γ(τ) piecewise linear.

    ??? cite "Reference"
        F. Pellegrini and G. Biroli, "An analytic theory of shallow networks dynamics for hinge
        loss classification", NeurIPS 2020 (arXiv:2006.11209), §3.

    With margins p_μ = y_μ x∥_μ > 0 (P samples), the drive c_P(γ) = (1/P) Σ_{μ unsatisfied} p_μ
    is constant between the crossings γ_μ (F(γ_μ) p_μ = h); τ(γ) is their cumulative sum. Exact
    at any M when the data are closed under x → −x, x⊥ → −x⊥ and the nodes under
    (a, w) → (−a, −w), w⊥ → −w⊥ (then f = F(γ) x∥ exactly); the M → ∞ limit otherwise (with
    C0 = 0, S0 = 1). Theory clock τ = α t / M (`time_scale` = α·flow.time_scale/M). Observables
    as `MeanFieldHinge` (`gamma`, `F`, `unsatisfied_fraction` counting samples, `loss`, `a`,
    `w_par` (T, M)).
    """

    time_scale: Float[Array, ""]
    alpha: Float[Array, ""]
    margin: Float[Array, ""]
    gain: Float[Array, ""]
    C0: Float[Array, ""]
    S0: Float[Array, ""]
    a0: Float[Array, " M"]
    w_par0: Float[Array, " M"]
    margins_sorted: Float[Array, " P"]
    gamma_nodes: Float[Array, " P1"]
    tau_nodes: Float[Array, " P1"]
    observables: ClassVar[dict] = NODE_OBSERVABLES

    def __init__(self, projections: Float[Array, " P"], *, d: int, alpha=1.0, margin=1.0, activation: str = "relu",
                 C0=0.0, S0=1.0, a0=None, w_par0=None, time_scale=1.0):
        check_margin(margin)
        p = check_float_array("projections", projections, ndim=1)
        separable = ("MeanFieldHingeFiniteP", "linearly separable labels (every y_μ ŵ*·x_μ > 0)")
        if is_concrete(p):
            bad = int(np.sum(np.asarray(p) <= 0))
            if bad:
                raise regime_error(*separable, f"{bad} of {p.shape[0]} margins are ≤ 0")
        else:
            p = eqx.error_if(p, jnp.any(p <= 0), str(regime_error(*separable, "some margins are ≤ 0")))
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
        p = jnp.sort(p)[::-1]  # largest margins are satisfied first
        g = saturation_gamma(self.alpha, self.gain, self.margin, self.C0, self.S0, p)
        # drive on segment k (from γ_(k−1) to γ_(k)): samples k.. still active.
        active_sum = jnp.cumsum(p[::-1])[::-1] / p.shape[0]
        dtau = jnp.diff(jnp.concatenate([jnp.zeros(1), g])) / (self.gain * active_sum)
        self.margins_sorted = p
        self.gamma_nodes = jnp.concatenate([jnp.zeros(1), g])
        self.tau_nodes = jnp.concatenate([jnp.zeros(1), jnp.cumsum(dtau)])

    @classmethod
    def from_flow(cls, flow, teacher: Float[Array, " d"] | None = None, *,
                  moments="empirical") -> "MeanFieldHingeFiniteP":
        """Seed from the network at t = 0 and the training margins y_μ ŵ*·x_μ (`teacher` and
        `moments` as in `MeanFieldHinge.from_flow`; "empirical" makes the exact case exact)."""
        model, h, teacher, act, time_scale = check_pb_flow("MeanFieldHingeFiniteP", flow, teacher)
        a0, w_par0 = model.a[0], model.w @ teacher
        C0, S0 = seed_moments("MeanFieldHingeFiniteP", moments, a0, w_par0)
        proj = flow.data.y[:, 0] * (flow.data.x @ teacher)
        return cls(proj, d=model.d, alpha=model.alpha, margin=h, activation=act, C0=C0, S0=S0,
                   a0=a0, w_par0=w_par0, time_scale=time_scale)

    @property
    def crossing_times(self) -> Float[Array, " P"]:
        """τ at which each sample (largest margin first) is satisfied: the kinks of the flow."""
        return self.tau_nodes[1:]

    def gamma(self, tau: Times) -> Float[Array, " T"]:
        """γ at theory times τ (piecewise-linear interpolation, exact)."""
        return jnp.interp(jnp.asarray(tau), self.tau_nodes, self.gamma_nodes)

    def F(self, gamma):
        """f(x) = F(γ) x∥: F = αλ (C0 cosh 2γ + S0 sinh 2γ)."""
        return output_slope(self.alpha, self.gain, self.C0, self.S0, gamma)

    def observables_at(self, tau: Times, **solver_options) -> Observables:
        gamma = self.gamma(tau)
        F = self.F(gamma)
        p = self.margins_sorted
        active = F[:, None] * p[None, :] < self.margin
        u = jnp.mean(active.astype(F.dtype), axis=-1)
        loss = jnp.mean(jnp.where(active, self.margin - F[:, None] * p[None, :], 0.0), axis=-1)
        return {"gamma": gamma, "F": F, "unsatisfied_fraction": u, "loss": loss,
                **node_paths(self.a0[None, :], self.w_par0[None, :], gamma[:, None])}


def frozen_dataset_gamma(margins: Float[Array, " P"], tau: Float[Array, "*T"], *, d: int,
                         activation: str = "relu") -> Float[Array, "*T"]:
    """Negative control: γ = λ⟨|x∥|⟩τ, as if every sample stayed active forever (never right)."""
    if activation not in GAINS:
        raise ValueError(message("activation", f"be one of {tuple(GAINS)}", repr(activation)))
    return gain(activation, d) * jnp.mean(jnp.abs(margins)) * jnp.asarray(tau)
