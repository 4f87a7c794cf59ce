from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree

from .._custom_types import Params
from .._data.base import AbstractDataset, Dataset
from .._models.base import AbstractModel
from .._validate import check_finite_positive, message


class GradientFlow(eqx.Module):
    """The gradient-flow ODE of a learning problem: dθ/dt = −κ · r ⊙ ∇_θ L(θ).

    L(θ) = `data.mean_loss(model_θ, loss)` (the mean of the per-example `loss` over the data, or
    its population expectation), κ = `time_scale` (a user loss κ·L runs the flow of L κ times
    faster; theories rescale their clock by κ), and r = `rates`, an optional pytree with the
    structure of the trainable parameters giving each its own rate (e.g. separate layer learning
    rates), 1 by default. θ are the model's trainable arrays (`model.trainable()`), split from
    the frozen rest with `eqx.partition`. Time is dimensionless: gradient descent with step η
    after k steps is compared with the flow at t = k·η (κ = r = 1).

    Checked at construction (from shapes only, nothing is computed): the model takes one example
    of `data.x` (its input size is the data's d) and returns one output per column of `data.y`;
    `loss` returns a scalar per example; the mean loss is a scalar (population datasets); a
    concrete `time_scale` is finite and > 0. A traced `time_scale` (a sweep's grid value under
    `vmap`) is not checked here: a NaN or negative one makes that member's solve diverge, which
    `solve_flow` reports in its `result` code (an `eqx.error_if` would stop the whole batch).
    """

    params0: Params
    static: AbstractModel
    loss: Callable = eqx.field(static=True)
    data: AbstractDataset
    time_scale: Float[Array, ""]
    rates: PyTree | None

    def __init__(
        self,
        model: AbstractModel,
        loss: Callable,
        data: AbstractDataset,
        *,
        time_scale: float | Float[Array, ""] = 1.0,
        rates: PyTree | None = None,
    ):
        if not isinstance(model, AbstractModel):
            raise TypeError(message("model", "be a gflow AbstractModel (an eqx.Module on one example)",
                                    type(model).__name__))
        if not callable(loss):
            raise TypeError(message("loss", "be a callable `loss(prediction, target) -> scalar`", type(loss).__name__))
        if not isinstance(data, AbstractDataset):
            raise TypeError(message("data", "be a gflow Dataset or population dataset", type(data).__name__))
        self.params0, self.static = eqx.partition(model, model.trainable())
        if not jax.tree_util.tree_leaves(self.params0):
            raise ValueError(message("model", "have at least one trainable array", "none (every layer frozen)"))
        _check_shapes(model, loss, data)
        self.loss = loss
        self.data = data
        time_scale = check_finite_positive("time_scale", time_scale, traced="pass")
        self.time_scale = jnp.asarray(time_scale, dtype=jax.tree_util.tree_leaves(self.params0)[0].dtype)
        if rates is not None:
            try:
                jax.tree_util.tree_map(lambda p, r: None, self.params0, rates)
            except ValueError as e:
                raise ValueError(
                    message("rates", "have the structure of the trainable parameters", str(e)[:200])
                ) from None
        self.rates = rates

    @property
    def is_padded(self) -> bool:
        """Whether the model's width or the data's size is padded (`TwoLayer(active_width=…)`,
        `Dataset.first(n)`): the flow is that of the smaller problem, with arrays of a bigger one."""
        data_padded = getattr(self.data, "sample_mask", None) is not None
        return data_padded or self.model0.active_fraction() is not None

    def unpadded(self) -> "GradientFlow":
        """The same flow at the real sizes: padding units and samples dropped (concrete only).

        Its trajectory equals this flow's on the real entries (to round-off; `solve_flow` keeps
        the step-size control of the unpadded problem).
        """
        if not self.is_padded:
            return self
        if self.rates is not None and any(jnp.ndim(r) for r in jax.tree_util.tree_leaves(self.rates)):
            raise ValueError(message("rates", "be scalars per parameter array to unpad a flow", "array rates"))
        data = self.data.unpadded() if hasattr(self.data, "unpadded") else self.data
        return GradientFlow(self.model0.unpadded(), self.loss, data, time_scale=self.time_scale, rates=self.rates)

    def model(self, params: Params) -> AbstractModel:
        """The full model with trainable arrays `params`."""
        return eqx.combine(params, self.static)

    @property
    def model0(self) -> AbstractModel:
        """The model at the initial parameters θ(0)."""
        return self.model(self.params0)

    def loss_value(self, params: Params) -> Float[Array, ""]:
        """L(θ), the unscaled mean loss."""
        return self.data.mean_loss(self.model(params), self.loss)

    def gradient(self, params: Params) -> Params:
        """∇_θ L(θ)."""
        return jax.grad(self.loss_value)(params)

    def vector_field(self, t: Any, params: Params, args: Any = None) -> Params:
        """dθ/dt = −κ · r ⊙ ∇L(θ) (diffrax signature)."""
        grad = self.gradient(params)
        if self.rates is not None:
            grad = jax.tree_util.tree_map(lambda g, r: r * g, grad, self.rates)
        return jax.tree_util.tree_map(lambda g: -self.time_scale * g, grad)


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200] if text else ''}"


def _check_shapes(model: AbstractModel, loss: Callable, data: AbstractDataset) -> None:
    """The model's input and output sizes against the data, and a scalar loss (shapes only)."""
    if not isinstance(data, Dataset):  # a population: no `x` to check; its mean loss is a scalar
        total = eqx.filter_eval_shape(lambda d, m: d.mean_loss(m, loss), data, model)
        if getattr(total, "shape", None) != ():
            raise ValueError(message("loss", "give a scalar mean loss `data.mean_loss(model, loss)`",
                                     f"an output of shape {getattr(total, 'shape', type(total).__name__)}"))
        return
    d, k = data.x.shape[-1], data.y.shape[-1]
    size = model.input_size
    if size is not None and size != d:
        raise ValueError(message("data.x", f"have the model's input size d = {size} as its columns",
                                 f"x of shape {tuple(data.x.shape)} (d = {d})",
                                 "Build the model and the data with the same d."))
    x = jax.ShapeDtypeStruct(data.x.shape[1:], data.x.dtype)
    try:
        out = eqx.filter_eval_shape(lambda m, x: m(x), model, x)
    except (TypeError, ValueError) as e:
        raise ValueError(message("model", f"accept one example of `data.x`, shape ({d},)",
                                 f"an error from {type(model).__name__}: {_first_line(e)}")) from e
    shape = getattr(out, "shape", None)
    if shape != (k,):
        raise ValueError(message("model", f"return one output per column of `data.y`: shape (k,) = ({k},) "
                                 f"for y of shape {tuple(data.y.shape)}", f"an output of shape {shape}",
                                 "Make the model's out_dim (or last width) the number of target columns."))
    target = jax.ShapeDtypeStruct((k,), data.y.dtype)
    try:
        value = eqx.filter_eval_shape(loss, out, target)
    except (TypeError, ValueError) as e:
        raise ValueError(message("loss", f"accept (prediction, target) of shapes ({k},), ({k},)",
                                 f"an error: {_first_line(e)}")) from e
    if getattr(value, "shape", None) != ():
        raise ValueError(message("loss", "return a scalar per example (`loss(prediction, target) -> scalar`)",
                                 f"an output of shape {getattr(value, 'shape', type(value).__name__)}",
                                 "Sum or average over the outputs inside the loss."))
