"""Mode detection shared by the Tachet des Combes et al. (2018) theories.

??? cite "Reference"
    Tachet des Combes, Pezeshki, Shabanian, Courville & Bengio, "On the Learning Dynamics of
    Deep Neural Networks", arXiv:1809.06848 (2018).

The per-mode theories hold for data made of orthogonal single-feature modes: mode k is n_k copies
of x = s_k e_k with one label y_k = ±1 (frequency p_k = n_k/n), and for a "proper" init, where
every hidden unit is positive on at most one mode. `feature_modes` and `two_layer_units` find that
structure (NumPy, at seeding time) and refuse by name the data or init that break it;
`first_layer_strengths` and `output_weights` are the matching simulation observables, derived
from the flow alone (jnp, so they run inside the solve).
"""

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..._data.base import Dataset
from ..._models.two_layer import TwoLayer
from ..._validate import is_concrete, message, regime_error
from .._regime import check_flow


def require_concrete(*arrays) -> None:
    """Seeding reads the data and init with NumPy: refuse traced arrays by name."""
    if not all(is_concrete(a) for a in arrays):
        raise ValueError(message("from_flow", "be called outside jit/vmap (it reads the data and init to find the "
                                 "modes)", "traced arrays", "Build the theory first, then jit/vmap the theory itself."))


def feature_modes(data: Dataset, name: str, *, features=None, atol: float = 1e-10):
    """Group the samples of `data` into orthogonal single-feature modes.

    Returns NumPy arrays (features (d, K), mode_of_sample (n,), norms s (K,), frequencies p (K,),
    labels y (K,)), modes numbered in order of first appearance. Raises a regime error (named
    `name`) for labels other than ±1, non-orthogonal inputs, a sample carrying several of the given
    `features` (d, K'), different norms inside a mode or two labels in one mode (non-separable).
    """
    x = np.asarray(data.x)
    y = np.asarray(data.y)
    if y.shape[1] != 1:
        raise regime_error(name, "binary labels y = ±1 of shape (n, 1)", f"got y of shape {y.shape}")
    if not np.all(np.abs(y) == 1):
        zero_one = bool(np.all((y == 0) | (y == 1)))
        raise regime_error(name, "binary labels y = ±1 of shape (n, 1)",
                           "got 0/1 labels" if zero_one else f"got labels {np.unique(y)[:5].tolist()}",
                           "Map 0/1 labels to ±1 with `2 * y - 1`." if zero_one else None)
    y = y[:, 0]
    n = x.shape[0]
    norms = np.linalg.norm(x, axis=1)
    if np.any(norms == 0):
        i = int(np.argmax(norms == 0))
        raise regime_error(name, "every sample to carry one feature", f"sample {i} is zero")
    if features is not None:
        coords = x @ np.asarray(features)
        active = np.abs(coords) > atol * norms[:, None]
        several = active.sum(axis=1) > 1
        if np.any(several):
            i = int(np.argmax(several))
            ks = np.flatnonzero(active[i])[:2].tolist()
            raise regime_error(name, "one feature per sample (x = s_k e_k)",
                               f"sample {i} carries features {ks[0]} and {ks[1]}",
                               "The modes couple (gradient starvation): compare with the simulation only.")
    dirs = x / norms[:, None]
    G = dirs @ dirs.T
    same = G > 1.0 - atol
    bad = ~(same | (np.abs(G) < atol))
    if np.any(bad):
        i, j = (int(a) for a in np.argwhere(bad)[0])
        raise regime_error(name, "orthogonal inputs with one feature per sample (x = s_k e_k)",
                           f"samples {i} and {j} have cosine {G[i, j]:.3g} (non-orthogonal inputs, or a sample "
                           "carrying several features)", "The modes couple: compare with the simulation only.")
    # One pass over the samples at seeding time (NumPy, not a hot path).
    mode_of = -np.ones(n, dtype=int)
    feats, s, p, labels = [], [], [], []
    for i in range(n):
        if mode_of[i] >= 0:
            continue
        k = len(feats)
        members = np.flatnonzero(same[i])
        mode_of[members] = k
        if np.ptp(norms[members]) > atol * norms[i]:
            a, b = members[np.argmin(norms[members])], members[np.argmax(norms[members])]
            raise regime_error(name, "equal norms inside a mode",
                               f"samples {a} and {b} of mode {k} have norms {norms[a]:.6g} and {norms[b]:.6g}")
        if np.any(y[members] != y[i]):
            j = members[np.argmax(y[members] != y[i])]
            raise regime_error(name, "linearly separable data (one label per mode)",
                               f"samples {i} and {j} of mode {k} have labels {y[i]:+g} and {y[j]:+g}")
        feats.append(dirs[i])
        s.append(norms[i])
        p.append(len(members) / n)
        labels.append(y[i])
    return np.stack(feats, axis=1), mode_of, np.array(s), np.array(p), np.array(labels)


def two_layer_units(flow, name: str, losses, *, features=None, atol: float = 1e-10):
    """The modes and per-unit (u₀, ṽ₀) of a properly initialised bias-free relu `TwoLayer` flow.

    Returns NumPy (s, p, labels (K,), unit_mode (h,), u0 = w_j·e_{k(j)} (h,), ṽ0 = y_{k(j)} v_j (h,),
    mode_of_sample (n,)); a unit positive on no mode (region D) is put on the mode it projects
    most on. Refuses by name (as `name`) a flow outside the regime.
    """
    check_flow(name, flow, model=TwoLayer, loss=tuple(losses), data=Dataset)
    model = flow.model0
    if model.b is not None:
        raise regime_error(name, "a network without biases", "the TwoLayer has first-layer biases `b`",
                           "Build it with bias=False.")
    if model.activation is not jax.nn.relu or model.scaling != "standard" or model.sphere:
        raise regime_error(name, "relu units in standard scaling (f = Σ v_j relu(w_j·x))",
                           f"got activation {getattr(model.activation, '__name__', model.activation)}, "
                           f"scaling {model.scaling!r}, sphere={model.sphere}")
    if model.a.shape[0] != 1 or not (model.train_first and model.train_second):
        raise regime_error(name, "one output and both layers trained", "got another configuration")
    require_concrete(model.w, model.a, flow.data.x)
    F, mode_of, s, p, y = feature_modes(flow.data, name, features=features, atol=atol)
    W = np.asarray(model.w)
    proj = W @ F
    positive = proj > 0
    twice = positive.sum(axis=1) > 1
    if np.any(twice):
        j = int(np.argmax(twice))
        ks = np.flatnonzero(positive[j])[:2].tolist()
        raise regime_error(name, "a proper initialisation (each hidden unit positive on at most one mode)",
                           f"unit {j} is positive on modes {ks[0]} and {ks[1]}",
                           "Use gflow.tachet.proper_init(...).")
    unit_mode = np.argmax(proj, axis=1)  # the positive mode if any, else the one it projects most on
    u0 = proj[np.arange(W.shape[0]), unit_mode]
    vt0 = np.asarray(model.a)[0] * y[unit_mode]
    return s, p, y, unit_mode, u0, vt0, mode_of


def unit_directions(flow) -> Float[Array, "h d"]:
    """The feature direction e_{k(j)} of each hidden unit's mode, from `flow.data` and the initial
    first layer `flow.model0.w` alone (jnp: works inside a solve). The samples' directions stand
    for the features; each unit takes the one it projects most on at t = 0, as `two_layer_units`."""
    x = flow.data.x
    dirs = x / jnp.linalg.norm(x, axis=1, keepdims=True)
    proj = flow.model0.w @ dirs.T
    return dirs[jnp.argmax(proj, axis=1)]


def first_layer_strengths(t, params, flow) -> Float[Array, " h"]:
    """Observable u_j(t) = w_j(t)·e_{k(j)}, the first-layer strength of each unit on its mode (h,)."""
    w = flow.model(params).w
    return jnp.sum(w * unit_directions(flow), axis=1)


def output_weights(t, params, flow) -> Float[Array, " h"]:
    """Observable v_j(t), the output weight of each hidden unit (h,)."""
    return flow.model(params).a[0]
