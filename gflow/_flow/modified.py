"""Modified flows: the gradient flows that gradient descent and heavy ball follow to O(η²).

Backward error analysis of a discrete optimizer with step η on the flow dθ/dt = −κ R∇L(θ)
(κ = `flow.time_scale`, R = diag(`flow.rates`), 1 by default):

- **Gradient descent** θ_{k+1} = θ_k − ηκR∇L(θ_k), at t_k = η·k. Against the flow the gap on a
  fixed horizon is O(η); against the *modified flow*

      dθ/dt = −κR∇L̃,   L̃ = L + (ηκ/4)‖∇L‖²_R   (‖v‖²_R = vᵀRv),

  i.e. dθ/dt = −κR(∇L + (ηκ/2) H R∇L), it is O(η²) (Barrett & Dherin 2021; local error O(η³)).
- **Heavy ball** (Polyak momentum β, `optax.sgd(η, momentum=β)`): v_{k+1} = βv_k − ηκR∇L(θ_k),
  θ_{k+1} = θ_k + v_{k+1}, v_0 = 0. On the clock of `solve_discrete` (step time h = η/(1−β),
  t_k = h·k) heavy ball follows the plain flow to O(η) (Kovachki & Stuart 2021) and the modified
  flow dθ/dt = −κR∇L̃ with L̃ = L + (ηκ(1+β)/(4(1−β)²))‖∇L‖²_R to O(η²) *once its start is
  shifted*: starting from v_0 = 0 the velocity takes ~1/(1−β) steps to build up, so heavy ball
  lags the modified flow by τ = hβ/(1−β) = ηβ/(1−β)². Iterate k sits at θ̃(t_k − τ), θ̃ the
  modified flow from θ_0. `modified_flow` starts its flow at θ̃(−τ) instead, so that its solution
  at t_k is compared with iterate k directly; θ̃(−τ) = θ_0 − τF + (τ²/2) J_F F to O(τ³) = O(η³),
  with F = −κR∇L̃(θ_0) and J_F F ≈ κ²RHR∇L(θ_0) (one Hessian-vector product).
  (Ghosh et al. 2023 give the (1+β)/(1−β) regulariser at equal effective step; the shift is
  our derivation, matching the order-by-order expansion and checked numerically: O(η²) with the
  shift, O(η) without.)

The modified flow is returned as a `GradientFlow` of the modified loss L̃: its data is
`ModifiedLoss`, which evaluates L̃ from the wrapped data's L. So `solve_flow`, `sweep`, the
energy audit (which then audits L̃(t) − L̃(0) = −∫κ‖∇L̃‖²_R dt, an identity that does hold) and
the training events work on it unchanged. Its `loss` observable is L̃; the original L is the
observable `unmodified_loss`. ∇L̃ is computed by differentiating ‖∇L‖² (a Hessian-vector product
H·R∇L by reverse-over-reverse differentiation), never a dense Hessian.

Assumptions: η κ λ_max(H)/(1−β) ≪ 1 (the expansion's small parameter; the tests use ≤ 0.17 for
GD and ≤ 0.1 for heavy ball), a smooth loss, and the fixed horizon of the comparison.

??? cite "References"
    Barrett & Dherin, "Implicit Gradient Regularization", ICLR 2021 (arXiv:2009.11162);
    Kovachki & Stuart, "Continuous time analysis of momentum methods", JMLR 2021
    (arXiv:1906.04285); Ghosh, Lyu, Zhang & Xu, "Implicit regularization in heavy-ball momentum
    accelerated stochastic gradient descent", ICLR 2023 (arXiv:2302.00849).
"""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PyTree

from .._custom_types import Params, RealScalarLike
from .._data.base import AbstractDataset
from .._validate import check_finite_positive, is_concrete, message
from .problem import GradientFlow
from .sharpness import hessian_vector_product


def _squared_norm(grad: Params, rates: PyTree | None) -> Float[Array, ""]:
    """‖g‖²_R = Σ r g² over all leaves (R = 1 when `rates` is None)."""
    leaves = jax.tree_util.tree_leaves(grad)
    if rates is None:
        return sum(jnp.sum(g * g) for g in leaves)
    return sum(jnp.sum(r * g * g) for g, r in zip(leaves, jax.tree_util.tree_leaves(rates)))


class ModifiedLoss(AbstractDataset):
    """The modified loss L̃(θ) = L(θ) + c‖∇_θ L(θ)‖²_R as a gflow data object.

    `data`: the original data (finite or population) whose `mean_loss` is L; `coefficient`: c
    (a scalar, may be traced); `rates`: R, the flow's per-parameter rates (None: 1). The
    gradient is taken with respect to the model's trainable arrays (`model.trainable()`), as in
    `GradientFlow`. Built by `modified_flow`; shapes and the unit of time are those of the
    original flow.
    """

    data: AbstractDataset
    coefficient: Float[Array, ""]
    rates: PyTree | None

    def mean_loss(self, model: Callable, loss: Callable) -> Float[Array, ""]:
        """L̃ = L + c‖∇L‖²_R for `model` (gradient over its trainable arrays)."""
        params, static = eqx.partition(model, model.trainable())
        value, grad = jax.value_and_grad(lambda p: self.data.mean_loss(eqx.combine(p, static), loss))(params)
        return value + self.coefficient * _squared_norm(grad, self.rates)

    @property
    def sample_mask(self):
        """The wrapped data's sample mask (padded data sizes), None if it has none."""
        return getattr(self.data, "sample_mask", None)

    def unpadded(self) -> "ModifiedLoss":
        """The same modified loss on the wrapped data without its padding samples."""
        data = self.data.unpadded() if hasattr(self.data, "unpadded") else self.data
        return ModifiedLoss(data, self.coefficient, self.rates)


def original_flow(flow: GradientFlow) -> GradientFlow:
    """The flow of L that a modified flow was built from (a plain flow is returned as is).

    Its `params0` is the modified flow's (for heavy ball: the shifted start). Use it in an
    observable to measure L or its sharpness along a modified flow."""
    if isinstance(flow.data, ModifiedLoss):
        return eqx.tree_at(lambda f: f.data, flow, flow.data.data)
    return flow


def unmodified_loss(t, params: Params, flow: GradientFlow) -> Float[Array, ""]:
    """Observable: L(θ(t)), the original loss, for a modified flow and a plain one alike (on a
    plain flow it equals `loss`). Pass it as `observables={"loss": unmodified_loss}` to overlay
    a modified flow's L on gradient descent's."""
    return original_flow(flow).loss_value(params)


def _force(flow: GradientFlow, params: Params) -> Params:
    """κ R∇L(θ): minus the flow's vector field."""
    return jax.tree_util.tree_map(jnp.negative, flow.vector_field(0.0, params))


def modified_flow(
    flow: GradientFlow,
    learning_rate: RealScalarLike,
    *,
    momentum: RealScalarLike = 0.0,
) -> GradientFlow:
    """The modified flow that gradient descent (`momentum=0`) or heavy ball follows to O(η²).

    Returns a `GradientFlow` of L̃ = L + c‖∇L‖²_R with c = ηκ(1+β)/(4(1−β)²) (GD: ηκ/4), the
    same model, loss, `time_scale` κ and `rates` R, on the clock of `solve_discrete` (t = k·η for
    GD, t = k·η/(1−β) for heavy ball). Heavy ball's start is shifted back by its lag
    τ = ηβ/(1−β)² (see the module docstring), so that `solve_flow(modified_flow(flow, η,
    momentum=β), t1)` at time t is compared with iterate k = t(1−β)/η directly; its value at
    t = 0 is therefore not θ_0 (heavy ball needs ~1/(1−β) steps before it follows any flow).

    `learning_rate` η: the optimizer's step (`optax.sgd(η, momentum=β)`), > 0 (may be traced,
    e.g. under `vmap` over step sizes); `momentum` β in [0, 1) (Polyak, not Nesterov).
    The `loss` observable of the result is L̃; `unmodified_loss` is L.
    """
    if not isinstance(flow, GradientFlow):
        raise TypeError(message("flow", "be a gflow.GradientFlow", type(flow).__name__))
    if isinstance(flow.data, ModifiedLoss):
        raise ValueError(message("flow", "be an unmodified GradientFlow", "a flow that is already a modified flow",
                                 "Pass the original flow."))
    learning_rate = check_finite_positive("learning_rate", learning_rate, traced="pass")
    momentum = check_momentum(momentum)
    dtype = flow.time_scale.dtype
    eta = jnp.asarray(learning_rate, dtype)
    beta = jnp.asarray(momentum, dtype)
    kappa = flow.time_scale
    coefficient = eta * kappa * (1 + beta) / (4 * (1 - beta) ** 2)
    data = ModifiedLoss(flow.data, coefficient, flow.rates)
    params0 = flow.params0
    if not (is_concrete(momentum) and float(momentum) == 0.0):
        params0 = _shifted_start(flow, params0, coefficient, eta * beta / (1 - beta) ** 2)
    return GradientFlow(flow.model(params0), flow.loss, data, time_scale=kappa, rates=flow.rates)


def check_momentum(momentum: Any) -> Any:
    """β in [0, 1): a ValueError if concrete; traced values pass (a bad one diverges)."""
    if is_concrete(momentum):
        value = float(np.asarray(momentum))  # numpy: a jnp op inside a jit trace is traced
        if not (0.0 <= value < 1.0):
            raise ValueError(message("momentum", "lie in [0, 1) (heavy-ball β)", momentum))
    return momentum


def _shifted_start(flow: GradientFlow, params0: Params, coefficient, lag) -> Params:
    """θ̃(−τ) ≈ θ_0 − τF + (τ²/2)J_F F for F = −κR∇L̃ (J_F F to leading order, κ²RHR∇L)."""
    kappa = flow.time_scale
    force = _force(flow, params0)  # κR∇L
    hvp = hessian_vector_product(flow, params0, force)  # κ H R∇L
    rated = hvp if flow.rates is None else jax.tree_util.tree_map(lambda h, r: r * h, hvp, flow.rates)
    # F = −κR(∇L + 2c H R∇L) = −(force + 2c R·hvp);  J_F F ≈ κ R H (force) = κ R·hvp.
    field = jax.tree_util.tree_map(lambda f, h: -(f + 2 * coefficient * h), force, rated)
    return jax.tree_util.tree_map(
        lambda p, f, h: p - lag * f + 0.5 * lag**2 * kappa * h, params0, field, rated
    )

