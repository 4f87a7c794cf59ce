"""Simulation observables of the Pellegrini–Biroli theories, `(t, params, flow) -> value`.

??? cite "Reference"
    F. Pellegrini and G. Biroli, NeurIPS 2020 (arXiv:2006.11209), §2–3 (Fig. 1: a_i(t), w∥_i(t)).

Each works from the flow alone: the teacher ŵ* is the one the flow's data records
(`separable_gaussian`), the margin h is that of the flow's hinge loss. `node_observables(teacher=…)`
gives the same functions for a dataset that records no teacher. M is the stored width (padding
units, which stay 0, included); P the samples that count.
"""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..._validate import message
from .setup import margin_of, teacher_of


def _teacher(flow, teacher):
    return teacher_of(flow.data) if teacher is None else jnp.asarray(teacher, flow.data.x.dtype)


def a(t, params, flow) -> Float[Array, " M"]:
    """Second-layer weights a_i (M,)."""
    return flow.model(params).a[0]


def w_par(t, params, flow, teacher=None) -> Float[Array, " M"]:
    """Teacher projections w∥_i = ŵ*·w_i (M,)."""
    return flow.model(params).w @ _teacher(flow, teacher)


def w_perp(t, params, flow, teacher=None) -> Float[Array, "M d"]:
    """Perpendicular parts w⊥_i = w_i − w∥_i ŵ* (M, d) (frozen by the mean-field solution)."""
    u = _teacher(flow, teacher)
    w = flow.model(params).w
    return w - (w @ u)[:, None] * u[None, :]


def balance(t, params, flow) -> Float[Array, " M"]:
    """a_i² − |w_i|² (M,): conserved per node for ReLU without biases (homogeneity)."""
    m = flow.model(params)
    return m.a[0] ** 2 - jnp.sum(m.w**2, axis=-1)


def v(t, params, flow) -> Float[Array, " d"]:
    """v = (1/M) Σ_i a_i w_i (d,), M the real width (f = α v·x/√d for linear σ)."""
    m = flow.model(params)
    return (m.output_scale / m.alpha) * (m.a[0] @ m.w)


def unsatisfied_fraction(t, params, flow) -> Float[Array, ""]:
    """Fraction of training samples with y f(x) < h (the active set U), h the loss's margin."""
    h = margin_of(flow.loss)
    if h is None:
        raise ValueError(message("flow.loss", "be the linear hinge (gflow.hinge or hinge_with_margin(h))",
                                 getattr(flow.loss, "__name__", repr(flow.loss))))
    m = flow.model(params)
    yf = flow.data.y[:, 0] * jax.vmap(m)(flow.data.x)[:, 0]
    return flow.data.sample_mean((yf < h).astype(yf.dtype))


def loss(t, params, flow) -> Float[Array, ""]:
    """The training hinge loss L."""
    return flow.loss_value(params)


class WithTeacher(eqx.Module):
    """An observable with a given teacher ŵ* (static, so equal teachers share one compile)."""

    fn: Callable = eqx.field(static=True)
    teacher: tuple = eqx.field(static=True)

    def __call__(self, t, params, flow):
        return self.fn(t, params, flow, teacher=jnp.asarray(self.teacher, flow.data.x.dtype))


def node_observables(teacher: Float[Array, " d"] | None = None) -> dict[str, Callable]:
    """All the node observables: `a` (M,), `w_par` (M,), `w_perp` (M, d), `balance` (M,), `v` (d,),
    `unsatisfied_fraction`, `loss`. `teacher` (d,): ŵ* for data that record none (normalised)."""
    if teacher is None:
        par, perp = w_par, w_perp
    else:
        t = jnp.asarray(teacher, dtype=float)
        if t.ndim != 1:
            raise ValueError(message("teacher", "be a 1-D unit vector ŵ* (d,)", f"shape {t.shape}"))
        t = tuple(float(x) for x in t / jnp.linalg.norm(t))
        par, perp = WithTeacher(w_par, t), WithTeacher(w_perp, t)
    return {"a": a, "w_par": par, "w_perp": perp, "balance": balance, "v": v,
            "unsatisfied_fraction": unsatisfied_fraction, "loss": loss}


#: The pairs of the mean-field node theories (`MeanFieldHinge`, `MeanFieldHingeFiniteP`).
NODE_OBSERVABLES = {"a": a, "w_par": w_par, "unsatisfied_fraction": unsatisfied_fraction, "loss": loss}
#: The pairs of `LinearMeanFieldMoments`.
MOMENT_OBSERVABLES = {"v": v, "unsatisfied_fraction": unsatisfied_fraction, "loss": loss}
