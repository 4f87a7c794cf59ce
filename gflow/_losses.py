"""Per-example losses, unreduced: `loss(prediction, target) -> scalar`.

`prediction` and `target` have the model's output shape (k,). Binary losses use labels y = ±1
and the margin m = y·f, summed over outputs (k = 1 in the binary setting). A dataset loss is the
mean over examples (see `GradientFlow`), so the flow is dθ/dt = −∇ (1/n) Σ_μ ℓ(f(x_μ), y_μ).
"""

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float


def squared_error(prediction: Float[ArrayLike, " k"], target: Float[ArrayLike, " k"]) -> Float[Array, ""]:
    """ℓ = ½‖f − y‖², summed over outputs (the convention of every gflow MSE theory)."""
    return 0.5 * jnp.sum((prediction - target) ** 2)


def logistic(prediction: Float[ArrayLike, " k"], target: Float[ArrayLike, " k"]) -> Float[Array, ""]:
    """Binary cross-entropy on ±1 labels: ℓ = log(1 + e^{−y f}), computed stably (softplus)."""
    return jnp.sum(jax.nn.softplus(-target * prediction))


def hinge(
    prediction: Float[ArrayLike, " k"], target: Float[ArrayLike, " k"], margin: float = 1.0
) -> Float[Array, ""]:
    """The linear hinge ℓ = max(0, h − y f) with margin h (default 1), on ±1 labels.

    Non-smooth at y f = h: its (sub)gradient there is 0 (JAX's `relu` convention). Pass the kink
    times to the solver, or use `smooth_hinge` explicitly if a smooth surrogate is wanted.
    """
    return jnp.sum(jax.nn.relu(margin - target * prediction))


def quadratic_hinge(
    prediction: Float[ArrayLike, " k"], target: Float[ArrayLike, " k"], margin: float = 1.0
) -> Float[Array, ""]:
    """ℓ = ½ max(0, h − y f)², on ±1 labels (C¹, so adaptive solvers need no kink handling)."""
    return 0.5 * jnp.sum(jax.nn.relu(margin - target * prediction) ** 2)


def smooth_hinge(
    prediction: Float[ArrayLike, " k"],
    target: Float[ArrayLike, " k"],
    margin: float = 1.0,
    sharpness: float = 50.0,
) -> Float[Array, ""]:
    """An explicit smooth surrogate of `hinge`: softplus(β (h − y f))/β, β = `sharpness`.

    Differs from `hinge` by at most log(2)/β; only use where that difference is acceptable.
    """
    return jnp.sum(jax.nn.softplus(sharpness * (margin - target * prediction)) / sharpness)


def cross_entropy(
    prediction: Float[ArrayLike, " k"], target: Float[ArrayLike, " k"]
) -> Float[Array, ""]:
    """Softmax cross-entropy with a one-hot (or probability) target: −Σ_c y_c log softmax(f)_c."""
    return -jnp.sum(target * jax.nn.log_softmax(prediction))


LOSSES = {
    "squared_error": squared_error,
    "logistic": logistic,
    "hinge": hinge,
    "quadratic_hinge": quadratic_hinge,
    "smooth_hinge": smooth_hinge,
    "cross_entropy": cross_entropy,
}
