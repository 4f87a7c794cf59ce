"""`LinearizedMSE`: the exact MSE gradient flow of the linearized (NTK / lazy) model, and the
empirical NTK it is built from.

??? cite "References"
    Jacot, Gabriel & Hongler, "Neural Tangent Kernel: Convergence and Generalization in Neural
    Networks", NeurIPS 2018 (arXiv:1806.07572); Lee et al., "Wide Neural Networks of Any Depth
    Evolve as Linear Models Under Gradient Descent", NeurIPS 2019 (arXiv:1902.06720), Eq. (9)
    and Thm. 2.1.
"""

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..._custom_types import Observables, Times
from ..._losses import squared_error
from ..._validate import check_float_array, message
from .._regime import check_flow
from ..base import AbstractTheory


def empirical_ntk(model, x1: Float[Array, "n1 d"], x2: Float[Array, "n2 d"]) -> Float[Array, "n1k n2k"]:
    """Θ(x1, x2) = J(x1) J(x2)ᵀ (n1·k, n2·k) over the model's trainable arrays, rows and columns
    flattened (sample, output)."""
    params, static = eqx.partition(model, model.trainable())

    def outputs(p, x):
        return jax.vmap(eqx.combine(p, static))(x).reshape(-1)

    j1 = jax.jacrev(outputs)(params, x1)
    j2 = j1 if x2 is x1 else jax.jacrev(outputs)(params, x2)
    leaves1 = jax.tree_util.tree_leaves(j1)
    leaves2 = jax.tree_util.tree_leaves(j2)
    return sum(a.reshape(a.shape[0], -1) @ b.reshape(b.shape[0], -1).T for a, b in zip(leaves1, leaves2))


class LinearizedMSE(AbstractTheory):
    """Exact gradient flow of the linearized (NTK / lazy) model under MSE.

    ??? cite "References"
        Jacot, Gabriel & Hongler, NeurIPS 2018 (arXiv:1806.07572); Lee et al., NeurIPS 2019
        (arXiv:1902.06720), Eq. (9).

    Loss L = (1/2n)‖f(X) − Y‖² (½ mean over samples, sum over outputs), flow dθ/dt = −κ∇L,
    theory clock τ = κt (κ = `time_scale`, the flow's). With Θ = Q diag(λ) Qᵀ the empirical
    NTK at θ0 (nk × nk, flattened (sample, output)) and r0 = Qᵀ(Y − f0(X)):
    f_τ(X) = Y − Q(e^{−λτ/n} r0), f_τ(X*) = f0(X*) + Θ* Q(φ r0) with φ = −expm1(−λτ/n)/λ
    (→ τ/n as λ → 0; no inverse of Θ is needed), and L_τ = (1/2n) Σ e^{−2λτ/n} r0².
    Observables: `outputs` (T, n, k) and `loss` (T,), simulated by the observables of the same
    names; `test_outputs` (T, n*, k) on the `x_test` given to `from_flow`, simulated by
    `gflow.outputs_at(x_test)` saved as "test_outputs". A finite network in NTK scaling tracks
    this to O(1/width) (Lee et al. prove O(width^{−½})); its own linearization
    (`gflow.ntk.LinearizedModel`) exactly.
    """

    targets: Float[Array, "n k"]
    eigenvalues: Float[Array, " nk"]
    eigenvectors: Float[Array, "nk nk"]
    residual0: Float[Array, " nk"]
    test_outputs0: Float[Array, "m k"]
    test_kernel_q: Float[Array, "mk nk"]
    time_scale: Float[Array, ""]

    observables: ClassVar[tuple[str, ...]] = ("outputs", "loss")

    @classmethod
    def from_flow(cls, flow, x_test: Float[Array, "m d"] | None = None) -> "LinearizedMSE":
        """Seed from the network at t = 0: the empirical NTK on the training inputs (and between
        `x_test` (m, d) and them). Any model, `squared_error`, a finite `Dataset`."""
        check_flow("LinearizedMSE", flow, loss=squared_error)
        model, data = flow.model0, flow.data
        x_test = data.x[:0] if x_test is None else check_float_array("x_test", x_test, ndim=2)
        if x_test.shape[-1] != data.d:
            raise ValueError(message("x_test", f"have d = {data.d} columns", x_test.shape))
        n, k = data.y.shape
        theta = empirical_ntk(model, data.x, data.x)
        lam, Q = jnp.linalg.eigh(0.5 * (theta + theta.T))
        lam = jnp.maximum(lam, 0.0)
        f0 = jax.vmap(model)(data.x)
        test_kernel = empirical_ntk(model, x_test, data.x) if x_test.shape[0] else jnp.zeros((0, n * k), lam.dtype)
        return cls(
            targets=data.y,
            eigenvalues=lam,
            eigenvectors=Q,
            residual0=Q.T @ (data.y - f0).reshape(-1),
            test_outputs0=jax.vmap(model)(x_test),
            test_kernel_q=test_kernel @ Q,
            time_scale=jnp.asarray(flow.time_scale, lam.dtype),
        )

    def observables_at(self, tau: Times) -> Observables:
        """`outputs` (T, n, k), `test_outputs` (T, n*, k) and `loss` (T,) at theory times τ = κt (T,)."""
        n, k = self.targets.shape
        lam = self.eigenvalues[None, :]
        t = tau[:, None] / n
        r0 = self.residual0[None, :]
        decay = jnp.exp(-lam * t)
        tiny = lam <= 1e-14 * jnp.max(lam)
        phi = jnp.where(tiny, t, -jnp.expm1(-lam * t) / jnp.where(tiny, 1.0, lam))
        T = tau.shape[0]
        train = self.targets[None] - ((decay * r0) @ self.eigenvectors.T).reshape(T, n, k)
        test = self.test_outputs0[None] + ((phi * r0) @ self.test_kernel_q.T).reshape(T, *self.test_outputs0.shape)
        loss = jnp.sum(decay**2 * r0**2, axis=-1) / (2 * n)
        return {"outputs": train, "test_outputs": test, "loss": loss}
