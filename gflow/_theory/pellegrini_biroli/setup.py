"""The problem Pellegrini & Biroli define, in gflow's convention.

??? cite "Reference"
    F. Pellegrini and G. Biroli, "An analytic theory of shallow networks dynamics for hinge loss
    classification", NeurIPS 2020 (arXiv:2006.11209), §2.

Convention: x ~ N(0, I_d), teacher unit vector ŵ*, y = sign(ŵ*·x) (noiseless, β* → ∞);
f(x) = (α/M) Σ_i a_i σ(w_i·x/√d) (`TwoLayer(..., scaling="mean_field")`, no biases);
L = (1/P) Σ_μ max(0, h − y_μ f(x_μ)); the mean-field clock τ = α t / M, i.e. the flow is built
with `time_scale = M/α` (`mean_field_time_scale`), so that its clock t is τ.
λ = k/√d with k = ½ for ReLU and 1 for linear σ. x∥ = ŵ*·x, w∥ = ŵ*·w, w⊥ = w − w∥ ŵ*.
"""

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ..._data.base import Dataset, InputOutputModes
from ..._flow.problem import GradientFlow
from ..._losses import hinge
from ..._models.two_layer import TwoLayer
from ..._validate import check_float_array, is_concrete, message

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
#: k in λ = k/√d: ReLU acts as ½ × the linear activation on a set symmetric under x → −x.
GAINS = {"relu": 0.5, "linear": 1.0}


def check_count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        what = "the number of hidden nodes M" if "width" in name else "a count"
        raise ValueError(message(name, f"be an integer ≥ 1 ({what})", repr(value)))
    return int(value)


def check_margin(margin) -> None:
    if is_concrete(margin) and not float(np.asarray(margin)) > 0:
        raise ValueError(message("margin", "be > 0 (the hinge margin h; the theory divides by it)", margin,
                                 "Use h = 1 as in the paper."))


def gain(activation: str, d: int) -> float:
    """λ = k/√d (k = ½ for ReLU, 1 for linear σ)."""
    if activation not in GAINS:
        raise ValueError(message("activation", f"be one of {tuple(GAINS)}", repr(activation)))
    return GAINS[activation] / math.sqrt(check_count("d", d))


def mean_field_time_scale(width: int | float, alpha: float) -> float:
    """The `GradientFlow(time_scale=...)` that puts the flow on the mean-field clock τ = α t / M.

    The flow of L in plain time has rate 1/M per node; dθ/dτ = −(M/α)∇L makes curves width
    independent. Returns M/α.
    """
    width = check_count("width", width)
    if not float(alpha) > 0:
        raise ValueError(message("alpha", "be > 0 (the mean-field output scale α)", alpha))
    return width / float(alpha)


def hinge_with_margin(margin: float) -> Callable:
    """The linear hinge max(0, h − y f) with margin h = `margin` (> 0), as a per-example loss.

    One object per margin value: flows with equal margins have equal losses (the loss is static
    in a `GradientFlow`), so their solves share one compile."""
    check_margin(margin)
    return _hinge_partial(float(margin))


@functools.cache
def _hinge_partial(margin: float) -> Callable:
    return functools.partial(hinge, margin=margin)


def margin_of(loss: Callable) -> float | None:
    """The margin h of gflow's linear hinge (`hinge` or `hinge_with_margin(h)`); None for any other loss."""
    if isinstance(loss, functools.partial) and loss.func is hinge and not loss.args:
        return float(loss.keywords.get("margin", 1.0))
    return 1.0 if loss is hinge else None


def mean_field_hinge_flow(model: TwoLayer, data: Dataset, margin: float = 1.0) -> GradientFlow:
    """`GradientFlow` of a mean-field `TwoLayer` under the hinge with margin h, on the clock τ = α t/M
    (M = the real width, `active_width`, for a padded model; it may be traced)."""
    if not isinstance(model, TwoLayer) or model.scaling != "mean_field":
        raise ValueError(message("model", 'be a TwoLayer with scaling="mean_field"',
                                 getattr(model, "scaling", type(model).__name__)))
    if model.active_width is not None:
        time_scale = model.active_width / model.alpha
    else:
        time_scale = mean_field_time_scale(model.width, model.alpha)
    return GradientFlow(model, hinge_with_margin(margin), data, time_scale=time_scale)


def _unit(name: str, teacher, d: int) -> Float[Array, " d"]:
    if teacher is None:
        return jnp.eye(d)[0]
    teacher = check_float_array(name, teacher, ndim=1)
    if teacher.shape != (d,):
        raise ValueError(message(name, f"have shape (d,) = ({d},)", teacher.shape))
    return teacher / jnp.linalg.norm(teacher)


def teacher_modes(teacher: Float[Array, " d"]) -> InputOutputModes:
    """The population input–output mode of y = sign(ŵ*·x), x ~ N(0, I_d): Syx = √(2/π) ŵ*ᵀ,
    Sxx = I; its `V[:, 0]` is the teacher ŵ* (how a `Dataset` records its teacher)."""
    one = jnp.ones((1,), teacher.dtype)
    return InputOutputModes(one[:, None], SQRT_2_OVER_PI * one, teacher[:, None], one)


def recorded_teacher(data) -> Float[Array, " d"] | None:
    """The teacher ŵ* a dataset records (`separable_gaussian` stores it as its one mode), or None."""
    modes = getattr(data, "modes", None)
    if modes is None or modes.V.ndim != 2 or modes.V.shape[1] != 1 or modes.U.shape != (1, 1):
        return None
    v = modes.V[:, 0]
    return v / jnp.linalg.norm(v)


def teacher_of(data, teacher: Float[Array, " d"] | None = None, *, name: str = "teacher") -> Float[Array, " d"]:
    """`teacher` (normalised) if given, else the one the dataset records; a named error if neither."""
    if teacher is not None:
        return _unit(name, teacher, data.x.shape[-1])
    found = recorded_teacher(data)
    if found is None:
        raise ValueError(message(name, "be given, or the data record its teacher", "a dataset without one",
                                 "Build the data with gflow.pellegrini_biroli.separable_gaussian, or pass "
                                 "`teacher=` (the unit vector ŵ* of y = sign(ŵ*·x))."))
    return found


def separable_gaussian(
    num_samples: int,
    d: int,
    *,
    key: PRNGKeyArray,
    teacher: Float[Array, " d"] | None = None,
    stratified: bool = False,
    symmetrized: bool = False,
) -> Dataset:
    """Linearly separable Gaussian data: x ~ N(0, I_d), y = sign(ŵ*·x) (noiseless, β* → ∞).

    `teacher` defaults to e_1; the dataset records it (`modes`: the population mode Syx =
    √(2/π) ŵ*ᵀ, so observables and theories find ŵ* from the flow alone). `stratified=True`
    replaces |x∥| by half-normal quantiles (the P = ∞ drive is then matched to O(1/P)).
    `symmetrized=True` draws P/4 base points and adds the copies x∥ → −x∥ and x⊥ → −x⊥ (the
    dataset is closed under x → −x and x⊥ → −x⊥, which makes the mean-field reduction exact at
    finite P); P must then be a multiple of 4. Returns a `Dataset` with x (P, d), y (P, 1).
    """
    num_samples = check_count("num_samples", num_samples)
    teacher = _unit("teacher", teacher, check_count("d", d))
    n = num_samples // 4 if symmetrized else num_samples
    if symmetrized and num_samples % 4:
        raise ValueError(message("num_samples", "be a multiple of 4 when `symmetrized=True`", num_samples))
    kx, kp, ks = jr.split(key, 3)
    x = jr.normal(kx, (n, d))
    par = x @ teacher
    perp = x - par[:, None] * teacher[None, :]
    if stratified:
        q = (jnp.arange(n, dtype=float) + 0.5) / n
        mags = jax.scipy.special.ndtri(0.5 + 0.5 * q)
        signs = jnp.where(jr.bernoulli(ks, 0.5, (n,)), 1.0, -1.0)
        par = jr.permutation(kp, mags) * signs
    if symmetrized:
        par = jnp.abs(par)
        par = jnp.concatenate([par, par, -par, -par])
        perp = jnp.concatenate([perp, -perp, -perp, perp])
    x = perp + par[:, None] * teacher[None, :]
    return Dataset(x, jnp.sign(par), modes=teacher_modes(teacher))


def symmetric_population(
    base_width: int, d: int, *, key: PRNGKeyArray, alpha: float = 1.0, activation: str = "relu",
    teacher: Float[Array, " d"] | None = None, init_scale: float = 1.0,
) -> TwoLayer:
    """A mean-field `TwoLayer` of width M = 4·`base_width`, N(0, s²) nodes closed under
    (a, w) → (−a, −w) and w⊥ → −w⊥ (s = `init_scale`, ŵ* = `teacher`, default e_1): with
    symmetrized data (`separable_gaussian(..., symmetrized=True)`) the network output is exactly
    F(τ) x∥ and the finite-P mean-field solution is exact at this finite M."""
    base_width = check_count("base_width", base_width)
    teacher = _unit("teacher", teacher, check_count("d", d))
    kw, ka = jr.split(key)
    w = init_scale * jr.normal(kw, (base_width, d))
    a = init_scale * jr.normal(ka, (base_width,))
    par = w @ teacher
    mirrored = 2.0 * par[:, None] * teacher[None, :] - w  # the w⊥ → −w⊥ copy
    w_all = jnp.concatenate([w, mirrored, -w, -mirrored])
    a_all = jnp.concatenate([a, a, -a, -a])
    return TwoLayer(d, 4 * base_width, activation, scaling="mean_field", alpha=alpha, w=w_all, a=a_all)
