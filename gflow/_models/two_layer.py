import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from .._validate import check_choice, check_float_array, check_shape, message
from .base import AbstractModel, resolve_activation

SCALINGS = ("standard", "ntk", "mean_field")


class TwoLayer(AbstractModel):
    """One-hidden-layer network on one example x ∈ R^d, output f ∈ R^k (k = `out_dim`).

    Scalings (m = `width`, preactivation z_i = w_i·x + b_i unless stated):
    - "standard":   f = Σ_i a_i σ(z_i);                    init w ~ N(0, s²/d), a ~ N(0, s²/m)
    - "ntk":        f = (1/√m) Σ_i a_i σ(w_i·x/√d + b_i);  init w, a ~ N(0, s²)
    - "mean_field": f = (α/m) Σ_i a_i σ(w_i·x/√d + b_i);   init w, a ~ N(0, s²)
    with s = `init_scale`. `sphere=True` uses z_i = w_i·x/‖w_i‖ + b_i instead (first-layer weights
    normalised in the forward pass, as in Berthier–Montanari–Zhou). `train_first`/`train_second`
    freeze a layer (it stays out of the ODE state); `bias=True` adds trainable first-layer biases.
    Fields: `w` (m, d), `a` (k, m), `b` (m,) or None.
    """

    w: Float[Array, "m d"]
    a: Float[Array, "k m"]
    b: Float[Array, " m"] | None
    activation: Callable = eqx.field(static=True)
    scaling: str = eqx.field(static=True)
    alpha: float = eqx.field(static=True)
    sphere: bool = eqx.field(static=True)
    train_first: bool = eqx.field(static=True)
    train_second: bool = eqx.field(static=True)

    def __init__(
        self,
        d: int,
        width: int,
        activation: str | Callable = "relu",
        *,
        out_dim: int = 1,
        scaling: str = "standard",
        alpha: float = 1.0,
        init_scale: float | Float[Array, ""] = 1.0,
        sphere: bool = False,
        train_first: bool = True,
        train_second: bool = True,
        bias: bool = False,
        key: PRNGKeyArray | None = None,
        w: Array | None = None,
        a: Array | None = None,
        b: Array | None = None,
    ):
        check_choice("scaling", scaling, SCALINGS)
        for name, val in (("d", d), ("width", width), ("out_dim", out_dim)):
            if not isinstance(val, int) or isinstance(val, bool) or val < 1:
                raise ValueError(message(name, "be an integer ≥ 1", repr(val)))
        if w is None or a is None:
            if key is None:
                raise ValueError(message("key", "be a PRNG key when `w` and `a` are not both given", None))
            kw, ka = jr.split(key)
            if scaling == "standard":
                w0 = init_scale * jr.normal(kw, (width, d)) / math.sqrt(d)
                a0 = init_scale * jr.normal(ka, (out_dim, width)) / math.sqrt(width)
            else:
                w0 = init_scale * jr.normal(kw, (width, d))
                a0 = init_scale * jr.normal(ka, (out_dim, width))
            w = w0 if w is None else w
            a = a0 if a is None else a
        w = check_float_array("w", w, ndim=2)
        a = check_float_array("a", a, ndim=(1, 2))
        if a.ndim == 1:
            a = a[None, :]
        check_shape("w", w, (width, d), "(width, d)")
        check_shape("a", a, (out_dim, width), "(out_dim, width)")
        if bias and b is None:
            b = jnp.zeros((width,), w.dtype)
        if b is not None:
            b = check_float_array("b", b, ndim=1)
            check_shape("b", b, (width,), "(width,)")
        self.w, self.a, self.b = w, a, b
        self.activation = resolve_activation(activation)
        self.scaling = scaling
        self.alpha = float(alpha)
        self.sphere = bool(sphere)
        self.train_first = bool(train_first)
        self.train_second = bool(train_second)

    @property
    def width(self) -> int:
        return self.w.shape[-2]

    @property
    def d(self) -> int:
        return self.w.shape[-1]

    def preactivations(self, x: Float[Array, " d"]) -> Float[Array, " m"]:
        """z_i, as used inside σ (see the class docstring)."""
        if self.sphere:
            z = (self.w @ x) / jnp.linalg.norm(self.w, axis=-1)
        elif self.scaling == "standard":
            z = self.w @ x
        else:
            z = (self.w @ x) / math.sqrt(self.d)
        return z if self.b is None else z + self.b

    @property
    def output_scale(self) -> float:
        """The factor in front of Σ_i a_i σ(z_i)."""
        m = self.width
        return {"standard": 1.0, "ntk": 1.0 / math.sqrt(m), "mean_field": self.alpha / m}[self.scaling]

    def __call__(self, x: Float[Array, " d"]) -> Float[Array, " k"]:
        return self.output_scale * (self.a @ self.activation(self.preactivations(x)))

    def trainable(self) -> PyTree[bool]:
        spec = jax.tree_util.tree_map(lambda _: False, self)
        return eqx.tree_at(
            lambda m: (m.w, m.a, m.b),
            spec,
            (self.train_first, self.train_second, self.b is not None and self.train_first),
            is_leaf=lambda x: x is None,
        )
