"""Gradient starvation by frequency (Tachet des Combes et al. 2018) as a 2-D reduced ODE.

??? cite "Reference"
    Tachet des Combes, Pezeshki, Shabanian, Courville & Bengio, "On the Learning Dynamics of
    Deep Neural Networks", arXiv:1809.06848 (2018), gradient starvation.
"""

from typing import ClassVar

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..._custom_types import Observables, Times
from ..._data.base import Dataset
from ..._losses import logistic
from ..._models.chain import ReLUChain
from ..._validate import regime_error
from .._regime import check_flow
from ..base import AbstractReducedODE
from .features import require_concrete
from .margins import linear_weights


class FrequencyStarvation(AbstractReducedODE):
    """A linear classifier f = w·x, label +1, where a fraction q of the samples is x = s₁e₁ + s₂e₂
    and the rest x = s₁e₁ (`cooccurring_features`). With m_b = s₁w₁ + s₂w₂ and m₁ = s₁w₁, on the
    theory clock τ = κt:

        dw₁/dτ = q s₁ σ(−m_b) + (1−q) s₁ σ(−m₁),  dw₂/dτ = q s₂ σ(−m_b).

    No closed form. Since d(w₁/s₁ − w₂/s₂)/dτ = (1−q)σ(−m₁) > 0, the rarer feature 2 always
    lags, by more the rarer it is.

    ??? cite "Reference"
        Tachet des Combes, Pezeshki, Shabanian, Courville & Bengio, "On the Learning Dynamics
        of Deep Neural Networks", arXiv:1809.06848 (2018) ("gradient starvation").

    State (w₁, w₂); the other coordinates `w_rest` (d − 2,) never move. Fields q, norms (2,),
    w0 (2,), w_rest, time_scale κ. Observable `weights` (T, d). `evaluate` integrates with Dopri8
    at rtol 1e-12 / atol 1e-14 unless solver options are given.
    """

    q: Float[Array, ""]
    norms: Float[Array, " 2"]
    w0: Float[Array, " 2"]
    w_rest: Float[Array, " r"]
    time_scale: Float[Array, ""]
    observables: ClassVar[dict] = {"weights": linear_weights}

    @classmethod
    def from_flow(cls, flow) -> "FrequencyStarvation":
        """Seed from a depth-1 `ReLUChain` under `logistic` on `cooccurring_features` data."""
        name = cls.__name__
        check_flow(name, flow, model=ReLUChain, loss=logistic, data=Dataset)
        model = flow.model0
        if model.depth != 1:
            raise regime_error(name, "a linear classifier (depth-1 ReLUChain) under the logistic loss",
                               f"got a ReLUChain of depth {model.depth}")
        require_concrete(model.v, flow.data.x)
        x, y = np.asarray(flow.data.x), np.asarray(flow.data.y)[:, 0]
        s1, s2 = x[0, 0], x[0, 1]
        both = np.all(x == x[0], axis=1)
        first = (x[:, 0] == s1) & np.all(x[:, 1:] == 0, axis=1)
        bad = ~(both | first) | (y != 1)
        if np.any(bad) or s2 == 0 or np.any(x[0, 2:] != 0):
            i = int(np.argmax(bad)) if np.any(bad) else 0
            raise regime_error(name, "samples s₁e₁ + s₂e₂ (first) or s₁e₁, all labelled +1 "
                               "(gflow.tachet.cooccurring_features)",
                               f"sample {i} is {x[i].tolist()} with label {y[i]:+g}")
        dt = model.v.dtype
        return cls(jnp.asarray(both.mean(), dt), jnp.asarray([s1, s2], dt), model.v[0, :2], model.v[0, 2:],
                   jnp.asarray(flow.time_scale, dt))

    def initial_state(self):
        return self.w0

    def vector_field(self, tau, w, args):
        s1, s2 = self.norms[0], self.norms[1]
        g_both = self.q * jax.nn.sigmoid(-(s1 * w[0] + s2 * w[1]))
        d1 = s1 * (g_both + (1.0 - self.q) * jax.nn.sigmoid(-s1 * w[0]))
        return jnp.stack([d1, s2 * g_both])

    def readout(self, tau, w) -> Observables:
        return {"weights": jnp.concatenate([w, self.w_rest])}

    def observables_at(self, tau: Times, **solver_options) -> Observables:
        options = {"solver": diffrax.Dopri8(), "rtol": 1e-12, "atol": 1e-14, **solver_options}
        return super().observables_at(tau, **options)
