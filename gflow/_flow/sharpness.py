"""Sharpness: the top eigenvalue of the loss Hessian, matrix-free (Lanczos on Hessian-vector
products), and its gradient.

Conventions (for a `GradientFlow` dθ/dt = −κ ∇L(θ), κ = `flow.time_scale`):

- H(θ) = ∇²L(θ) is the Hessian of the flow's loss L (`flow.loss_value`, the unscaled mean loss),
  not of κL: the sharpness S(θ) = λ_max(H(θ)) does not depend on κ.
- Gradient descent on the flow's clock, θ_{k+1} = θ_k − η κ ∇L(θ_k) at t = η·k (the Euler step
  of the flow with step η), is linearly stable along the top eigenvector iff η κ S < 2: the
  edge of stability is S = 2/(η κ) (Cohen et al., "Gradient Descent on Neural Networks
  Typically Occurs at the Edge of Stability", ICLR 2021, arXiv:2103.00065).
- Flows with per-parameter `rates` r are refused: their stability matrix is diag(r)^½ H diag(r)^½,
  not H, and "sharpness" would be ambiguous.

Everything here works on the params pytree through Hessian-vector products
H v = d/dε ∇L(θ + εv) (`jax.jvp` of `flow.gradient`); `ravel_pytree` is used only inside the
Lanczos iteration to hold its Krylov basis. No dense Hessian is formed. The iteration count is
static, so the functions jit and vmap (over params, v0, or flows) with one compile.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float

from .._custom_types import Params
from .._validate import check_integer, message

#: Lanczos steps by default: enough for the top eigenvalue of the small nets gflow tests to
#: machine precision (the count is clipped to the number of parameters P, where the Krylov
#: space is the whole space and the answer is exact up to round-off).
DEFAULT_ITERATIONS = 48


def _check_flow(flow, name: str) -> None:
    if getattr(flow, "rates", None) is not None:
        raise ValueError(message(
            "flow.rates", f"be None for {name} (the sharpness is λ_max of ∇²L for one rate)",
            "per-parameter rates",
            "Drop `rates=` from the GradientFlow; with rates r the stability matrix is "
            "diag(r)^½ ∇²L diag(r)^½."))


def hessian_vector_product(flow, params: Params, v: Params) -> Params:
    """H(θ) v = ∇²L(θ) v (Hessian of the flow's loss L, without κ), a pytree like `params`.

    Forward-over-reverse: `jax.jvp(flow.gradient, (params,), (v,))`."""
    return jax.jvp(flow.gradient, (params,), (v,))[1]


def _lanczos(matvec, v0: Float[Array, " P"], m: int):
    """m steps of Lanczos with full reorthogonalisation (classical Gram–Schmidt, twice).

    Returns the Ritz pair of the largest algebraic Ritz value. On breakdown (an invariant
    subspace found, β ≈ 0) it continues from a fresh vector orthogonal to the basis with β = 0,
    so the tridiagonal matrix stays block-diagonal and its eigenvalues stay Ritz values of H
    (no spurious zeros)."""
    P = v0.shape[0]
    dtype = v0.dtype
    eps = jnp.finfo(dtype).eps
    q0 = v0 / jnp.linalg.norm(v0)
    # restart vectors for breakdowns, drawn once (an RNG inside the loop body compiles slowly)
    restarts = jr.normal(jr.PRNGKey(0), (m, P), dtype)

    def orthogonalise(Q, w):
        w = w - Q.T @ (Q @ w)
        return w - Q.T @ (Q @ w)

    def step(carry, j):
        Q, q, beta_prev, q_prev, scale = carry
        Q = Q.at[j].set(q)
        w = matvec(q)
        alpha = jnp.vdot(q, w)
        w = w - alpha * q - beta_prev * q_prev
        w = orthogonalise(Q, w)
        beta = jnp.linalg.norm(w)
        scale = jnp.maximum(scale, jnp.abs(alpha) + beta)
        broke = beta <= 1e3 * eps * scale
        fresh = orthogonalise(Q, restarts[j])
        fresh = fresh / jnp.linalg.norm(fresh)
        q_next = jnp.where(broke, fresh, w / jnp.where(broke, 1.0, beta))
        beta = jnp.where(broke, 0.0, beta)
        return (Q, q_next, beta, q, scale), (alpha, beta)

    zero = jnp.zeros((), dtype)
    init = (jnp.zeros((m, P), dtype), q0, zero, jnp.zeros_like(q0), zero)
    (Q, *_), (alphas, betas) = jax.lax.scan(step, init, jnp.arange(m))
    T = jnp.diag(alphas) + jnp.diag(betas[:-1], 1) + jnp.diag(betas[:-1], -1)
    evals, evecs = jnp.linalg.eigh(T)
    u = Q.T @ evecs[:, -1]
    u = u / jnp.linalg.norm(u)
    u = jnp.where(jnp.vdot(u, v0) < 0, -u, u)  # sign: along the warm start
    return evals[-1], u


def top_hessian_eigenpair(
    flow, params: Params, v0: Params | None = None, *, num_iterations: int = DEFAULT_ITERATIONS
) -> tuple[Float[Array, ""], Params]:
    """The largest algebraic eigenvalue λ_max of H(θ) = ∇²L(θ) and its unit eigenvector.

    - `flow`: a `GradientFlow` without `rates`; H is the Hessian of its loss L (not of κL).
    - `params`: θ, the trainable pytree (P entries in all).
    - `v0`: start vector, a pytree like `params` (e.g. the previous eigenvector along a
      trajectory: warm start); default a fixed pseudo-random vector.
    - `num_iterations`: Lanczos steps m (static; clipped to P, where the result is exact to
      round-off). Costs m Hessian-vector products and O(m²P) for the reorthogonalisation.

    Returns (λ_max scalar, u pytree like `params` with ‖u‖ = 1 and ⟨u, v0⟩ ≥ 0). Jit-able and
    vmappable over `params`/`v0` (one compile per shape). Lanczos with full reorthogonalisation
    (Golub & Van Loan, "Matrix Computations", §10.1–10.3).
    """
    _check_flow(flow, "top_hessian_eigenpair")
    m = check_integer("num_iterations", num_iterations, minimum=1)
    flat, unravel = ravel_pytree(params)
    P = flat.shape[0]
    m = min(m, P)
    if v0 is None:
        start = jr.normal(jr.PRNGKey(20211), (P,), flat.dtype)
    else:
        start, _ = ravel_pytree(v0)
        if start.shape != flat.shape:
            raise ValueError(message("v0", f"have the sizes of `params` ({P} entries)",
                                     f"{start.shape[0]} entries"))
        start = start.astype(flat.dtype)

    return _eigenpair(flow, params, start, m)


@eqx.filter_jit
def _eigenpair(flow, params, start, m: int):
    # compiled once per (flow structure, shapes, m): a plain call does not re-trace the scan
    _, unravel = ravel_pytree(params)

    def matvec(x):
        return ravel_pytree(hessian_vector_product(flow, params, unravel(x)))[0]

    lam, u = _lanczos(matvec, start, m)
    return lam, unravel(u)


def sharpness(
    t, params: Params, flow, *, num_iterations: int = DEFAULT_ITERATIONS
) -> Float[Array, ""]:
    """S(θ(t)) = λ_max(∇²L(θ(t))), the top Hessian eigenvalue of the flow's loss (without κ).

    The observable "sharpness" (`(t, params, flow) -> scalar`, `t` unused). Gradient descent
    with step η on the flow's clock is at the edge of stability where η κ S = 2. Starts from a
    fixed vector (an observable has no memory); use `top_hessian_eigenpair(..., v0=u_prev)` to
    warm-start along a trajectory."""
    return top_hessian_eigenpair(flow, params, num_iterations=num_iterations)[0]


def sharpness_gradient(flow, params: Params, u: Params) -> Params:
    """∇_θ (uᵀ H(θ) u) with u held fixed, a pytree like `params`.

    With u the unit top eigenvector of a simple top eigenvalue this is ∇S = ∇λ_max
    (Hellmann–Feynman / Danskin: ∂λ = uᵀ (∂H) u). Computed as `jax.grad` of
    θ ↦ ⟨u, H(θ) u⟩ with H(θ)u from `jax.jvp` of the gradient: reverse over forward over
    reverse, a few gradient costs, never a dense third derivative."""
    _check_flow(flow, "sharpness_gradient")
    return _sharpness_gradient(flow, params, u)


@eqx.filter_jit
def _sharpness_gradient(flow, params, u):
    u = jax.lax.stop_gradient(u)

    def quadratic_form(p):
        hu = hessian_vector_product(flow, p, u)
        leaves = zip(jax.tree_util.tree_leaves(u), jax.tree_util.tree_leaves(hu))
        return sum(jnp.vdot(a, b) for a, b in leaves)

    return jax.grad(quadratic_form)(params)


def sharpness_and_gradient(
    flow, params: Params, v0: Params | None = None, *, num_iterations: int = DEFAULT_ITERATIONS
) -> tuple[Float[Array, ""], Params, Params]:
    """(S, u, ∇S) at θ: the top eigenpair of ∇²L and the gradient of the sharpness (see
    `top_hessian_eigenpair` and `sharpness_gradient`)."""
    lam, u = top_hessian_eigenpair(flow, params, v0, num_iterations=num_iterations)
    return lam, u, sharpness_gradient(flow, params, u)
