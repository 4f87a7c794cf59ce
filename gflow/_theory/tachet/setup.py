"""Datasets and initialisations of Tachet des Combes, Pezeshki, Shabanian, Courville & Bengio,
"On the Learning Dynamics of Deep Neural Networks", arXiv:1809.06848 (2018): orthogonal
single-feature modes, co-occurring features (gradient starvation) and "proper" initialisations.

Feature directions are the first K standard basis vectors e_1…e_K of R^d unless a `basis`
(d, K) with orthonormal columns is given.
"""

from collections.abc import Sequence

import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ..._data.base import Dataset
from ..._validate import check_float_array, message


def _basis(basis, d: int, K: int, dtype) -> np.ndarray:
    if basis is None:
        return np.eye(d, K, dtype=dtype)
    basis = np.asarray(check_float_array("basis", basis, ndim=2))
    if basis.shape != (d, K):
        raise ValueError(message("basis", f"have shape (d, K) = {(d, K)}", f"shape {basis.shape}"))
    if not np.allclose(basis.T @ basis, np.eye(K), atol=1e-12):
        raise ValueError(message("basis", "have orthonormal columns", "columns that are not"))
    return basis


def orthogonal_features(
    norms: Sequence[float] | Float[ArrayLike, " K"],
    counts: Sequence[int],
    labels: Sequence[float] | Float[ArrayLike, " K"],
    d: int,
    *,
    basis: Float[ArrayLike, "d K"] | None = None,
    dtype=jnp.float64,
) -> Dataset:
    """Mode k = `counts[k]` copies of x = s_k e_k with label y_k = ±1 (s = `norms`).

    Returns a `Dataset` with x (n, d), y (n, 1), n = Σ counts, samples ordered mode by mode.
    The frequency of mode k is p_k = n_k / n.
    """
    norms = np.asarray(norms, dtype=dtype)
    labels = np.asarray(labels, dtype=dtype)
    K = norms.shape[0]
    if norms.ndim != 1 or K < 1:
        raise ValueError(message("norms", "be a 1-D sequence of K ≥ 1 positive norms", norms))
    if np.any(norms <= 0):
        raise ValueError(message("norms", "be > 0", norms))
    counts = [int(c) for c in counts]
    if len(counts) != K or any(c < 1 for c in counts):
        raise ValueError(message("counts", f"list {K} integers ≥ 1 (one per mode)", counts))
    if labels.shape != (K,) or not np.all(np.abs(labels) == 1):
        raise ValueError(message("labels", f"hold {K} labels ±1 (one per mode)", labels))
    if not isinstance(d, int) or d < K:
        raise ValueError(message("d", f"be an integer ≥ K = {K}", d))
    e = _basis(basis, d, K, dtype)
    mode = np.repeat(np.arange(K), counts)
    x = (e[:, mode] * norms[mode][None, :]).T
    y = labels[mode][:, None]
    return Dataset(jnp.asarray(x), jnp.asarray(y))


def cooccurring_features(
    norms: Sequence[float] | Float[ArrayLike, " 2"],
    counts: Sequence[int],
    d: int,
    *,
    dtype=jnp.float64,
) -> Dataset:
    """Gradient-starvation data (R8): `counts[0]` samples x = s₁e₁ + s₂e₂ ("both") followed by
    `counts[1]` samples x = s₁e₁ (feature 1 only), all with label +1. Feature 2 has frequency
    q = counts[0] / n; `counts[1]` may be 0 (R8a/b: one sample type)."""
    s = np.asarray(norms, dtype=dtype)
    if s.shape != (2,) or np.any(s <= 0):
        raise ValueError(message("norms", "hold two positive norms (s₁, s₂)", s))
    counts = [int(c) for c in counts]
    if len(counts) != 2 or counts[0] < 1 or counts[1] < 0:
        raise ValueError(message("counts", "be (n_both ≥ 1, n_first_only ≥ 0)", counts))
    if not isinstance(d, int) or d < 2:
        raise ValueError(message("d", "be an integer ≥ 2", d))
    both = np.zeros((counts[0], d), dtype)
    both[:, 0], both[:, 1] = s[0], s[1]
    first = np.zeros((counts[1], d), dtype)
    first[:, 0] = s[0]
    x = np.concatenate([both, first])
    return Dataset(jnp.asarray(x), jnp.ones((x.shape[0], 1), dtype))


def proper_init(
    first_layer: Float[ArrayLike, " K"],
    output: Float[ArrayLike, " K"],
    labels: Float[ArrayLike, " K"],
    d: int,
    *,
    off_diagonal: float = 0.3,
    key: PRNGKeyArray | None = None,
) -> tuple[Float[Array, "K d"], Float[Array, "1 K"]]:
    """A "proper" init for a bias-free one-hidden-layer ReLU net with one unit per mode.

    Unit k gets w_k·e_k = u_k (`first_layer`), w_k·e_{k'} < 0 for every other mode k'
    (−`off_diagonal`, times 0.5 + U[0, 1] when `key` is given) and 0 outside span{e}; its output
    weight is v_k = y_k ṽ_k (`output` = ṽ, the sign-corrected weight). Returns (w (K, d),
    a (1, K)), ready for `TwoLayer(d, K, "relu", w=w, a=a)`.
    """
    u = check_float_array("first_layer", first_layer, ndim=1)
    vt = check_float_array("output", output, ndim=1)
    y = check_float_array("labels", labels, ndim=1)
    K = u.shape[0]
    if vt.shape != (K,) or y.shape != (K,):
        raise ValueError(message("output/labels", f"have shape ({K},) like `first_layer`",
                                 f"{vt.shape} and {y.shape}"))
    if not isinstance(d, int) or d < K:
        raise ValueError(message("d", f"be an integer ≥ K = {K}", d))
    if not off_diagonal > 0:
        raise ValueError(message("off_diagonal", "be > 0 (units must be negative on the other modes)", off_diagonal))
    scale = jnp.full((K, K), off_diagonal, u.dtype)
    if key is not None:
        scale = scale * (0.5 + jr.uniform(key, (K, K), u.dtype))
    w = jnp.where(jnp.eye(K, dtype=bool), jnp.diag(u), -scale)
    w = jnp.concatenate([w, jnp.zeros((K, d - K), u.dtype)], axis=1)
    return w, (y * vt)[None, :]


def proper_chain_init(
    strengths: Float[ArrayLike, "L K"],
    labels: Float[ArrayLike, " K"],
    d: int,
    *,
    off_diagonal: float = 0.3,
) -> tuple[tuple[Float[Array, "K in"], ...], Float[Array, "1 K"]]:
    """Diagonal proper init of a depth-L `ReLUChain` with one unit per mode and layer.

    `strengths[l, k]` is layer l+1's weight on mode k (the last row is the sign-corrected output
    weight ṽ_k); off-diagonal entries of every hidden matrix are −`off_diagonal`, so unit k of
    each layer is active only on mode k. Returns (weights, v) for `ReLUChain(weights, v)`.
    """
    a = check_float_array("strengths", strengths, ndim=2)
    y = check_float_array("labels", labels, ndim=1)
    L, K = a.shape
    if y.shape != (K,):
        raise ValueError(message("labels", f"have shape ({K},)", y.shape))
    if not isinstance(d, int) or d < K:
        raise ValueError(message("d", f"be an integer ≥ K = {K}", d))
    off = jnp.full((K, K), -off_diagonal, a.dtype)
    eye = jnp.eye(K, dtype=bool)
    weights = []
    for l in range(L - 1):
        w = jnp.where(eye, jnp.diag(a[l]), off)
        if l == 0:
            w = jnp.concatenate([w, jnp.zeros((K, d - K), a.dtype)], axis=1)
        weights.append(w)
    v = (y * a[L - 1])[None, :]
    if L == 1:
        v = jnp.concatenate([v, jnp.zeros((1, d - K), a.dtype)], axis=1)
    return tuple(weights), v
