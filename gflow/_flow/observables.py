"""Observables: functions `(t, params, flow) -> PyTree`, saved on the time grid by `solve_flow`."""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._data.base import Dataset, input_output_modes
from .._validate import check_float_array, message
from .sharpness import sharpness


def loss(t, params, flow) -> Float[Array, ""]:
    """L(θ(t)), the mean loss (without the flow's time_scale)."""
    return flow.loss_value(params)


def gradient_norm(t, params, flow) -> Float[Array, ""]:
    """‖∇_θ L(θ(t))‖₂ over all trainable arrays."""
    g = flow.gradient(params)
    return jnp.sqrt(sum(jnp.sum(x**2) for x in jax.tree_util.tree_leaves(g)))


def weight_norms(t, params, flow) -> Float[Array, " leaves"]:
    """Frobenius norm of each trainable array, in `jax.tree_util.tree_leaves` order."""
    return jnp.stack([jnp.linalg.norm(x.ravel()) for x in jax.tree_util.tree_leaves(params)])


def _finite_data(flow, name):
    if not isinstance(flow.data, Dataset):
        raise TypeError(message(f"observable {name!r}", "be used with a finite `Dataset`", type(flow.data).__name__))
    return flow.data


def outputs(t, params, flow) -> Float[Array, "n k"]:
    """f(x_μ) on the training inputs, shape (n, k) (padding samples included)."""
    data = _finite_data(flow, "outputs")
    return jax.vmap(flow.model(params))(data.x)


class _OutputsAt(eqx.Module):
    # A Module holding the inputs as an array leaf (not a fresh closure per call): same-shaped
    # test sets give equal pytree structures, so `solve_flow` reuses its compiled solve.
    x: Float[Array, "n_test d"]

    @property
    def __name__(self) -> str:  # the saved name when given in a list: `observables=[outputs_at(x)]`
        return "test_outputs"

    def __call__(self, t, params, flow) -> Float[Array, "n_test k"]:
        return jax.vmap(flow.model(params))(self.x)

    # Where the observables are held as static metadata (hashed), equal values compare equal
    # (a concrete `x` only): correct, but one compile per distinct `x`.
    def __hash__(self):
        x = np.asarray(self.x)
        return hash((x.shape, x.dtype.str, x.tobytes()))

    def __eq__(self, other):
        return (type(other) is type(self) and self.x.shape == other.x.shape and self.x.dtype == other.x.dtype
                and bool(np.array_equal(np.asarray(self.x), np.asarray(other.x))))


def outputs_at(x: Float[Array, "n_test d"]) -> Callable:
    """An observable giving f(x) on fixed inputs `x` (n_test, d), e.g. a test set: shape
    (n_test, k). It is a Module holding `x`, so solves with different `x` of one shape share
    one compile (named "test_outputs" when passed in a list)."""
    return _OutputsAt(check_float_array("x", x, ndim=2))


def margins(t, params, flow) -> Float[Array, " n"]:
    """y_μ f(x_μ) per training example (binary labels ±1, summed over outputs; padding samples
    included, see `Dataset.sample_mask`)."""
    data = _finite_data(flow, "margins")
    return jnp.sum(data.y * jax.vmap(flow.model(params))(data.x), axis=-1)


def classification_error(t, params, flow) -> Float[Array, ""]:
    """Training 0-1 error: fraction with y·f ≤ 0 (k = 1, f = 0 counts as an error), or with
    argmax f ≠ argmax y (k > 1, one-hot targets)."""
    data = _finite_data(flow, "classification_error")
    f = jax.vmap(flow.model(params))(data.x)
    if data.y.shape[-1] == 1:
        wrong = (data.y[:, 0] * f[:, 0]) <= 0
    else:
        wrong = jnp.argmax(f, axis=-1) != jnp.argmax(data.y, axis=-1)
    return data.sample_mean(wrong.astype(f.dtype))


def _end_to_end(flow, params, name):
    model = flow.model(params)
    if not hasattr(model, "end_to_end"):
        raise TypeError(
            message(f"observable {name!r}", "be used with a linear model that has `end_to_end()` (DeepLinear)",
                    type(model).__name__)
        )
    return model.end_to_end()


def mode_projection(t, params, flow) -> Float[Array, "r r"]:
    """U_rᵀ W(t) V_r: the end-to-end map in the data's input–output mode basis."""
    modes = input_output_modes(_finite_data(flow, "mode_projection"))
    return modes.U.T @ _end_to_end(flow, params, "mode_projection") @ modes.V


def mode_strengths(t, params, flow) -> Float[Array, " r"]:
    """u_α(t) = u_αᵀ W(t) v_α: the end-to-end map projected on each data mode (Saxe)."""
    return jnp.diagonal(mode_projection(t, params, flow))


OBSERVABLES: dict[str, Callable] = {
    "loss": loss,
    "gradient_norm": gradient_norm,
    "weight_norms": weight_norms,
    "outputs": outputs,
    "margins": margins,
    "classification_error": classification_error,
    "mode_strengths": mode_strengths,
    "mode_projection": mode_projection,
    "sharpness": sharpness,
}


def resolve_observables(observables) -> dict[str, Callable]:
    """Names (from OBSERVABLES) or a {name: callable} dict -> {name: callable}."""
    if isinstance(observables, str):
        observables = (observables,)
    if isinstance(observables, dict):
        items = observables.items()
    else:
        items = [(o, o) if isinstance(o, str) else (getattr(o, "__name__", repr(o)), o) for o in observables]
    out = {}
    for name, fn in items:
        if isinstance(fn, str):
            if fn not in OBSERVABLES:
                raise ValueError(message("observables", f"name observables from {tuple(OBSERVABLES)}", repr(fn)))
            fn = OBSERVABLES[fn]
        if not callable(fn):
            raise TypeError(message(f"observables[{name!r}]", "be a callable (t, params, flow) -> PyTree",
                                    type(fn).__name__))
        out[name] = fn
    if not out:
        raise ValueError(message("observables", "name at least one observable", "none"))
    return out
