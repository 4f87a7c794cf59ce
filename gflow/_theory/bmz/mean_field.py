"""The reduced (d-independent, mean-field) particle flow of Berthier, Montanari & Zhou,
"Learning time-scales in two-layers neural networks", FoCM 2024 (arXiv:2303.00055)."""

import math
from typing import ClassVar

import jax.numpy as jnp
from jaxtyping import Array, Float

from ..._custom_types import Observables, Times
from ..._flow.observables import loss
from ..._losses import squared_error
from ..._models.two_layer import TwoLayer
from ..._validate import check_float_array, check_positive, is_concrete, message, regime_error
from .._regime import check_flow
from ..base import AbstractReducedODE
from . import time_scales
from .hermite import power_series, powers, warn_if_unlearnable
from .observables import order_parameters
from .setup import SingleIndex, quantile_weights

_NAME = "SingleIndexMeanField"


class SingleIndexMeanField(AbstractReducedODE):
    """The reduced particle flow of Berthier, Montanari & Zhou (d → ∞, then m → ∞).

    ??? cite "Reference"
        Berthier, Montanari & Zhou, "Learning time-scales in two-layers neural networks",
        Foundations of Computational Mathematics 2024 (arXiv:2303.00055), Eqs. (5)–(6), (23), (38).

    State: N particles (a_i, s_i), s_i = ⟨w_i, u*⟩, arrays `a` (N,) and `s` (N,). With
    M_k = (1/N) Σ_j a_j s_j^k, r_k = φ_k − σ_k M_k, ψ(s) = Σ_k σ_k r_k s^k:

        ε da_i/dτ = ψ(s_i),    ds_i/dτ = (1 − s_i²) a_i ψ'(s_i),

    risk R = ½ Σ_k r_k² + ½(‖φ‖² − Σ_{k≤K} φ_k²) (Eq. (38)). The theory clock τ is the paper's
    first-layer time; a network flow with rates r_a on `a` and r_w on `w` and time scale κ
    (`gflow.bmz.layer_rates`: r_w = m, r_a = m/ε) has ε = r_w/r_a and τ = `time_scale`·t with
    `time_scale` = κ r_w/m. Observables (`SingleIndexMeanField.observables`): "loss" (R) and
    "order_parameters" (M_0..M_K), the network's being `gflow.bmz.order_parameters`. A width-m
    network differs from this flow by O(1/m) + O(1/√(εd)) (the particle form of the mean-field
    limit).

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
    time_scale: Float[Array, ""]
    observables: ClassVar[dict] = {"loss": loss, "order_parameters": order_parameters}

    def __init__(self, activation_coefficients, target_coefficients, eps, a0, *, s0=None, target_norm2=None,
                 time_scale=1.0):
        """σ_k = `activation_coefficients` (K+1,), φ_k = `target_coefficients` (K+1,), ε = `eps`,
        particles a(0) = `a0` (N,), s(0) = `s0` (default 0), ‖φ‖² = `target_norm2` (default
        Σ φ_k²), τ = `time_scale`·t."""
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
        time_scale = check_positive("time_scale", jnp.asarray(time_scale, a0.dtype)
                                    if is_concrete(time_scale) else time_scale)
        warn_if_unlearnable(sig, phi)
        self.activation_coefficients = sig
        self.target_coefficients = phi
        self.target_norm2 = jnp.sum(phi**2) if target_norm2 is None else jnp.asarray(target_norm2, phi.dtype)
        self.eps = jnp.asarray(eps, a0.dtype)
        self.a0 = a0
        self.s0 = s0
        self.time_scale = jnp.asarray(time_scale, a0.dtype)

    @classmethod
    def from_data(cls, data: SingleIndex, eps, num_particles: int = 256, *, a0=None) -> "SingleIndexMeanField":
        """The m → ∞ theory for `data`: `num_particles` particles with a(0) at the Unif[−1, 1]
        quantiles (or `a0`), s(0) = 0, on the paper's clock (time_scale 1)."""
        if not isinstance(data, SingleIndex):
            raise TypeError(message("data", "be a gflow.bmz.SingleIndex", type(data).__name__))
        a0 = quantile_weights(num_particles, data.u_star.dtype) if a0 is None else a0
        return cls(data.activation_coefficients, data.target_coefficients, eps, a0, target_norm2=data.target_norm2)

    @classmethod
    def from_flow(cls, flow) -> "SingleIndexMeanField":
        """The network's own m particles (a_i, s_i) at t = 0, with ε and `time_scale` read off
        the flow's layer rates and time scale (see the class docstring).

        Needs a `TwoLayer` with `sphere=True`, no bias and f = (1/m) Σ a_i σ(·)
        (`gflow.bmz.single_index_network`), the square loss, `SingleIndex` data and rates (if
        any) uniform on each layer (`gflow.bmz.layer_rates`)."""
        check_flow(_NAME, flow, model=TwoLayer, model_description="a TwoLayer network (gflow.bmz.single_index_network)",
                   loss=squared_error, data=SingleIndex, rates=True)
        model, data = flow.model0, flow.data
        if not model.sphere or model.b is not None or model.a.shape[0] != 1:
            raise regime_error(_NAME, "a sphere-normalised first layer, no bias and one output "
                               "(TwoLayer(sphere=True), gflow.bmz.single_index_network)",
                               f"got sphere={model.sphere}, bias={model.b is not None}, out_dim={model.a.shape[0]}")
        if not (model.train_first and model.train_second):
            raise regime_error(_NAME, "both layers trained", f"got train_first={model.train_first}, "
                               f"train_second={model.train_second}")
        if not math.isclose(model.output_scale * model.width, 1.0):
            raise regime_error(_NAME, "f = (1/m) Σ a_i σ(·) (scaling='mean_field', alpha=1)",
                               f"got output scale {model.output_scale} at m = {model.width}")
        rate_a, rate_w = _layer_rate(flow, "a"), _layer_rate(flow, "w")
        return cls(data.activation_coefficients, data.target_coefficients, rate_w / rate_a, model.a[0],
                   s0=data.alignments(model), target_norm2=data.target_norm2,
                   time_scale=flow.time_scale * rate_w / model.width)

    # -- the flow ------------------------------------------------------------------------------
    @property
    def degree(self) -> int:
        """K, the Hermite degree of the series."""
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

    def psi(self, state) -> tuple[Float[Array, " N"], Float[Array, " N"]]:
        """(ψ(s_i), ψ'(s_i)), ψ(s) = Σ_k σ_k r_k s^k, at every particle."""
        _, s = state
        c = self.activation_coefficients * self.residuals(state)
        k = jnp.arange(1, self.degree + 1, dtype=c.dtype)
        return power_series(c, s), power_series(c[1:] * k, s)

    def initial_state(self):
        """(a(0), s(0)), each (N,)."""
        return (self.a0, self.s0)

    def vector_field(self, tau, state, args):
        """(da/dτ, ds/dτ) = (ψ(s)/ε, (1 − s²) a ψ'(s)) on the theory clock τ."""
        a, s = state
        psi, dpsi = self.psi(state)
        return (psi / self.eps, (1.0 - s**2) * a * dpsi)

    def readout(self, tau, state) -> Observables:
        """{"loss": R, "order_parameters": M_0..M_K}."""
        return {"loss": self.risk(state), "order_parameters": self.order_parameters(state)}

    def energy_dissipation(self, state) -> Float[Array, ""]:
        """dR/dτ = −E[ψ(s)²]/ε − E[(1 − s²) a² ψ'(s)²] ≤ 0 (the energy identity)."""
        a, s = state
        psi, dpsi = self.psi(state)
        return -jnp.mean(psi**2) / self.eps - jnp.mean((1.0 - s**2) * a**2 * dpsi**2)

    # -- plateaus and time scales (times on the flow's clock t = τ / time_scale) ---------------
    def initial_risk(self) -> Float[Array, ""]:
        """R at t = 0."""
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
        """Exact phase 0 at s = 0 (flow times `ts` (T,)): r_0 = r_0(0) e^{−σ_0² τ/ε},
        R = R(0) − ½ r_0(0)²(1 − e^{−2σ_0²τ/ε})."""
        return time_scales.phase_zero_risk(self, ts)

    def phase_zero_time(self) -> Float[Array, ""]:
        """t_0 = ε ln√2 / σ_0² (theory clock, divided by `time_scale`): the exact phase-0 risk
        crosses the midpoint between R(0) and P_0."""
        return time_scales.phase_zero_time(self)

    def phase_one_angle(self, ts: Times, **kwargs) -> Float[Array, " T"]:
        """θ at flow times `ts` (T,) of the phase-1 scalar ODE dθ/dτ = σ_1(φ_1 − σ_1 M_1)/√ε,
        M_1 = ½√ε Var(a(0)) sinh 2θ, θ(0) = 0 (leading order in ε); kwargs as `solve_flow`."""
        return time_scales.phase_one_angle(self, ts, **kwargs)

    def phase_one_time(self) -> Float[Array, ""]:
        """t_1 of the phase-1 scalar ODE: where σ_1 M_1 = φ_1 (1 − 1/√2), i.e. where
        R ≈ P_1 + ½ r_1² crosses (P_0 + P_1)/2 (flow clock)."""
        return time_scales.phase_one_time(self)

    def exit_times(self, t1, degrees: int = 2, **options) -> "time_scales.ExitTimes":
        """Plateau exit times t_l, l = 0..`degrees`−1, up to flow time `t1`, as an
        `ExitTimes` (times, result); see `gflow.bmz.exit_times` for `options`."""
        return time_scales.exit_times(self, t1, degrees, **options)

    def need_coefficient(self, k: int, phase: str) -> None:
        """Refuse by name a phase that needs σ_k φ_k ≠ 0 (concrete coefficients only)."""
        if self.degree < k:
            raise regime_error(_NAME, f"Hermite degree ≥ {k} for {phase}", f"got degree {self.degree}")
        for name, coeffs in (("σ", self.activation_coefficients), ("φ", self.target_coefficients)):
            if is_concrete(coeffs) and float(coeffs[k]) == 0.0:
                raise regime_error(_NAME, f"{name}_{k} ≠ 0 for {phase}", f"got {name}_{k} = 0",
                                   "That phase does not happen for this activation/target.")


def _layer_rate(flow, name: str):
    """The rate of layer `name` (1 without `rates`), refusing a rate that varies within a layer."""
    if flow.rates is None:
        return jnp.ones((), flow.time_scale.dtype)
    rate = jnp.ravel(jnp.asarray(getattr(flow.rates, name)))
    if is_concrete(rate) and not bool(jnp.all(rate == rate[0])):
        raise regime_error(_NAME, "one rate per layer (gflow.bmz.layer_rates)", f"got varying rates on `{name}`")
    return rate[0].astype(flow.time_scale.dtype)

