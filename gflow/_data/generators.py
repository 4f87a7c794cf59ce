"""Generic data generators: `whitened_regression` (exact moments, a chosen input–output SVD) and
`teacher_student`."""

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from .._validate import check_float_array, message
from .base import Dataset, InputOutputModes


def _orthogonal(key, n: int) -> Float[Array, "n n"]:
    q, r = jnp.linalg.qr(jr.normal(key, (n, n)))
    return q * jnp.sign(jnp.diag(r))[None, :]


def whitened_regression(
    singular_values: Sequence[float] | Array,
    d_in: int,
    d_out: int,
    n: int,
    *,
    input_variances: Sequence[float] | Array | None = None,
    noise: float = 0.0,
    key: PRNGKeyArray,
) -> Dataset:
    """Regression data with exact moments: Sxx = V diag(λ) Vᵀ and Syx = U_r diag(s) V_rᵀ.

    Saxe's setting (λ = 1: whitened inputs). With Q (n, d_in) orthonormal and Z = √n Qᵀ,
    X = V diag(√λ) Z and Y = Syx V diag(λ^{-1/2}) Z + noise·G (I − Q Qᵀ); the residual is
    orthogonal to the inputs, so it only raises L(∞). U, V random orthogonal. Needs n ≥ d_in and
    r = len(singular_values) ≤ min(d_in, d_out). The returned dataset records its `modes`.
    """
    s = check_float_array("singular_values", jnp.asarray(singular_values, dtype=float), ndim=1)
    r = s.shape[0]
    if r > min(d_in, d_out):
        raise ValueError(message("singular_values", f"have at most min(d_in, d_out) = {min(d_in, d_out)} entries", r))
    if n < d_in:
        raise ValueError(message("n", f"be ≥ d_in = {d_in} so that Sxx is full rank", n))
    lam = jnp.ones((d_in,)) if input_variances is None else jnp.asarray(input_variances, dtype=float)
    if lam.shape != (d_in,):
        raise ValueError(message("input_variances", f"have shape (d_in,) = ({d_in},)", lam.shape))
    kq, kv, ku, kg = jr.split(key, 4)
    Q, _ = jnp.linalg.qr(jr.normal(kq, (n, d_in)))
    Z = jnp.sqrt(n) * Q.T
    V = _orthogonal(kv, d_in)
    U = _orthogonal(ku, d_out)
    syx = U[:, :r] @ jnp.diag(s) @ V[:, :r].T
    X = V @ jnp.diag(jnp.sqrt(lam)) @ Z
    Y = syx @ V @ jnp.diag(1.0 / jnp.sqrt(lam)) @ Z
    if noise:
        G = jr.normal(kg, (d_out, n))
        Y = Y + noise * G @ (jnp.eye(n) - Q @ Q.T)
    modes = InputOutputModes(U[:, :r], s, V[:, :r], lam[:r])
    return Dataset(X.T, Y.T, modes=modes)


def teacher_student(
    d: int,
    n: int,
    teacher: Callable[[Array], Array],
    *,
    key: PRNGKeyArray,
    noise: float = 0.0,
    labels: str = "regression",
) -> Dataset:
    """n Gaussian inputs x ~ N(0, I_d) labelled by a teacher network.

    `labels="regression"`: y = teacher(x) + noise·ξ; `labels="sign"`: y = sign(teacher(x)) ∈ {±1}
    (ties → +1), the binary-classification setting.
    """
    if labels not in ("regression", "sign"):
        raise ValueError(message("labels", "be 'regression' or 'sign'", repr(labels)))
    kx, kn = jr.split(key)
    x = jr.normal(kx, (n, d))
    y = jax.vmap(teacher)(x)
    if y.ndim == 1:
        y = y[:, None]
    if labels == "sign":
        y = jnp.where(y >= 0, 1.0, -1.0).astype(x.dtype)
    elif noise:
        y = y + noise * jr.normal(kn, y.shape)
    return Dataset(x, y)
