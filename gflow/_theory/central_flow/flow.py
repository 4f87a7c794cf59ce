"""The central flow of gradient descent at the edge of stability, one eigenvalue at the edge.

Cohen, Damian, Talwalkar, Kolter & Lee, "Understanding Optimization in Deep Learning with
Central Flows", ICLR 2025, arXiv:2410.24206, §3 (gradient descent).

Derivation (on gflow's clock; a `GradientFlow` dθ/dt = −κ∇L, GD θ_{k+1} = θ_k − ηκ∇L(θ_k)
at t = η·k, as `solve_discrete` runs it). Past the edge of stability GD oscillates along the
top Hessian eigenvector u: θ_k = θ̄_k + x_k u with x_k changing sign every step. Averaging one
GD step over the oscillation and expanding ∇L to second order in x,

    E[∇L(θ̄ + x u)] = ∇L(θ̄) + E[x] H u + ½ E[x²] ∇³L(θ̄)[u, u] + O(x³),

with E[x] = 0 (the centre of the oscillation) and ∇³L[u, u] = ∇_θ(uᵀH(θ)u)|_u fixed = ∇S
(Hellmann–Feynman: S = λ_max(H) is simple, ∂S = uᵀ(∂H)u). So the time average θ̄ moves by
−ηκ(∇L + ½σ²∇S) per step, σ² = E[x²], i.e. on the theory clock τ = κt

    dθ/dτ = −(∇L + ½ σ² ∇S).                                                       (1)

σ² is fixed by stability: GD cannot sit at S > S* = 2/(ηκ) (it would diverge along u), and
below S* the oscillation dies out (σ² = 0). At the edge S = S* must be kept, dS/dτ =
⟨∇S, dθ/dτ⟩ = −⟨∇L, ∇S⟩ − ½σ²‖∇S‖² = 0, so

    σ² = max(0, −2⟨∇L, ∇S⟩ / ‖∇S‖²)   once S has reached S*,   σ² = 0 before;      (2)

then (1) is −∇L projected onto the tangent space of {S = S*}: with the max(0, ·), which lets the
flow leave the edge when plain gradient flow would lower S, it is gradient flow projected onto
the stable region {S ≤ 2/(ηκ)}. The predicted time-averaged loss is

    E[L(θ̄ + x u)] = L(θ̄) + ½ σ² S(θ̄) + O(x³)   ( = L + σ²/(ηκ) at the edge).          (3)

In the paper's units (time in steps, κ = 1) (1) reads dw/dt = −η[∇L + ½σ²∇S]: gflow's clock
t = ηk absorbs the η, and κ enters only through τ = κt (`time_scale`) and S* = 2/(ηκ).

Switching and drift. Instead of an event at S = S* and a second solve, (2) is written as one
right-hand side with a constraint-stabilising (Baumgarte) term,

    σ² = max(0, 2[−⟨∇L, ∇S⟩ + γ (S − S*)] / ‖∇S‖²),                                  (2')

which gives dS/dτ = −γ(S − S*) whenever σ² > 0: at the edge, numerical drift of S decays at
rate γ instead of accumulating (Baumgarte 1972, "Stabilization of constraints and integrals of
motion in dynamical systems"); below the edge σ² = 0 exactly unless S is within
(dS/dτ under gradient flow)/γ of S*, so the flow is gradient flow there and joins the edge by
a relaxation of time 1/γ instead of a kink. The default γ = S*/4 (on the τ clock) is half an
e-fold per GD step (ηκ of τ): the join is sharp on the scale of a few GD steps, drift is undone
within a few steps, and the solve stays cheaper (on `edge_of_stability_problem`, Tsit5 took
~5.9 steps per GD step with γ = S* and ~3.2 with γ = S*/4, for the same loss prediction). The right-hand side is
continuous (with a kink where σ² leaves 0). S and ∇S come from Lanczos on Hessian-vector
products (`top_hessian_eigenpair`, `sharpness_gradient`): no dense Hessian, no third
derivative tensor.

Assumptions: a simple top eigenvalue at the edge (several eigenvalues at the edge need the
paper's cone program, not implemented); the start inside the stable region S(θ0) < S*
(checked); one rate for all parameters (no `rates`); deterministic (full-batch) GD. The
prediction is for the time average: it does not model the transient at the onset of the edge
(the catapult spike), only the trajectory after it. A catapult can move GD to another part of
the edge {S = S*} than the flow from θ0 reaches (on `edge_of_stability_problem`, several Hessian
eigenvalues are past the edge during it), so a flow that is to follow GD after such an onset is
seeded at GD's time average once GD has settled (`from_flow(…, at_edge=True)`).
"""

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..._custom_types import Observables, Params
from ..._flow.problem import GradientFlow
from ..._flow.sharpness import sharpness_gradient, top_hessian_eigenpair
from ..._validate import check_finite_positive, check_integer, is_concrete, message, regime_error
from .._regime import check_flow
from ..base import AbstractReducedODE

#: Lanczos steps per right-hand-side evaluation (clipped to the number of parameters).
NUM_ITERATIONS = 32
#: `from_flow(at_edge=True)` accepts starts with ηκS(θ0) < 2·AT_EDGE (2 % past the edge).
AT_EDGE = 1.02


def _vdot(a, b) -> Float[Array, ""]:
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


class CentralFlow(AbstractReducedODE):
    """The central flow of gradient descent with step η on a `GradientFlow` (one eigenvalue at
    the edge of stability; Cohen, Damian et al., ICLR 2025, arXiv:2410.24206, §3).

    State: the time-averaged parameters θ̄ (a pytree like `flow.params0`, P entries). Theory
    clock τ = κt (`time_scale` = the flow's κ; GD step k sits at t = ηk). Right-hand side
    dθ/dτ = −(∇L + ½σ²∇S), σ² = max(0, 2[−⟨∇L, ∇S⟩ + γ(S − S*)]/‖∇S‖²), S* = 2/(ηκ) (see the
    module docstring for the derivation and the stabilising term γ).

    Readout (scalars per time): `loss` = L + ½σ²S (the predicted time-averaged loss of GD),
    `sharpness` = S(θ̄) = λ_max(∇²L(θ̄)), `oscillation_variance` = σ² (the predicted mean
    square displacement of GD along the top eigenvector), `raw_loss` = L(θ̄).
    `observables = ("loss", "sharpness")` pair with the simulation (GD's loss, best averaged
    over a sliding window of a few steps, and its sharpness).
    """

    flow: GradientFlow
    params0: Params
    time_scale: Float[Array, ""]
    learning_rate: Float[Array, ""]
    threshold: Float[Array, ""]
    stabilisation: Float[Array, ""]
    num_iterations: int = eqx.field(static=True)

    observables: ClassVar[tuple[str, ...]] = ("loss", "sharpness")

    @classmethod
    def from_flow(cls, flow, *, learning_rate, stabilisation=None,
                  num_iterations: int = NUM_ITERATIONS, at_edge: bool = False) -> "CentralFlow":
        """Seed the central flow of GD with step `learning_rate` η (on the flow's clock) at θ0.

        - `learning_rate` η > 0: the GD step (`solve_discrete(flow, optax.sgd(η), …,
          learning_rate=η)`); the edge is S* = 2/(ηκ).
        - `stabilisation` γ > 0 on the theory clock τ = κt (default S*/4): the rate at which
          drift of S off S* decays at the edge.
        - `num_iterations`: Lanczos steps per evaluation (static).
        - `at_edge=True`: θ0 is the time average of a GD run already at the edge, e.g.
          (θ_k + θ_{k+1})/2 once its sharpness has settled at S* (the flow's t = 0 is then GD's
          step k): a start up to 2 % past the edge, ηκS(θ0) < 2·1.02, is accepted (the
          stabilising term brings S onto S* within a few steps).
        Refuses: flows with `rates`, padded flows, and starts past the edge (ηκS(θ0) ≥ 2; with
        `at_edge`, ≥ 2·1.02).
        """
        name = "CentralFlow"
        if not isinstance(flow, GradientFlow):
            raise TypeError(message("flow", "be a gflow.GradientFlow", type(flow).__name__))
        check_flow(name, flow, data=None, rates=False)
        check_finite_positive("learning_rate", learning_rate, traced="pass")
        num_iterations = check_integer("num_iterations", num_iterations, minimum=1)
        dtype = jax.tree_util.tree_leaves(flow.params0)[0].dtype
        kappa = jnp.asarray(flow.time_scale, dtype)
        eta = jnp.asarray(learning_rate, dtype)
        threshold = 2.0 / (eta * kappa)
        if stabilisation is None:
            gamma = threshold / 4
        else:
            check_finite_positive("stabilisation", stabilisation, traced="pass")
            gamma = jnp.asarray(stabilisation, dtype)
        s0, _ = top_hessian_eigenpair(flow, flow.params0, num_iterations=num_iterations)
        edge = AT_EDGE if at_edge else 1.0
        if is_concrete(s0) and is_concrete(threshold) and float(s0) >= edge * float(threshold):
            if at_edge:
                raise regime_error(
                    name, f"a start at the edge, η κ S(θ0) < 2·{AT_EDGE:g} (at_edge=True)",
                    f"got η κ S(θ0) = {float(s0 * eta * kappa):.4g}",
                    "Seed it at the time average of GD once GD's sharpness has settled within 2 % of 2/(ηκ).")
            raise regime_error(
                name, "a start inside the stable region, η κ S(θ0) < 2",
                f"got η κ S(θ0) = {float(s0 * eta * kappa):.4g}",
                "Lower `learning_rate` below 2/(κ S(θ0)): GD started past the edge catapults first, "
                "which the central flow does not model; a start at the edge (GD's time average once "
                "it has settled there) takes `at_edge=True`.")
        return cls(flow=flow, params0=flow.params0, time_scale=kappa, learning_rate=eta,
                   threshold=threshold, stabilisation=gamma, num_iterations=num_iterations)

    def initial_state(self) -> Params:
        """θ̄(0) = θ0, the flow's initial parameters (GD's time average starts at its start)."""
        return self.params0

    def _terms(self, params):
        """(L, ∇L, S, ∇S, σ²) at `params`."""
        flow = self.flow
        loss, grad = jax.value_and_grad(flow.loss_value)(params)
        s, u = top_hessian_eigenpair(flow, params, num_iterations=self.num_iterations)
        grad_s = sharpness_gradient(flow, params, u)
        norm2 = _vdot(grad_s, grad_s)
        push = -_vdot(grad, grad_s) + self.stabilisation * (s - self.threshold)
        ok = norm2 > 0
        sigma2 = jnp.where(ok, jnp.maximum(0.0, 2.0 * push / jnp.where(ok, norm2, 1.0)), 0.0)
        return loss, grad, s, grad_s, sigma2

    def vector_field(self, tau, params, args) -> Params:
        """dθ/dτ = −(∇L + ½σ²∇S) on the theory clock τ = κt."""
        _, grad, _, grad_s, sigma2 = self._terms(params)
        return jax.tree_util.tree_map(lambda g, h: -(g + 0.5 * sigma2 * h), grad, grad_s)

    def readout(self, tau, params) -> Observables:
        """{"loss": L + ½σ²S, "sharpness": S, "oscillation_variance": σ², "raw_loss": L} at θ̄ (scalars)."""
        loss, _, s, _, sigma2 = self._terms(params)
        return {"loss": loss + 0.5 * sigma2 * s, "sharpness": s, "oscillation_variance": sigma2,
                "raw_loss": loss}
