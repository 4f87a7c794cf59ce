"""Multi-class extension (Tachet des Combes et al. 2018): balanced K-class softmax cross-entropy on
one mode per class.

??? cite "Reference"
    Tachet des Combes, Pezeshki, Shabanian, Courville & Bengio, "On the Learning Dynamics of
    Deep Neural Networks", arXiv:1809.06848 (2018), multi-class extension.
"""

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from ..._custom_types import Observables, Times
from ..._data.base import Dataset
from ..._losses import cross_entropy
from ..._models.two_layer import TwoLayer
from ..._special import expi, invert_increasing
from ..._validate import regime_error
from .._regime import check_flow
from ..base import AbstractTheory
from .features import require_concrete


def logit_gaps(t, params, flow) -> Float[Array, " n"]:
    """Observable F_c − F_{c'} per sample (n,): the logit of its class c minus that of class
    c' = c + 1 mod K (all other logits are equal under the balanced proper init)."""
    F = jax.vmap(flow.model(params))(flow.data.x)
    c = jnp.argmax(flow.data.y, axis=1)
    other = (c + 1) % F.shape[1]
    return jnp.take_along_axis(F, c[:, None], 1)[:, 0] - jnp.take_along_axis(F, other[:, None], 1)[:, 0]


class SoftmaxModes(AbstractTheory):
    """K-class softmax cross-entropy, class c = n_c copies of s e_c, balanced proper init.

    ??? cite "Reference"
        Tachet des Combes, Pezeshki, Shabanian, Courville & Bengio, "On the Learning Dynamics
        of Deep Neural Networks", arXiv:1809.06848 (2018) (multi-class extension).

    Logits F = V relu(W x) with W = diag(u) (plus non-positive off-diagonals) and column c of V
    with diagonal a_c and equal off-diagonals b_c. With m = a − b, κ_K = K/(K−1) and the logit gap
    z = F_c − F_{c'} = s u m, on the theory clock τ = κt (κ the flow's `time_scale`):
    du/dτ = p s m r, dm/dτ = κ_K p s u r, r = (K−1)/(eᶻ + K − 1). Balanced (m₀ = √κ_K u₀):
    ln(z/z₀) + [Ei(z) − Ei(z₀)]/(K−1) = 2 p s √κ_K τ, inverted by bracketed Newton in ln z.
    Fields z0, p (K,), s, mode_of_sample (n,), time_scale κ. Observables `logit_gaps` (T, n) and
    `loss` (T,).
    """

    z0: Float[Array, " K"]
    p: Float[Array, " K"]
    s: Float[Array, ""]
    mode_of_sample: Int[Array, " n"]
    time_scale: Float[Array, ""]
    observables: ClassVar[dict] = {"logit_gaps": logit_gaps, "loss": "loss"}

    @classmethod
    def from_flow(cls, flow, *, atol: float = 1e-10) -> "SoftmaxModes":
        """Seed from a bias-free relu `TwoLayer` with K outputs under `cross_entropy` (one-hot
        labels)."""
        name = cls.__name__
        check_flow(name, flow, model=TwoLayer, loss=cross_entropy, data=Dataset)
        model = flow.model0
        if model.b is not None or model.activation is not jax.nn.relu:
            raise regime_error(name, "a bias-free relu TwoLayer", "got biases or another activation",
                               "Build it with activation 'relu' and bias=False.")
        require_concrete(model.w, flow.data.x)
        x, y = np.asarray(flow.data.x), np.asarray(flow.data.y)
        K = y.shape[1]
        c = np.argmax(y, axis=1)
        if K < 2 or not np.array_equal(y, np.eye(K)[c]):
            raise regime_error(name, "one-hot labels with K ≥ 2 classes", f"got y of shape {y.shape}")
        s = np.linalg.norm(x[0])
        target = s * np.eye(x.shape[1])[c]
        if not np.allclose(x, target, rtol=0, atol=atol * s):
            i = int(np.argmax(np.any(~np.isclose(x, target, rtol=0, atol=atol * s), axis=1)))
            raise regime_error(name, "class c = copies of s e_c (one norm s for all classes)",
                               f"sample {i} of class {c[i]} is not s e_{c[i]}")
        W, V = np.asarray(model.w)[:, :K], np.asarray(model.a)
        off = ~np.eye(K, dtype=bool)
        if W.shape[0] != K or np.any(W[off] > 0) or np.any(np.diag(W) <= 0):
            raise regime_error(name, "W = diag(u > 0) plus non-positive off-diagonals (one unit per class)",
                               "the first layer is not of that form", "Use a proper_init-style first layer.")
        u, a = np.diag(W), np.diag(V)
        b = np.array([V[(j + 1) % K, j] for j in range(K)])
        equal = np.all([np.allclose(np.delete(V[:, j], j), b[j], rtol=0, atol=atol) for j in range(K)])
        kappa = K / (K - 1)
        m = a - b
        if not equal or np.any(np.abs(m - np.sqrt(kappa) * u) > atol * np.abs(m)):
            raise regime_error(name, "a balanced init: column c of V = (a_c on the diagonal, b_c elsewhere) "
                               "with a_c − b_c = √(K/(K−1)) u_c", f"got u = {u.tolist()}, a − b = {m.tolist()}")
        p = np.bincount(c, minlength=K) / len(c)
        dt = model.w.dtype
        return cls(jnp.asarray(s * u * m, dt), jnp.asarray(p, dt), jnp.asarray(s, dt), jnp.asarray(c),
                   jnp.asarray(flow.time_scale, dt))

    def margins_on_clock(self, tau: Float[Array, " T"]) -> Float[Array, "T K"]:
        """Logit gaps z_c at theory times τ (T,) = κt."""
        K = self.z0.shape[0]
        rhs = 2.0 * self.s * np.sqrt(K / (K - 1)) * self.p[None, :] * tau[:, None]

        def one(z0, target):
            lhs = lambda y, _: y - jnp.log(z0) + (expi(jnp.exp(y)) - expi(z0)) / (K - 1)
            return jnp.exp(invert_increasing(lhs, target, jnp.log(z0), jnp.log(700.0)))

        return jax.vmap(jax.vmap(one))(jnp.broadcast_to(self.z0, rhs.shape), rhs)

    def mode_margins(self, ts: Times) -> Float[Array, "T K"]:
        """Per-class logit gaps z_c at flow times `ts` (T,). Compiled once per shape."""
        return _softmax_margins(self, jnp.asarray(ts, self.z0.dtype))

    def observables_at(self, tau: Times, **solver_options) -> Observables:
        z = self.margins_on_clock(tau)
        K = self.z0.shape[0]
        return {"logit_gaps": z[:, self.mode_of_sample], "loss": jnp.log1p((K - 1) * jnp.exp(-z)) @ self.p}


@eqx.filter_jit
def _softmax_margins(theory: SoftmaxModes, ts):
    return theory.margins_on_clock(theory.time_scale * ts)
