"""`LinearMeanFieldMoments`: the exact reduced flow of a linear-σ mean-field network, any M and P."""

import math
from typing import ClassVar

import diffrax
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..._custom_types import Observables
from ..._validate import check_float_array
from ..base import AbstractReducedODE
from ._checks import check_pb_flow
from .observables import MOMENT_OBSERVABLES
from .setup import check_margin


class LinearMeanFieldMoments(AbstractReducedODE):
    """Exact reduced flow of a linear-σ mean-field network under the hinge, at any M and P.

    ??? cite "Reference"
        F. Pellegrini and G. Biroli, "An analytic theory of shallow networks dynamics for hinge
        loss classification", NeurIPS 2020 (arXiv:2006.11209), §4 (the linear case).

    f(x) = α v·x/√d with v = ⟨a w⟩ (average over the M nodes). On the clock τ = α t / M,
    da_i/dτ = w_i·G/√d and dw_i/dτ = a_i G/√d with G = (1/P) Σ_μ y_μ x_μ 1[y_μ f(x_μ) < h], so the
    moments v, Σ = ⟨w wᵀ⟩, A = ⟨a²⟩ close:
    dv/dτ = (Σ + A I) G/√d,  dΣ/dτ = (v Gᵀ + G vᵀ)/√d,  dA/dτ = 2 v·G/√d.
    The labels enter only through G and the active set: no separability (nor Gaussian inputs) is
    assumed. Readout: `v` (d,), `loss`, `unsatisfied_fraction`, and with a teacher ŵ*
    `generalization_error` = arccos(v·ŵ*/|v|)/π (Gaussian test inputs labelled by ŵ*).
    """

    time_scale: Float[Array, ""]
    alpha: Float[Array, ""]
    margin: Float[Array, ""]
    x: Float[Array, "P d"]
    y: Float[Array, " P"]
    teacher: Float[Array, " d"] | None
    v0: Float[Array, " d"]
    sigma0: Float[Array, "d d"]
    A0: Float[Array, ""]
    observables: ClassVar[dict] = MOMENT_OBSERVABLES

    def __init__(self, x, y, teacher, v0, sigma0, A0, *, alpha=1.0, margin=1.0, time_scale=1.0):
        check_margin(margin)
        self.x = check_float_array("x", x, ndim=2)
        self.y = check_float_array("y", y, ndim=(1, 2)).reshape(-1)
        if teacher is None:
            self.teacher = None
        else:
            t = check_float_array("teacher", teacher, ndim=1)
            self.teacher = t / jnp.linalg.norm(t)
        self.v0 = check_float_array("v0", v0, ndim=1)
        self.sigma0 = check_float_array("sigma0", sigma0, ndim=2)
        self.A0 = jnp.asarray(A0, dtype=float)
        self.alpha = jnp.asarray(alpha, dtype=float)
        self.margin = jnp.asarray(margin, dtype=float)
        self.time_scale = jnp.asarray(time_scale, dtype=float)

    @classmethod
    def from_flow(cls, flow, teacher: Float[Array, " d"] | None = None) -> "LinearMeanFieldMoments":
        """Moments of the network at t = 0; needs σ = linear (any labels, separable or not).
        `teacher`: ŵ* for `generalization_error` (default: the one the data records, if any)."""
        model, h, teacher, _, time_scale = check_pb_flow("LinearMeanFieldMoments", flow, teacher,
                                                         separable=False, activations=("linear",))
        a, w = model.a[0], model.w
        M = model.width
        return cls(flow.data.x, flow.data.y, teacher, a @ w / M, w.T @ w / M, jnp.mean(a**2),
                   alpha=model.alpha, margin=h, time_scale=time_scale)

    def initial_state(self):
        return (self.v0, self.sigma0, self.A0)

    # The products are written as elementwise multiplies and sums over one axis (not matmuls): a
    # batched (vmapped) evaluation then rounds exactly as a plain one, which matters here because
    # the active set flips at kinks and amplifies any round-off difference.
    def _drive(self, v):
        sd = math.sqrt(self.x.shape[-1])
        yf = self.y * self.alpha * jnp.sum(self.x * v[None, :], axis=-1) / sd
        active = (yf < self.margin).astype(v.dtype)
        return jnp.sum((active * self.y)[:, None] * self.x, axis=0) / self.x.shape[0], yf

    def vector_field(self, tau, state, args):
        v, sigma, A = state
        sd = math.sqrt(self.x.shape[-1])
        G, _ = self._drive(v)
        dv = (jnp.sum(sigma * G[None, :], axis=-1) + A * G) / sd
        dsigma = (v[:, None] * G[None, :] + G[:, None] * v[None, :]) / sd
        return dv, dsigma, 2.0 * jnp.sum(v * G) / sd

    def readout(self, tau, state) -> Observables:
        v = state[0]
        _, yf = self._drive(v)
        out = {"v": v, "loss": jnp.mean(jax.nn.relu(self.margin - yf)),
               "unsatisfied_fraction": jnp.mean((yf < self.margin).astype(v.dtype))}
        if self.teacher is not None:
            cos = jnp.sum(v * self.teacher) / jnp.linalg.norm(v)
            out["generalization_error"] = jnp.arccos(jnp.clip(cos, -1.0, 1.0)) / math.pi
        return out

    def observables_at(self, tau, **solver_options) -> Observables:
        # Defaults: explicit adaptive RK (Tsit5; the hinge makes the field piecewise smooth, step
        # rejection localises its kinks, an implicit solver gains nothing) at rtol 1e-12, atol
        # 1e-14: round-off is amplified at each kink by ~1e2 relative to the tolerance, so a
        # tight solve keeps batched (vmap) and plain evaluations equal to ~1e-10; the state is
        # small, so this is cheap next to any simulation.
        solver_options = {"solver": diffrax.Tsit5(), "rtol": 1e-12, "atol": 1e-14, **solver_options}
        return super().observables_at(tau, **solver_options)
