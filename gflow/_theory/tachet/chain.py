"""Depth: a balanced depth-L ReLU chain with one unit per mode and layer (Tachet des Combes et al.
2018).

??? cite "Reference"
    Tachet des Combes, Pezeshki, Shabanian, Courville & Bengio, "On the Learning Dynamics of
    Deep Neural Networks", arXiv:1809.06848 (2018), extension to deeper architectures.
"""

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from ..._custom_types import Observables, Times
from ..._data.base import Dataset
from ..._losses import hinge, logistic
from ..._models.chain import ReLUChain
from ..._special import invert_increasing, lambertw
from ..._validate import regime_error
from .._regime import check_flow
from ..base import AbstractTheory
from .features import feature_modes, require_concrete
from .paths import gauss_legendre_unit


def _depth_clock_integral(z0, z, p, s, depth):
    """τ(z) = ∫_{z₀}^{z} (1 + e^ζ) dζ / (p L s^{2/L} ζ^{2−2/L}) in ln ζ, composite Gauss–Legendre."""
    x, w = gauss_legendre_unit()
    lo, hi = jnp.log(z0), jnp.log(z)
    zeta = jnp.exp(lo + (hi - lo) * x)
    integrand = (1.0 + jnp.exp(zeta)) * zeta ** (2.0 / depth - 1.0)
    return (hi - lo) * jnp.sum(w * integrand) / (p * depth * s ** (2.0 / depth))


class ChainModes(AbstractTheory):
    """A balanced depth-L ReLU chain (`proper_chain_init`), one unit per mode and layer.

    ??? cite "Reference"
        Tachet des Combes, Pezeshki, Shabanian, Courville & Bengio, "On the Learning Dynamics
        of Deep Neural Networks", arXiv:1809.06848 (2018).

    With every layer's strength on mode k equal to a_k, z_k = s_k a_k^L and, on the theory clock
    τ = κt, dz/dτ = p L s^{2/L} z^{2−2/L} g(z). Hinge (L ≥ 3): z = [z₀^{−(L−2)/L} − (L−2) p s^{2/L} τ]^{−L/(L−2)}
    until z = 1 (then frozen); L = 2: z₀e^{2psτ}; L = 1: z₀ + ps²τ. Cross-entropy: the exact
    τ(z) = ∫_{z₀}^{z}(1+e^ζ)dζ/(pLs^{2/L}ζ^{2−2/L}), inverted by bracketed Newton.
    Fields z0, p, s (K,), mode_of_sample (n,), time_scale κ; static depth L and loss ("hinge" or
    "logistic"). Observables `margins` (T, n), `loss` (T,).
    """

    z0: Float[Array, " K"]
    p: Float[Array, " K"]
    s: Float[Array, " K"]
    mode_of_sample: Int[Array, " n"]
    time_scale: Float[Array, ""]
    depth: int = eqx.field(static=True)
    loss: str = eqx.field(static=True)
    observables: ClassVar[tuple[str, ...]] = ("margins", "loss")

    @classmethod
    def from_flow(cls, flow, *, atol: float = 1e-10) -> "ChainModes":
        """Seed from a `ReLUChain` flow (at least one hidden layer) under `hinge` or `logistic`;
        checks the diagonal, balanced proper init mode by mode."""
        name = cls.__name__
        check_flow(name, flow, model=ReLUChain, loss=(hinge, logistic), data=Dataset)
        model = flow.model0
        if model.depth < 2:
            raise regime_error(name, "a ReLUChain with at least one hidden layer",
                               f"got a ReLUChain of depth {model.depth}", "Use LinearCEMargins.")
        require_concrete(model.v, flow.data.x)
        F, mode_of, s, p, y = feature_modes(flow.data, name, atol=atol)
        K = F.shape[1]
        W = [np.asarray(w) for w in model.weights]
        layers = [W[0] @ F] + W[1:]
        strengths = []
        for l, M in enumerate(layers):
            if M.shape != (K, K) or np.any(M[~np.eye(K, dtype=bool)] > 0):
                raise regime_error(name, "a diagonal proper init (one unit per mode, non-positive off-diagonals)",
                                   f"layer {l + 1} has shape {M.shape} or a positive off-diagonal entry",
                                   "Use gflow.tachet.proper_chain_init(...).")
            strengths.append(np.diag(M))
        strengths.append(np.asarray(model.v)[0] * y)
        a = np.stack(strengths)
        unbalanced = np.ptp(a, axis=0) > atol * np.abs(a[0])
        if np.any(unbalanced) or np.any(a <= 0):
            k = int(np.argmax(unbalanced | np.any(a <= 0, axis=0)))
            raise regime_error(name, "a balanced init with positive strengths (every layer equal per mode)",
                               f"mode {k} has layer strengths {a[:, k].tolist()}")
        dt = model.v.dtype
        z0 = s * a[0] ** model.depth
        return cls(jnp.asarray(z0, dt), jnp.asarray(p, dt), jnp.asarray(s, dt), jnp.asarray(mode_of),
                   jnp.asarray(flow.time_scale, dt), model.depth, "hinge" if flow.loss is hinge else "logistic")

    def margins_on_clock(self, tau: Float[Array, " T"]) -> Float[Array, "T K"]:
        """z_k at theory times τ (T,) = κt."""
        L = self.depth
        if self.loss == "hinge":
            t = tau[:, None]
            p, s, z0 = self.p[None, :], self.s[None, :], self.z0[None, :]
            if L == 1:
                z = z0 + p * s**2 * t
            elif L == 2:
                z = z0 * jnp.exp(2 * p * s * t)
            else:
                base = z0 ** (-(L - 2) / L) - (L - 2) * p * s ** (2.0 / L) * t
                z = jnp.where(base > 1.0, jnp.maximum(base, 1.0) ** (-L / (L - 2)), 1.0)
            return jnp.where(z0 >= 1.0, z0, jnp.minimum(z, 1.0))

        def one(z0, p, s, t):
            clock = lambda y, _: _depth_clock_integral(z0, jnp.exp(y), p, s, L)
            return jnp.exp(invert_increasing(clock, t, jnp.log(z0), jnp.log(700.0)))

        per_time = jax.vmap(one, in_axes=(0, 0, 0, None))
        return jax.vmap(per_time, in_axes=(None, None, None, 0))(self.z0, self.p, self.s, tau)

    def mode_margins(self, ts: Times) -> Float[Array, "T K"]:
        """Exact per-mode margins z_k at flow times `ts` (T,). Compiled once per shape."""
        return _chain_margins(self, jnp.asarray(ts, self.z0.dtype))

    def late_time_margins(self, ts: Times) -> Float[Array, "T K"]:
        """Late-time cross-entropy asymptotics at flow times `ts` (T,): z ≈ −α W₋₁(−(Ct)^{−1/α}/α),
        α = 2 − 2/L, C = κ p L s^{2/L} (valid once (Ct)^{−1/α}/α < 1/e, NaN before). The loss then
        falls like 1/(Ct (ln Ct)^α): deeper chains converge faster late. L = 2 gives the leading
        balanced two-layer form. Compiled once per shape."""
        return _chain_late(self, jnp.asarray(ts, self.z0.dtype))

    def observables_at(self, tau: Times, **solver_options) -> Observables:
        z = self.margins_on_clock(tau)
        per_mode = jax.nn.relu(1.0 - z) if self.loss == "hinge" else jax.nn.softplus(-z)
        return {"margins": z[:, self.mode_of_sample], "loss": per_mode @ self.p}


@eqx.filter_jit
def _chain_margins(theory: ChainModes, ts):
    return theory.margins_on_clock(theory.time_scale * ts)


@eqx.filter_jit
def _chain_late(theory: ChainModes, ts):
    L = theory.depth
    alpha = 2.0 - 2.0 / L
    C = theory.time_scale * theory.p * L * theory.s ** (2.0 / L)
    x = C[None, :] * ts[:, None]
    return -alpha * lambertw(-(x ** (-1.0 / alpha)) / alpha, -1)
