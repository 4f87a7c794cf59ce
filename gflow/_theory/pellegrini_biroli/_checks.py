"""The regime the Pellegrini–Biroli theories share: a mean-field `TwoLayer` (no biases, one output,
σ = ReLU or linear) under the linear hinge on a finite dataset with ±1 labels."""

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..._data.base import Dataset
from ..._models.base import ACTIVATIONS
from ..._models.two_layer import TwoLayer
from ..._validate import is_concrete, message, regime_error
from .._regime import check_flow
from .setup import GAINS, check_margin, margin_of, recorded_teacher, teacher_of


def check_pb_flow(name: str, flow, teacher=None, *, separable: bool = True, activations=tuple(GAINS)):
    """Refuse a flow outside the shared regime, by name; returns (model, h, ŵ* or None, activation,
    time_scale), with time_scale = α·flow.time_scale/M (τ = time_scale · t: the flow's clock t is τ
    for a flow built by `mean_field_hinge_flow`, whose time_scale is M/α).

    `separable`: also require ±1 labels y = sign(ŵ*·x) (ŵ* given or recorded by the data); without
    it, ŵ* is optional (None when neither given nor recorded)."""
    check_flow(name, flow, model=TwoLayer, model_description='a mean-field TwoLayer (scaling="mean_field")',
               data=Dataset)
    return _seed(name, flow, teacher, separable, activations)


def _seed(name, flow, teacher, separable, activations):
    model = flow.model0
    if model.scaling != "mean_field":
        raise regime_error(name, 'a mean-field TwoLayer (scaling="mean_field")', f"got scaling={model.scaling!r}")
    if model.b is not None or model.sphere or model.a.shape[0] != 1:
        raise regime_error(name, "no biases, no sphere normalisation and one output", "the model has one of them")
    act = next((k for k, f in ACTIVATIONS.items() if f is model.activation), None)
    if act not in activations:
        raise regime_error(name, "σ = " + " or ".join(activations), f"got {act or model.activation}")
    h = margin_of(flow.loss)
    if h is None:
        raise regime_error(name, "the linear hinge loss (gflow.hinge or hinge_with_margin(h))",
                           f"got {getattr(flow.loss, '__name__', type(flow.loss).__name__)}")
    check_margin(h)
    time_scale = jnp.asarray(model.alpha * flow.time_scale / model.width, dtype=model.w.dtype)
    if not separable:
        if teacher is None and recorded_teacher(flow.data) is None:
            return model, h, None, act, time_scale
        return model, h, teacher_of(flow.data, teacher), act, time_scale
    teacher = teacher_of(flow.data, teacher)
    y = flow.data.y[:, 0]
    if is_concrete(y) and not bool(jnp.all(jnp.abs(y) == 1)):
        zero_one = bool(jnp.all((y == 0) | (y == 1)))
        raise regime_error(name, "binary labels y = ±1", "got 0/1 labels" if zero_one else "got labels other than ±1",
                           "Map 0/1 labels to ±1 with `2 * y - 1`." if zero_one else None)
    wrong = jnp.sum(jnp.sign(flow.data.x @ teacher) != y)
    if is_concrete(wrong) and int(wrong) > 0:
        raise regime_error(name, "linearly separable labels y = sign(ŵ*·x)",
                           f"{int(wrong)} of {y.shape[0]} labels disagree with the teacher",
                           "Use noiseless teacher labels (separable_gaussian).")
    return model, h, teacher, act, time_scale


def empirical_moments(a0: Float[Array, " M"], w_par0: Float[Array, " M"]):
    """C0 = ⟨a w∥⟩ and S0 = ⟨a² + w∥²⟩/2 over the nodes at t = 0."""
    return jnp.mean(a0 * w_par0), 0.5 * jnp.mean(a0**2 + w_par0**2)


MOMENTS = ("empirical", "population")


def seed_moments(name: str, moments, a0, w_par0):
    """(C0, S0) for `moments` = "empirical" (the nodes' own), "population" (C0 = 0, S0 = 1: the
    paper's independent N(0, 1) initialisation) or an explicit pair (C0, S0)."""
    if isinstance(moments, str):
        if moments == "empirical":
            return empirical_moments(a0, w_par0)
        if moments == "population":
            return 0.0, 1.0
    elif isinstance(moments, (tuple, list)) and len(moments) == 2:
        C0, S0 = moments
        if is_concrete(C0) and is_concrete(S0) and not float(np.asarray(S0)) > abs(float(np.asarray(C0))):
            raise ValueError(message("moments", "be a pair (C0, S0) with S0 > |C0| (S0 ≥ |C0| for any population)",
                                     (C0, S0)))
        return C0, S0
    raise ValueError(message("moments", f"be one of {MOMENTS} or a pair (C0, S0)", repr(moments)))
