"""Independent modes of a properly initialised two-layer ReLU classifier (Tachet des Combes et al.
2018): the hinge closed form `TwoLayerModes` and the cross-entropy clock `TwoLayerModesCE`.

??? cite "Reference"
    Tachet des Combes, Pezeshki, Shabanian, Courville & Bengio, "On the Learning Dynamics of
    Deep Neural Networks", arXiv:1809.06848 (2018), independent modes, hinge vs cross-entropy,
    failed training.

Conventions: labels ±1, mean loss over samples, f(x) = Σ_j v_j relu(w_j·x), the flow's time t of
dθ/dt = −κ∇L (κ = `GradientFlow.time_scale`; GD with step η after k steps ↔ t = kη). The theory
clock is τ = κt. Mode k: n_k samples s_k e_k with label y_k, p_k = n_k/n, λ_k = p_k s_k. Every unit
follows the hyperbola of `paths.unit_path` in its mode's clock τ_k, dτ_k/dτ = λ_k g(z_k); the loss
only sets that clock (g = 1[z < 1] for hinge, σ(−z) for cross-entropy).
"""

from typing import ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from ..._custom_types import Observables, Times
from ..._losses import hinge, logistic
from ..._special import invert_increasing
from ..._validate import check_float_array
from ..base import AbstractReducedODE, AbstractTheory
from .features import first_layer_strengths, output_weights, two_layer_units
from .paths import death_clock, unit_path

_TAU_MAX = 60.0

#: The simulation observables both two-layer theories predict (`solve_flow(observables=…)`).
TWO_LAYER_OBSERVABLES = {"margins": "margins", "loss": "loss", "classification_error": "classification_error",
                         "first_layer_strengths": first_layer_strengths, "output_weights": output_weights}


class TwoLayerUnits(eqx.Module):
    """The mode structure and initial units of a properly initialised two-layer ReLU net.

    Fields: s, p, labels (K,) (norm, frequency and label of each mode); u0 = w_j·e_{k(j)},
    vt0 = y_{k(j)} v_j, unit_mode = k(j) (h,); mode_of_sample (n,). `rates` λ = p s (K,).
    """

    s: Float[Array, " K"]
    p: Float[Array, " K"]
    labels: Float[Array, " K"]
    u0: Float[Array, " h"]
    vt0: Float[Array, " h"]
    unit_mode: Int[Array, " h"]
    mode_of_sample: Int[Array, " n"]

    def __init__(self, s, p, labels, u0, vt0, unit_mode, mode_of_sample):
        self.s = check_float_array("s", s, ndim=1)
        self.p = check_float_array("p", p, ndim=1)
        self.labels = check_float_array("labels", labels, ndim=1)
        self.u0 = check_float_array("u0", u0, ndim=1)
        self.vt0 = check_float_array("vt0", vt0, ndim=1)
        self.unit_mode = jnp.asarray(unit_mode)
        self.mode_of_sample = jnp.asarray(mode_of_sample)

    @classmethod
    def from_flow(cls, flow, name: str, losses, *, features=None, atol: float = 1e-10) -> "TwoLayerUnits":
        """Read the modes and units off `flow` (see `features.two_layer_units`)."""
        s, p, y, unit_mode, u0, vt0, mode_of = two_layer_units(flow, name, losses, features=features, atol=atol)
        dt = flow.model0.w.dtype
        arr = lambda a: jnp.asarray(a, dt)
        return cls(arr(s), arr(p), arr(y), arr(u0), arr(vt0), unit_mode, mode_of)

    @property
    def rates(self) -> Float[Array, " K"]:
        """λ_k = p_k s_k."""
        return self.p * self.s

    def margins_at(self, tau: Float[Array, "... K"]) -> Float[Array, "... K"]:
        """z_k(τ_k) = s_k Σ_{j on k} relu(u_j) ṽ_j at mode clocks τ (…, K)."""
        _, _, c = unit_path(self.u0, self.vt0, self.s[self.unit_mode], tau[..., self.unit_mode])
        onehot = (self.unit_mode[:, None] == jnp.arange(self.s.shape[0])[None, :]).astype(c.dtype)
        return c @ onehot

    def observables_at(self, clocks: Float[Array, "*T K"], per_mode_loss) -> Observables:
        """The `TWO_LAYER_OBSERVABLES` at mode clocks (…, K), the loss per mode `per_mode_loss(z)`."""
        z = self.margins_at(clocks)
        u, vt, _ = unit_path(self.u0, self.vt0, self.s[self.unit_mode], clocks[..., self.unit_mode])
        return {
            "margins": z[..., self.mode_of_sample],
            "loss": per_mode_loss(z) @ self.p,
            "classification_error": (z <= 0).astype(z.dtype) @ self.p,
            "first_layer_strengths": u,
            "output_weights": vt * jnp.broadcast_to(self.labels[self.unit_mode], vt.shape),
        }

    def stop_clocks(self) -> Float[Array, " K"]:
        """Hinge stop clocks τ_h,k where z_k reaches 1 (0 if z_k(0) ≥ 1, inf if never)."""
        K = self.s.shape[0]

        def one(k):
            def z_of(tau, _):
                return self.margins_at(jnp.full((K,), tau, self.s.dtype))[k]

            tau = invert_increasing(z_of, 1.0, 0.0, _TAU_MAX)
            reach = z_of(jnp.asarray(_TAU_MAX, self.s.dtype), None) >= 1.0
            start = z_of(jnp.zeros((), self.s.dtype), None) >= 1.0
            return jnp.where(start, 0.0, jnp.where(reach, tau, jnp.inf))

        return jax.vmap(one)(jnp.arange(K))


class TwoLayerModes(AbstractTheory):
    """Hinge loss: the per-mode closed form of a properly initialised two-layer ReLU classifier.

    ??? cite "Reference"
        Tachet des Combes, Pezeshki, Shabanian, Courville & Bengio, "On the Learning Dynamics
        of Deep Neural Networks", arXiv:1809.06848 (2018).

    Mode clocks τ_k = min(λ_k τ, τ_h,k), τ = κt, with z_k(τ_h,k) = 1: hinge learning stops in finite
    time at margin exactly 1 (one unit per mode: t_h = ln X/(2κλ), X = [2/s + √(4/s² + A²B²)]/A²).
    Units with A ≤ 0 < u₀ die (u = 0) at τ_d = ½ ln(−B/A) (region F); units with u₀ ≤ 0 never
    move (region D). Assumes orthogonal single-feature modes, equal norms and one label per mode,
    no biases, each unit positive on at most one mode (`proper_init`).
    Fields: `units` (`TwoLayerUnits`), `stop_clocks` τ_h (K,) (found once, at construction, by
    bracketed Newton on z_k(τ) = 1), `time_scale` κ. Observables: `margins` (T, n), `loss` (T,),
    `classification_error` (T,), `first_layer_strengths` (T, h) = u_j, `output_weights` (T, h) = v_j.
    """

    units: TwoLayerUnits
    stop_clocks: Float[Array, " K"]
    time_scale: Float[Array, ""]
    observables: ClassVar[dict] = TWO_LAYER_OBSERVABLES

    def __init__(self, units: TwoLayerUnits, time_scale=1.0):
        self.units = units
        self.stop_clocks = _stop_clocks(units)  # compiled once per shape
        self.time_scale = jnp.asarray(time_scale, dtype=units.s.dtype)

    @classmethod
    def from_flow(cls, flow, *, features=None, atol: float = 1e-10) -> "TwoLayerModes":
        """Seed from a `GradientFlow` of a bias-free relu `TwoLayer` under `hinge`. `features`
        (d, K'): optional feature directions, to name a sample that carries several; `atol`: the
        orthogonality tolerance. Raises a named error for the sample or unit that breaks an
        assumption."""
        return cls(TwoLayerUnits.from_flow(flow, cls.__name__, (hinge,), features=features, atol=atol),
                   flow.time_scale)

    def observables_at(self, tau: Times, **solver_options) -> Observables:
        clocks = jnp.minimum(self.units.rates[None, :] * tau[:, None], self.stop_clocks[None, :])
        return self.units.observables_at(clocks, lambda z: jax.nn.relu(1.0 - z))

    def stop_times(self) -> Float[Array, " K"]:
        """Hinge stop times t_h,k = τ_h,k/(κλ_k) on the flow's clock (K,); 0 if z_k(0) ≥ 1, inf
        if never. Compiled once per shape."""
        return _stop_times(self)

    def death_times(self) -> Float[Array, " h"]:
        """Death time of each unit, t_d = ½ ln(−B/A)/(κλ) for A < 0 < u₀ (h,); inf otherwise."""
        return _death_times(self)

    def kink_times(self) -> Float[Array, " m"]:
        """Stop and death times, sorted (K + h,; inf where none): the finite ones are the
        discontinuities of the hinge flow's vector field, to pass to `solve_flow(jump_ts=…)`."""
        return _kink_times(self)


@eqx.filter_jit
def _stop_clocks(units: TwoLayerUnits):
    return units.stop_clocks()


@eqx.filter_jit
def _stop_times(theory: TwoLayerModes):
    return theory.stop_clocks / (theory.time_scale * theory.units.rates)


@eqx.filter_jit
def _death_times(theory: TwoLayerModes):
    units = theory.units
    return death_clock(units.u0, units.vt0) / (theory.time_scale * units.rates[units.unit_mode])


@eqx.filter_jit
def _kink_times(theory: TwoLayerModes):
    return jnp.sort(jnp.concatenate([_stop_times(theory), _death_times(theory)]))


class TwoLayerModesCE(AbstractReducedODE):
    """Cross-entropy: the per-mode clocks of a properly initialised two-layer ReLU classifier as a
    K-dimensional reduced ODE dτ_k/dτ = λ_k σ(−z_k(τ_k)) (τ = κt); margins, weights and loss follow
    the unit hyperbolas exactly. Equivalent to the quadrature t(τ_k) = (1/κλ)∫₀^{τ_k}(1 + eᶻ)dτ'.

    ??? cite "Reference"
        Tachet des Combes, Pezeshki, Shabanian, Courville & Bengio, "On the Learning Dynamics
        of Deep Neural Networks", arXiv:1809.06848 (2018).

    Same assumptions, fields and observables as `TwoLayerModes`. `evaluate` integrates with
    Dopri8 at rtol 1e-12 / atol 1e-14 unless solver options are given.
    """

    units: TwoLayerUnits
    time_scale: Float[Array, ""]
    observables: ClassVar[dict] = TWO_LAYER_OBSERVABLES

    def __init__(self, units: TwoLayerUnits, time_scale=1.0):
        self.units = units
        self.time_scale = jnp.asarray(time_scale, dtype=units.s.dtype)

    @classmethod
    def from_flow(cls, flow, *, features=None, atol: float = 1e-10) -> "TwoLayerModesCE":
        """Seed from a relu `TwoLayer` flow under `logistic`; regime errors as `TwoLayerModes`."""
        return cls(TwoLayerUnits.from_flow(flow, cls.__name__, (logistic,), features=features, atol=atol),
                   flow.time_scale)

    def initial_state(self):
        return jnp.zeros_like(self.units.s)

    def vector_field(self, tau, clocks, args):
        return self.units.rates * jax.nn.sigmoid(-self.units.margins_at(clocks))

    def readout(self, tau, clocks) -> Observables:
        return self.units.observables_at(clocks, lambda z: jax.nn.softplus(-z))

    def observables_at(self, tau: Times, **solver_options) -> Observables:
        options = {"solver": diffrax.Dopri8(), "rtol": 1e-12, "atol": 1e-14, **solver_options}
        return super().observables_at(tau, **options)
