"""`TwoLayer`: a one-hidden-layer network with standard, NTK or mean-field scaling."""

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Bool, Float, PRNGKeyArray, PyTree

from .._validate import check_choice, check_float_array, check_shape, is_concrete, message
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

    Padded width (for sweeps over widths in one compile): `active_width` = m' ≤ `width` (an int or
    a traced scalar) keeps units i < m' and makes the rest padding: zero weights, left out of the
    output, so their gradients vanish and they never move. The scalings' m is m' (1/√m', α/m'; the
    standard init draws a ~ N(0, s²/m')), so the padded network computes, and flows, exactly as the
    width-m' network made of the first m' units (`unpadded()` returns that network).
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
    active_width: Float[Array, ""] | None

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
        active_width: int | float | Float[Array, ""] | None = None,
    ):
        check_choice("scaling", scaling, SCALINGS)
        for name, val in (("d", d), ("width", width), ("out_dim", out_dim)):
            if not isinstance(val, int) or isinstance(val, bool) or val < 1:
                raise ValueError(message(name, "be an integer ≥ 1", repr(val)))
        if active_width is not None:
            active_width = _check_active_width(active_width, width)
        if w is None or a is None:
            if key is None:
                raise ValueError(message("key", "be a PRNG key when `w` and `a` are not both given", None))
            kw, ka = jr.split(key)
            if scaling == "standard":
                w0 = init_scale * jr.normal(kw, (width, d)) / math.sqrt(d)
                a0 = init_scale * jr.normal(ka, (out_dim, width))
                m = math.sqrt(width) if active_width is None else jnp.sqrt(jnp.asarray(active_width, a0.dtype))
                a0 = a0 / m
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
        if active_width is not None:  # padding units are zero and stay zero
            active_width = jnp.asarray(active_width, dtype=w.dtype)
            mask = jnp.arange(width, dtype=w.dtype) < active_width
            w = jnp.where(mask[:, None], w, 0.0)
            a = jnp.where(mask[None, :], a, 0.0)
            b = None if b is None else jnp.where(mask, b, 0.0)
        self.w, self.a, self.b = w, a, b
        self.active_width = active_width
        self.activation = resolve_activation(activation)
        self.scaling = scaling
        self.alpha = float(alpha)
        self.sphere = bool(sphere)
        self.train_first = bool(train_first)
        self.train_second = bool(train_second)

    @property
    def width(self) -> int:
        """The number of units stored (padding included; see `active_width`)."""
        return self.w.shape[-2]

    @property
    def unit_mask(self) -> Bool[Array, " m"] | None:
        """True on the real units, False on padding; None when nothing is padded."""
        if self.active_width is None:
            return None
        return jnp.arange(self.width, dtype=self.active_width.dtype) < self.active_width

    def active_fraction(self) -> Float[Array, ""] | None:
        """m'/m, the fraction of real units (`active_width`/`width`); None when nothing is padded."""
        # Every trainable array of a TwoLayer is per unit: the real fraction is m'/m.
        return None if self.active_width is None else self.active_width / self.width

    def unpadded(self) -> "TwoLayer":
        """The network of the first `active_width` units, at its real width (concrete values only)."""
        if self.active_width is None:
            return self
        if not is_concrete(self.active_width):
            raise ValueError(message("active_width", "be concrete to unpad (not traced under jit/vmap)", "a tracer"))
        m = int(self.active_width)
        model = eqx.tree_at(lambda t: (t.w, t.a), self, (self.w[:m], self.a[:, :m]))
        if self.b is not None:
            model = eqx.tree_at(lambda t: t.b, model, self.b[:m])
        return eqx.tree_at(lambda t: t.active_width, model, None)

    @property
    def d(self) -> int:
        """d, the input dimension (the columns of `w`)."""
        return self.w.shape[-1]

    @property
    def input_size(self) -> int:
        """d, the size of one input example x (the same as `d`)."""
        return self.d

    def preactivations(self, x: Float[Array, " d"]) -> Float[Array, " m"]:
        """z_i, as used inside σ (see the class docstring)."""
        if self.sphere:
            norm_sq = jnp.sum(self.w**2, axis=-1)
            if self.active_width is not None:  # padding rows are 0: keep 0/0 out of values and grads
                norm_sq = jnp.where(self.unit_mask, norm_sq, 1.0)
            z = (self.w @ x) / jnp.sqrt(norm_sq)
        elif self.scaling == "standard":
            z = self.w @ x
        else:
            z = (self.w @ x) / math.sqrt(self.d)
        return z if self.b is None else z + self.b

    @property
    def output_scale(self) -> float | Float[Array, ""]:
        """The factor in front of Σ_i a_i σ(z_i) (at the real width, `active_width`, if padded)."""
        if self.scaling == "standard":
            return 1.0
        if self.active_width is None:
            m = self.width
            return 1.0 / math.sqrt(m) if self.scaling == "ntk" else self.alpha / m
        m = self.active_width
        return 1.0 / jnp.sqrt(m) if self.scaling == "ntk" else self.alpha / m

    def __call__(self, x: Float[Array, " d"]) -> Float[Array, " k"]:
        hidden = self.activation(self.preactivations(x))
        if self.active_width is not None:
            hidden = jnp.where(self.unit_mask, hidden, 0.0)  # padding: no output, zero gradients
        return self.output_scale * (self.a @ hidden)

    def trainable(self) -> PyTree[bool]:
        """Filter spec for `eqx.partition`: `w` (and `b`) if `train_first`, `a` if `train_second`."""
        spec = jax.tree_util.tree_map(lambda _: False, self)
        return eqx.tree_at(
            lambda m: (m.w, m.a, m.b),
            spec,
            (self.train_first, self.train_second, self.b is not None and self.train_first),
            is_leaf=lambda x: x is None,
        )


def _check_active_width(active_width, width: int):
    """An integer in [1, width]: a Python error if concrete, `eqx.error_if` if traced."""
    expected = f"be an integer in [1, width = {width}]"
    if is_concrete(active_width):
        value = np.asarray(active_width)
        if value.ndim != 0 or not np.isreal(value) or not (1 <= value <= width) or value != np.round(value):
            raise ValueError(message("active_width", expected, repr(active_width)))
        return active_width
    if jnp.ndim(active_width) != 0:
        raise ValueError(message("active_width", "be a scalar", f"shape {jnp.shape(active_width)}"))
    bad = (active_width < 1) | (active_width > width) | (active_width != jnp.round(active_width))
    return eqx.error_if(active_width, bad, message("active_width", expected, "a value that is not"))
