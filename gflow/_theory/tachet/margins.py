"""Closed forms of cross-entropy margins (Tachet des Combes et al. 2018): a balanced two-layer
mode (exponential-integral implicit solution and its Lambert-W asymptotics) and a linear
classifier (Wright omega).

??? cite "Reference"
    Tachet des Combes, Pezeshki, Shabanian, Courville & Bengio, "On the Learning Dynamics of
    Deep Neural Networks", arXiv:1809.06848 (2018), sigmoidal learning curves, input norm and
    frequency set the speed, gradient starvation.

Time: the flow's t (dθ/dt = −κ∇L, κ = `time_scale`); the theory clock is τ = κt.
"""

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from ..._custom_types import Observables, Times
from ..._data.base import Dataset
from ..._losses import logistic
from ..._models.chain import ReLUChain
from ..._special import expi, invert_increasing, lambertw, wrightomega
from ..._validate import check_float_array, regime_error
from .._regime import check_flow
from ..base import AbstractTheory
from .features import feature_modes, require_concrete, two_layer_units


def linear_weights(t, params, flow) -> Float[Array, " d"]:
    """Observable w(t) of a linear classifier f = w·x (a depth-1 `ReLUChain`), shape (d,)."""
    return flow.model(params).v[0]



class BalancedCEMargins(AbstractTheory):
    """A balanced two-layer mode (u₀ = ṽ₀, one unit per mode) under cross-entropy: the exact
    implicit solution ln(z/z₀) + Ei(z) − Ei(z₀) = 2λτ, τ = κt, λ = p s, inverted by bracketed
    Newton in ln z.

    ??? cite "Reference"
        Tachet des Combes, Pezeshki, Shabanian, Courville & Bengio, "On the Learning Dynamics
        of Deep Neural Networks", arXiv:1809.06848 (2018).

    Fields z0, rates λ = p s, p (K,), mode_of_sample (n,), time_scale κ. Observables `margins`
    (T, n) and `loss` (T,). Assumes the `TwoLayerModesCE` regime with one live, balanced unit per
    mode.
    """

    z0: Float[Array, " K"]
    rates: Float[Array, " K"]
    p: Float[Array, " K"]
    mode_of_sample: Int[Array, " n"]
    time_scale: Float[Array, ""]
    observables: ClassVar[tuple[str, ...]] = ("margins", "loss")

    def __init__(self, z0, rates, p, mode_of_sample, time_scale=1.0):
        self.z0 = check_float_array("z0", z0, ndim=1)
        self.rates = check_float_array("rates", rates, ndim=1)
        self.p = check_float_array("p", p, ndim=1)
        self.mode_of_sample = jnp.asarray(mode_of_sample)
        self.time_scale = jnp.asarray(time_scale, self.z0.dtype)

    @classmethod
    def from_flow(cls, flow, *, atol: float = 1e-10) -> "BalancedCEMargins":
        """Seed from a logistic relu `TwoLayer` flow with one balanced (u₀ = ṽ₀ > 0) unit per mode."""
        name = cls.__name__
        s, p, y, unit_mode, u0, vt0, mode_of = two_layer_units(flow, name, (logistic,), atol=atol)
        K = s.shape[0]
        if sorted(unit_mode.tolist()) != list(range(K)) or np.any(u0 <= 0):
            raise regime_error(name, "exactly one live unit per mode",
                               f"units sit on modes {unit_mode.tolist()} with u0 = {u0}")
        unbalanced = np.abs(u0 - vt0) > atol * np.maximum(np.abs(u0), 1e-300)
        if np.any(unbalanced):
            j = int(np.argmax(unbalanced))
            raise regime_error(name, "a balanced init u0 = ṽ0 on every unit",
                               f"unit {j} has u0 = {u0[j]:.6g}, ṽ0 = {vt0[j]:.6g}", "Use TwoLayerModesCE.")
        order = np.argsort(unit_mode)
        dt = flow.model0.w.dtype
        z0 = s * u0[order] * vt0[order]
        return cls(jnp.asarray(z0, dt), jnp.asarray(p * s, dt), jnp.asarray(p, dt), mode_of, flow.time_scale)

    def margins_on_clock(self, tau: Float[Array, " T"]) -> Float[Array, "T K"]:
        """z_k at theory times τ (T,) = κt."""
        rhs = 2.0 * self.rates[None, :] * tau[:, None]

        def one(z0, target):
            lhs = lambda y, _: y - jnp.log(z0) + expi(jnp.exp(y)) - expi(z0)
            return jnp.exp(invert_increasing(lhs, target, jnp.log(z0), jnp.log(700.0)))

        return jax.vmap(jax.vmap(one))(jnp.broadcast_to(self.z0, rhs.shape), rhs)

    def mode_margins(self, ts: Times) -> Float[Array, "T K"]:
        """Exact per-mode margins z_k at flow times `ts` (T,). Compiled once per shape."""
        return _balanced_margins(self, jnp.asarray(ts, self.z0.dtype))

    def late_time_margins(self, ts: Times, *, refined: bool = True) -> Float[Array, "T K"]:
        """Late-time asymptotics at flow times `ts` (T,), branch W₋₁ of Lambert W (z > 1):
        z ≈ 1 − W₋₁(−e/(2κλt)) (`refined`, valid for 2κλt > e², error O(1/z³)) or
        z ≈ −W₋₁(−1/(2κλt)) (valid for 2κλt > e, error O(1/z²)); NaN outside their range. So
        z ≈ ln(2κλt) + ln ln(2κλt) and the loss falls like 1/(t ln t). Compiled once per shape."""
        return _balanced_late(self, jnp.asarray(ts, self.z0.dtype), refined)

    def observables_at(self, tau: Times, **solver_options) -> Observables:
        z = self.margins_on_clock(tau)
        return {"margins": z[:, self.mode_of_sample], "loss": jax.nn.softplus(-z) @ self.p}


@eqx.filter_jit
def _balanced_margins(theory: BalancedCEMargins, ts):
    return theory.margins_on_clock(theory.time_scale * ts)


@eqx.filter_jit
def _balanced_late(theory: BalancedCEMargins, ts, refined):
    x = 2.0 * theory.time_scale * theory.rates[None, :] * ts[:, None]
    if refined:
        return 1.0 - lambertw(-jnp.e / x, -1)
    return -lambertw(-1.0 / x, -1)


class LinearCEMargins(AbstractTheory):
    """A linear classifier f = w·x under cross-entropy on orthogonal modes: per mode
    dz/dτ = p s² σ(−z), so z + eᶻ = K(τ) = p s² τ + z₀ + e^{z₀} and z = ln ω(K) exactly (ω the
    Wright omega function, principal branch), τ = κt.

    ??? cite "Reference"
        Tachet des Combes, Pezeshki, Shabanian, Courville & Bengio, "On the Learning Dynamics
        of Deep Neural Networks", arXiv:1809.06848 (2018) (single layer; gradient starvation).

    The weights move only along the features: w(t) = w(0) + Σ_k y_k e_k (z_k(t) − z_k(0))/s_k. A
    single sample x = s₁e₁ + s₂e₂ is one mode of norm |x| (gradient starvation: feature 2 gets the
    share s₂²/|x|² of the margin). Fields z0, p, s, labels (K,), features (d, K), w0 (d,),
    mode_of_sample (n,), time_scale κ. Observables `margins` (T, n), `loss` (T,), `weights` (T, d).
    """

    z0: Float[Array, " K"]
    p: Float[Array, " K"]
    s: Float[Array, " K"]
    labels: Float[Array, " K"]
    features: Float[Array, "d K"]
    w0: Float[Array, " d"]
    mode_of_sample: Int[Array, " n"]
    time_scale: Float[Array, ""]
    observables: ClassVar[dict] = {"margins": "margins", "loss": "loss", "weights": linear_weights}

    @classmethod
    def from_flow(cls, flow, *, atol: float = 1e-10) -> "LinearCEMargins":
        """Seed from a depth-1 `ReLUChain` (f = v·x) under `logistic` on orthogonal modes."""
        name = cls.__name__
        check_flow(name, flow, model=ReLUChain, loss=logistic, data=Dataset)
        model = flow.model0
        if model.depth != 1:
            raise regime_error(name, "a linear classifier (ReLUChain with no hidden layer)",
                               f"got a ReLUChain of depth {model.depth}")
        require_concrete(model.v, flow.data.x)
        F, mode_of, s, p, y = feature_modes(flow.data, name, atol=atol)
        w0 = np.asarray(model.v)[0]
        z0 = y * s * (w0 @ F)
        arr = lambda a: jnp.asarray(a, dtype=model.v.dtype)
        return cls(arr(z0), arr(p), arr(s), arr(y), arr(F), arr(w0), jnp.asarray(mode_of),
                   jnp.asarray(flow.time_scale, model.v.dtype))

    def margins_on_clock(self, tau: Float[Array, " T"]) -> Float[Array, "T K"]:
        """z_k at theory times τ (T,) = κt."""
        K = (self.p * self.s**2)[None, :] * tau[:, None] + (self.z0 + jnp.exp(self.z0))[None, :]
        return jnp.log(wrightomega(K))

    def mode_margins(self, ts: Times) -> Float[Array, "T K"]:
        """Per-mode margins z_k at flow times `ts` (T,). Compiled once per shape."""
        return _linear_margins(self, jnp.asarray(ts, self.z0.dtype))

    def observables_at(self, tau: Times, **solver_options) -> Observables:
        z = self.margins_on_clock(tau)
        shift = (z - self.z0[None, :]) * (self.labels / self.s)[None, :]
        return {
            "margins": z[:, self.mode_of_sample],
            "loss": jax.nn.softplus(-z) @ self.p,
            "weights": self.w0[None, :] + shift @ self.features.T,
        }


@eqx.filter_jit
def _linear_margins(theory: LinearCEMargins, ts):
    return theory.margins_on_clock(theory.time_scale * ts)
