"""The simulated side of the failed-training phase diagram (Tachet des Combes et al. 2018): final
margins of a single relu unit on one mode over a batch of inits, in one vmapped solve.

??? cite "Reference"
    Tachet des Combes, Pezeshki, Shabanian, Courville & Bengio, "On the Learning Dynamics of
    Deep Neural Networks", arXiv:1809.06848 (2018), failed training regions.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..._flow import GradientFlow, solve_flow
from ..._losses import logistic
from ..._models.two_layer import TwoLayer
from .setup import orthogonal_features


def phase_map_margins(u0: Float[Array, " m"], vt0: Float[Array, " m"], t1: float = 100.0, *,
                      rtol: float = 1e-8, atol: float = 1e-10) -> Float[Array, " m"]:
    """Simulated margin z(t1) of f(x) = v relu(u x) on one sample x = 1, y = +1 (s = p = 1) under
    cross-entropy, for each init (u₀, ṽ₀ = v₀) of the batch (m,); t1 on the flow's clock. One
    vmapped explicit (Tsit5) solve, compiled once per batch size. Compare with `phase_region` and `crossing_time`:
    z(t1) > 0 exactly where the unit starts in S, or in R with t_c < t1; z = 0 in D and F."""
    return _phase_map_margins(jnp.asarray(u0), jnp.asarray(vt0), float(t1), float(rtol), float(atol))


@eqx.filter_jit
def _phase_map_margins(u0, vt0, t1, rtol, atol):
    data = orthogonal_features((1.0,), (1,), (1.0,), 1, dtype=u0.dtype)

    def final_margin(u, v):
        model = TwoLayer(1, 1, "relu", w=u.reshape(1, 1), a=v.reshape(1, 1))
        sol = solve_flow(GradientFlow(model, logistic, data), t1, ts=jnp.array([t1], u0.dtype),
                         observables=["margins"], solver="explicit", rtol=rtol, atol=atol)
        return sol.observables["margins"][-1, 0]

    return jax.vmap(final_margin)(u0, vt0)
