"""Tachet des Combes et al. 2018: independent modes of a properly initialised two-layer ReLU
classifier on orthogonal features (shared/theory/tachet.md R1–R5).

Conventions (ours; the paper's may differ by label coding or sum-vs-mean loss): labels ±1,
mean loss over samples, f(x) = Σ_j v_j relu(w_j·x), time t of dθ/dt = −κ∇L (κ = `time_scale`;
GD with step η after k steps ↔ t = kη). Mode k: n_k samples s_k e_k with label y_k,
p_k = n_k/n, λ_k = p_k s_k. Unit j on mode k(j): u_j = w_j·e_k, ṽ_j = y_k v_j,
A_j = u_j(0) + ṽ_j(0), B_j = u_j(0) − ṽ_j(0). Every unit follows the hyperbola
u = (Ae^τ + Be^{−τ})/2, ṽ = (Ae^τ − Be^{−τ})/2 in the mode's clock τ_k(t), dτ_k/dt = κλ_k g(z_k),
and the loss only sets the clock (g = 1[z < 1] for hinge, σ(−z) for cross-entropy).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from .._custom_types import Observables, Times
from .._data.base import Dataset
from .._losses import hinge, logistic
from .._models.two_layer import TwoLayer
from .._special import expi, invert_increasing, lambertw, wrightomega
from .._validate import check_float_array, is_concrete, message, check_unpadded, regime_error
from .base import AbstractReducedODE, AbstractTheory

_TAU_MAX = 60.0
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(24)
_GL_PANELS = 16


def _concrete(name: str, *arrays) -> None:
    if not all(is_concrete(a) for a in arrays):
        raise ValueError(message(name, "be called outside jit/vmap (it reads the data and init to find the modes)",
                                 "traced arrays", "Build the theory first, then jit/vmap the theory itself."))


def feature_modes(data: Dataset, name: str, *, features=None, atol: float = 1e-10):
    """Group the samples of `data` into orthogonal single-feature modes (R10 checks).

    Returns (features (d, K), mode_of_sample (n,), norms s (K,), frequencies p (K,),
    labels y (K,)) as NumPy arrays; raises a named regime error for non-orthogonal inputs, a
    sample with several features, different norms inside a mode or non-separable labels.
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
        F = np.asarray(features)
        coords = x @ F
        active = np.abs(coords) > atol * norms[:, None]
        several = active.sum(axis=1) > 1
        if np.any(several):
            i = int(np.argmax(several))
            ks = np.flatnonzero(active[i])[:2].tolist()
            raise regime_error(name, "one feature per sample (x = s_k e_k)",
                               f"sample {i} carries features {ks[0]} and {ks[1]}",
                               "The modes couple (see gradient starvation, R8): compare with the simulation only.")
    dirs = x / norms[:, None]
    G = dirs @ dirs.T
    same = G > 1.0 - atol
    bad = ~(same | (np.abs(G) < atol))
    if np.any(bad):
        i, j = (int(a) for a in np.argwhere(bad)[0])
        raise regime_error(name, "orthogonal inputs with one feature per sample (x = s_k e_k)",
                           f"samples {i} and {j} have cosine {G[i, j]:.3g} (non-orthogonal inputs, or a sample "
                           "carrying several features)", "The modes couple: compare with the simulation only.")
    mode_of = -np.ones(n, dtype=int)
    feats, s, p, labels = [], [], [], []
    for i in range(n):
        if mode_of[i] >= 0:
            continue
        k = len(feats)
        members = np.flatnonzero(same[i])
        mode_of[members] = k
        spread = np.ptp(norms[members])
        if spread > atol * norms[i]:
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


def _two_layer_units(flow, name: str, losses, *, features=None, atol: float = 1e-10):
    """The mode structure and per-unit (u₀, ṽ₀) of a properly initialised TwoLayer flow."""
    check_unpadded(name, flow)
    model = flow.model0
    if not isinstance(model, TwoLayer):
        raise regime_error(name, "a TwoLayer model", f"got {type(model).__name__}")
    if model.b is not None:
        raise regime_error(name, "a network without biases", "the TwoLayer has first-layer biases `b`",
                           "Build it with bias=False.")
    if model.activation is not jax.nn.relu or model.scaling != "standard" or model.sphere:
        raise regime_error(name, "relu units in standard scaling (f = Σ v_j relu(w_j·x))",
                           f"got activation {getattr(model.activation, '__name__', model.activation)}, "
                           f"scaling {model.scaling!r}, sphere={model.sphere}")
    if model.a.shape[0] != 1 or not (model.train_first and model.train_second):
        raise regime_error(name, "one output and both layers trained", "got another configuration")
    if flow.loss not in losses:
        raise regime_error(name, f"the loss {' or '.join(l.__name__ for l in losses)}",
                           f"got {getattr(flow.loss, '__name__', flow.loss)}")
    if flow.rates is not None:
        raise regime_error(name, "equal layer rates", "got `rates`")
    if not isinstance(flow.data, Dataset):
        raise regime_error(name, "a finite Dataset", f"got {type(flow.data).__name__}")
    _concrete("from_flow", model.w, model.a, flow.data.x)
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
                           "Use gflow.proper_init(...).")
    unit_mode = np.where(positive.any(axis=1), np.argmax(positive, axis=1), np.argmax(proj, axis=1))
    u0 = proj[np.arange(W.shape[0]), unit_mode]
    vt0 = np.asarray(model.a)[0] * y[unit_mode]
    return F, mode_of, s, p, y, unit_mode, u0, vt0


class TwoLayerModes(AbstractTheory):
    """Per-mode learning of a properly initialised two-layer ReLU classifier (R1, R2, R4, R5).

    ??? cite "Reference"
        Tachet des Combes, Pezeshki, Shabanian, Courville & Bengio, "On the Learning Dynamics
        of Deep Neural Networks", arXiv:1809.06848 (2018).

    Hinge loss: closed form, τ_k = min(κλ_k t, τ_h,k) with z_k(τ_h,k) = 1 (t_h = ln X/(2λ) for one
    unit per mode). Cross-entropy: the exact clock dτ_k/dt = κλ_k σ(−z_k(τ_k)) is a K-dim
    ODE, see `TwoLayerModesCE`. Units with A ≤ 0 die (u = 0) at τ_d = ½ ln(−B/A) (region F);
    units with u₀ ≤ 0 never move (region D).
    Fields: s, p, labels (K,); u0, vt0 (h,), unit_mode (h,) int; mode_of_sample (n,) int.
    Observables: `margins` (T, n), `loss` (T,), `classification_error` (T,),
    `first_layer_strengths` (T, h) = u_j, `output_weights` (T, h) = v_j.
    """

    s: Float[Array, " K"]
    p: Float[Array, " K"]
    labels: Float[Array, " K"]
    u0: Float[Array, " h"]
    vt0: Float[Array, " h"]
    unit_mode: Int[Array, " h"]
    mode_of_sample: Int[Array, " n"]
    features: Float[Array, "d K"]
    time_scale: Float[Array, ""]

    def __init__(self, s, p, labels, u0, vt0, unit_mode, mode_of_sample, features, time_scale=1.0):
        self.s = check_float_array("s", s, ndim=1)
        self.p = check_float_array("p", p, ndim=1)
        self.labels = check_float_array("labels", labels, ndim=1)
        self.u0 = check_float_array("u0", u0, ndim=1)
        self.vt0 = check_float_array("vt0", vt0, ndim=1)
        self.unit_mode = jnp.asarray(unit_mode)
        self.mode_of_sample = jnp.asarray(mode_of_sample)
        self.features = check_float_array("features", features, ndim=2)
        self.time_scale = jnp.asarray(time_scale, dtype=self.s.dtype)

    @classmethod
    def from_flow(cls, flow, *, features=None, atol: float = 1e-10) -> "TwoLayerModes":
        """Seed from a `GradientFlow` of a bias-free relu `TwoLayer` under `hinge` (this class) or
        `logistic` (then use `TwoLayerModesCE`). Raises a named error naming the sample or unit
        that breaks an assumption (R10)."""
        F, mode_of, s, p, y, unit_mode, u0, vt0 = _two_layer_units(flow, cls.__name__, (hinge,),
                                                                   features=features, atol=atol)
        return cls(s, p, y, u0, vt0, unit_mode, mode_of, F, flow.time_scale)

    # --- the loss-independent path -------------------------------------------------------
    @property
    def rates(self) -> Float[Array, " K"]:
        """λ_k = p_k s_k."""
        return self.p * self.s

    def unit_path(self, tau_units):
        """(u, ṽ, contribution s·relu(u)·ṽ) of every unit at its mode's clock τ (…, h)."""
        return _unit_path(self.u0, self.vt0, self.s[self.unit_mode], tau_units)

    def margins_at(self, tau: Float[Array, "... K"]) -> Float[Array, "... K"]:
        """z_k(τ_k) = s_k Σ_{j on k} relu(u_j) ṽ_j."""
        _, _, c = self.unit_path(tau[..., self.unit_mode])
        K = self.s.shape[0]
        onehot = (self.unit_mode[:, None] == jnp.arange(K)[None, :]).astype(c.dtype)
        return c @ onehot

    def stop_clocks(self) -> Float[Array, " K"]:
        """τ_h,k where z_k reaches 1 (0 if z_k(0) ≥ 1, inf if never)."""
        K = self.s.shape[0]

        def one(k):
            def z_of(tau, _):
                return self.margins_at(jnp.full((K,), tau, self.s.dtype))[k]

            tau = invert_increasing(z_of, 1.0, 0.0, _TAU_MAX)
            reach = z_of(jnp.asarray(_TAU_MAX, self.s.dtype), None) >= 1.0
            start = z_of(jnp.zeros((), self.s.dtype), None) >= 1.0
            return jnp.where(start, 0.0, jnp.where(reach, tau, jnp.inf))

        return jax.vmap(one)(jnp.arange(K))

    def stop_times(self) -> Float[Array, " K"]:
        """Hinge stop times t_h,k = τ_h,k/(κλ_k) (R2)."""
        return self.stop_clocks() / (self.time_scale * self.rates)

    def death_times(self) -> Float[Array, " h"]:
        """Hinge death time of each unit, t_d = ½ ln(−B/A)/(κλ) for A < 0 < u₀; inf otherwise."""
        tau_d = _death_clock(self.u0, self.vt0)
        return tau_d / (self.time_scale * self.rates[self.unit_mode])

    def kink_times(self) -> Float[Array, " m"]:
        """Finite stop and death times (the solver's `jump_ts` for a hinge simulation)."""
        t = jnp.concatenate([self.stop_times(), self.death_times()])
        return jnp.sort(t)

    def clocks(self, ts: Times) -> Float[Array, "T K"]:
        ts = jnp.asarray(ts, dtype=self.s.dtype)[:, None]
        return jnp.minimum(self.time_scale * self.rates[None, :] * ts, self.stop_clocks()[None, :])

    def _observables(self, tau, per_mode_loss) -> Observables:
        z = self.margins_at(tau)
        u, vt, _ = self.unit_path(tau[..., self.unit_mode])
        return {
            "margins": z[..., self.mode_of_sample],
            "loss": per_mode_loss(z) @ self.p,
            "classification_error": (z <= 0).astype(z.dtype) @ self.p,
            "first_layer_strengths": u,
            "output_weights": vt * jnp.broadcast_to(self.labels[self.unit_mode], vt.shape),
        }

    def evaluate(self, ts: Times) -> Observables:
        return self._observables(self.clocks(ts), lambda z: jax.nn.relu(1.0 - z))

    def simulation_observables(self) -> dict:
        """Observables for `solve_flow` matching `evaluate`: margins, loss, classification_error,
        first_layer_strengths u_j = w_j·e_{k(j)} and output_weights v_j."""
        F, unit_mode = self.features, self.unit_mode

        def first_layer_strengths(t, params, flow):
            w = flow.model(params).w
            return jnp.take_along_axis(w @ F, unit_mode[:, None], axis=1)[:, 0]

        def output_weights(t, params, flow):
            return flow.model(params).a[0]

        return {"margins": "margins", "loss": "loss", "classification_error": "classification_error",
                "first_layer_strengths": first_layer_strengths, "output_weights": output_weights}


def _death_clock(u0, vt0):
    A, B = u0 + vt0, u0 - vt0
    dies = (u0 > 0) & (A < 0)
    safe = jnp.where(dies, -B / jnp.where(dies, A, -1.0), 2.0)
    return jnp.where(dies, 0.5 * jnp.log(safe), jnp.inf)


def _unit_path(u0, vt0, s, tau):
    u0, vt0, s = (jnp.broadcast_to(a, tau.shape) for a in (u0, vt0, s))
    A, B = u0 + vt0, u0 - vt0
    tau_d = _death_clock(u0, vt0)
    alive0 = u0 > 0
    t = jnp.minimum(tau, tau_d)
    u = 0.5 * (A * jnp.exp(t) + B * jnp.exp(-t))
    vt = 0.5 * (A * jnp.exp(t) - B * jnp.exp(-t))
    dead = tau >= tau_d
    u = jnp.where(alive0, jnp.where(dead, 0.0, u), u0)
    vt = jnp.where(alive0, vt, vt0)
    contribution = jnp.where(alive0 & ~dead, 0.25 * s * (A**2 * jnp.exp(2 * t) - B**2 * jnp.exp(-2 * t)), 0.0)
    return u, vt, contribution


class TwoLayerModesCE(AbstractReducedODE):
    """Cross-entropy clock of the independent modes (R1, R3c, R4, R5): dτ_k/dt = κλ_k σ(−z_k(τ_k))
    solved by gflow's integrator; margins, weights and loss follow the R1 hyperbolas exactly.

    ??? cite "Reference"
        Tachet des Combes et al., arXiv:1809.06848 (2018).

    Equivalent to the quadrature t(τ) = (1/λ)∫₀^τ (1 + e^{z}) dτ'. Same fields and observables as
    `TwoLayerModes` (held in `modes`).
    """

    modes: TwoLayerModes

    @classmethod
    def from_flow(cls, flow, *, features=None, atol: float = 1e-10) -> "TwoLayerModesCE":
        """Seed from a relu `TwoLayer` flow under `logistic`; regime errors as `TwoLayerModes`."""
        F, mode_of, s, p, y, unit_mode, u0, vt0 = _two_layer_units(flow, cls.__name__, (logistic,),
                                                                   features=features, atol=atol)
        return cls(TwoLayerModes(s, p, y, u0, vt0, unit_mode, mode_of, F, flow.time_scale))

    def initial_state(self):
        return jnp.zeros_like(self.modes.s)

    def vector_field(self, t, tau, args):
        z = self.modes.margins_at(tau)
        return self.modes.time_scale * self.modes.rates * jax.nn.sigmoid(-z)

    def observables(self, t, tau):
        return self.modes._observables(tau, lambda z: jax.nn.softplus(-z))


# --- R4/R5: regions, crossing and death times, the error staircase ---------------------------

#: Phase-map codes: dead at init, dies in training, recovers, correct from the start.
REGION_D, REGION_F, REGION_R, REGION_S = 0, 1, 2, 3


def phase_region(u0: Float[ArrayLike, "..."], vt0: Float[ArrayLike, "..."]) -> Int[Array, "..."]:
    """R4 region of a unit's init (u₀, ṽ₀ = y v₀): D (u₀ ≤ 0), F (ṽ₀ ≤ −u₀), R (−u₀ < ṽ₀ ≤ 0),
    S (ṽ₀ > 0), as the codes REGION_D/F/R/S. Identical for hinge and cross-entropy."""
    u0, vt0 = jnp.asarray(u0), jnp.asarray(vt0)
    return jnp.where(u0 <= 0, REGION_D, jnp.where(vt0 <= -u0, REGION_F, jnp.where(vt0 <= 0, REGION_R, REGION_S)))


def _clock_integral(s, A, B, tau_end):
    """∫₀^{τ_end} (1 + e^{z(τ)}) dτ, z = (s/4)(A²e^{2τ} − B²e^{−2τ}), by composite Gauss–Legendre
    (the integrand lies in (1, 2] where z ≤ 0, so 16×24 nodes reach round-off)."""
    nodes = jnp.asarray(_GL_NODES)
    weights = jnp.asarray(_GL_WEIGHTS)
    edges = jnp.linspace(0.0, 1.0, _GL_PANELS + 1)
    mid = 0.5 * (edges[1:] + edges[:-1])
    half = 0.5 * (edges[1:] - edges[:-1])
    x = (mid[:, None] + half[:, None] * nodes[None, :]).reshape(-1)
    w = (half[:, None] * weights[None, :]).reshape(-1)
    s, A, B, tau_end = jnp.broadcast_arrays(s, A, B, tau_end)
    lead = (1,) * tau_end.ndim
    x, w = x.reshape(lead + x.shape), w.reshape(lead + w.shape)
    tau = tau_end[..., None] * x
    z = 0.25 * s[..., None] * (A[..., None] ** 2 * jnp.exp(2 * tau) - B[..., None] ** 2 * jnp.exp(-2 * tau))
    return tau_end * jnp.sum(w * (1.0 + jnp.exp(z)), axis=-1)


def crossing_time(
    u0: Float[ArrayLike, "..."], vt0: Float[ArrayLike, "..."], s: Float[ArrayLike, "..."], rate: Float[ArrayLike, "..."], loss: str
) -> Float[ArrayLike, "..."]:
    """R5: time t_c at which a region-R mode (one unit) becomes correctly classified (z = 0).

    Hinge: t_c = ln(B/A)/(2λ); cross-entropy: t_c = (1/λ)∫₀^{τ_c}(1 + eᶻ)dτ with τ_c = ½ ln(B/A).
    `rate` = κλ = κ p s. 0 for region S, inf for D and F."""
    u0, vt0, s, rate = jnp.broadcast_arrays(*(jnp.asarray(a) for a in (u0, vt0, s, rate)))
    region = phase_region(u0, vt0)
    A, B = u0 + vt0, u0 - vt0
    ok = region == REGION_R
    tau_c = 0.5 * jnp.log(jnp.where(ok, B / jnp.where(ok, A, 1.0), 1.0))
    if loss == "hinge":
        t = tau_c / rate
    elif loss == "logistic":
        t = _clock_integral(s, A, B, tau_c) / rate
    else:
        raise ValueError(message("loss", "be 'hinge' or 'logistic'", repr(loss)))
    return jnp.where(ok, t, jnp.where(region == REGION_S, 0.0, jnp.inf))


def clock_delay(
    u0: Float[ArrayLike, "..."], vt0: Float[ArrayLike, "..."], s: Float[ArrayLike, "..."], rate: Float[ArrayLike, "..."],
    tau: Float[ArrayLike, "..."],
) -> Float[ArrayLike, "..."]:
    """R7: how much later cross-entropy reaches the point τ of the shared weight-space path than
    hinge does: t_CE(τ) − t_H(τ) = (1/λ)∫₀^τ e^{z(τ')} dτ' > 0, with `rate` = κλ = κ p s and
    z(τ) = (s/4)(A²e^{2τ} − B²e^{−2τ}), A = u0 + ṽ0, B = u0 − ṽ0 (hinge: t_H = τ/λ). Valid while
    the hinge mode is active (z < 1). At small |z| the delay equals t_H: CE runs at half speed."""
    u0, vt0, s, rate, tau = jnp.broadcast_arrays(*(jnp.asarray(a) for a in (u0, vt0, s, rate, tau)))
    return (_clock_integral(s, u0 + vt0, u0 - vt0, tau) - tau) / rate


def death_time(
    u0: Float[ArrayLike, "..."], vt0: Float[ArrayLike, "..."], s: Float[ArrayLike, "..."], rate: Float[ArrayLike, "..."], loss: str
) -> Float[ArrayLike, "..."]:
    """R4: time at which a region-F unit dies (u = 0): τ_d/λ (hinge) or (1/λ)∫₀^{τ_d}(1+eᶻ)dτ (CE),
    τ_d = ½ ln(−B/A); 0 for D, inf for R and S (and for A = 0, which only tends to 0)."""
    u0, vt0, s, rate = jnp.broadcast_arrays(*(jnp.asarray(a) for a in (u0, vt0, s, rate)))
    tau_d = _death_clock(u0, vt0)
    fin = jnp.isfinite(tau_d)
    tau = jnp.where(fin, tau_d, 0.0)
    if loss == "hinge":
        t = tau / rate
    elif loss == "logistic":
        t = _clock_integral(s, u0 + vt0, u0 - vt0, tau) / rate
    else:
        raise ValueError(message("loss", "be 'hinge' or 'logistic'", repr(loss)))
    return jnp.where(u0 <= 0, 0.0, jnp.where(fin, t, jnp.inf))


def ensemble_error(rate_times_t: Float[ArrayLike, "..."], loss: str = "hinge", *, conditional: bool = False):
    """R5 ensemble curve for isotropic Gaussian (u₀, ṽ₀), one unit per mode: P(mode wrong at t) =
    5/8 + arctan(e^{−2λt})/(2π) (hinge; λt instead of 2λt for CE at small init), or the
    region-R conditional (4/π) arctan(e^{−2λt}) with `conditional=True`."""
    x = jnp.asarray(rate_times_t)
    arg = 2.0 * x if loss == "hinge" else x
    r = jnp.arctan(jnp.exp(-arg))
    return 4.0 / jnp.pi * r if conditional else 0.625 + r / (2.0 * jnp.pi)


# --- R3a, R3b, R3d: closed forms of cross-entropy margins ----------------------------------------


class BalancedCEMargins(AbstractTheory):
    """R3a: balanced two-layer mode (u₀ = ṽ₀) under cross-entropy, the exact implicit solution
    ln(z/z₀) + Ei(z) − Ei(z₀) = 2κλt, inverted by bracketed Newton in ln z.

    ??? cite "Reference"
        Tachet des Combes et al., arXiv:1809.06848 (2018).

    Fields z0, rates λ = p s (K,), mode_of_sample (n,). Observable `margins` (T, n), `loss`.
    """

    z0: Float[Array, " K"]
    rates: Float[Array, " K"]
    p: Float[Array, " K"]
    mode_of_sample: Int[Array, " n"]
    time_scale: Float[Array, ""]

    @classmethod
    def from_flow(cls, flow, *, atol: float = 1e-10) -> "BalancedCEMargins":
        """Seed from a logistic TwoLayer flow with one balanced (u₀ = ṽ₀ > 0) unit per mode."""
        name = cls.__name__
        check_unpadded(name, flow)
        _, mode_of, s, p, y, unit_mode, u0, vt0 = _two_layer_units(flow, name, (logistic,), atol=atol)
        K = s.shape[0]
        if sorted(unit_mode.tolist()) != list(range(K)) or np.any(u0 <= 0):
            raise regime_error(name, "exactly one live unit per mode", f"units sit on modes {unit_mode.tolist()} "
                               f"with u0 = {u0}")
        unbalanced = np.abs(u0 - vt0) > atol * np.maximum(np.abs(u0), 1e-300)
        if np.any(unbalanced):
            j = int(np.argmax(unbalanced))
            raise regime_error(name, "a balanced init u0 = ṽ0 on every unit",
                               f"unit {j} has u0 = {u0[j]:.6g}, ṽ0 = {vt0[j]:.6g}", "Use TwoLayerModesCE.")
        order = np.argsort(unit_mode)
        z0 = s * u0[order] * vt0[order]
        return cls(jnp.asarray(z0), jnp.asarray(p * s), jnp.asarray(p), jnp.asarray(mode_of), flow.time_scale)

    def mode_margins(self, ts: Times) -> Float[Array, "T K"]:
        ts = jnp.asarray(ts, dtype=self.z0.dtype)
        rhs = 2.0 * self.time_scale * self.rates[None, :] * ts[:, None]

        def one(z0, target):
            lhs = lambda y, _: y - jnp.log(z0) + expi(jnp.exp(y)) - expi(z0)
            return jnp.exp(invert_increasing(lhs, target, jnp.log(z0), jnp.log(700.0)))

        return jax.vmap(jax.vmap(one, in_axes=(0, 0)), in_axes=(None, 0))(self.z0, rhs)

    def late_time_margins(self, ts: Times, *, refined: bool = True) -> Float[Array, "T K"]:
        """R3b asymptotics: z ≈ 1 − W₋₁(−e/(2κλt)) (refined, 2κλt > e²) or −W₋₁(−1/(2κλt))
        (2κλt > e); NaN outside their range."""
        x = 2.0 * self.time_scale * self.rates[None, :] * jnp.asarray(ts, dtype=self.z0.dtype)[:, None]
        if refined:
            return 1.0 - lambertw(-jnp.e / x, -1)
        return -lambertw(-1.0 / x, -1)

    def evaluate(self, ts: Times) -> Observables:
        z = self.mode_margins(ts)
        return {"margins": z[:, self.mode_of_sample], "loss": jax.nn.softplus(-z) @ self.p}


class LinearCEMargins(AbstractTheory):
    """R3d (and R8a): a linear classifier f = w·x under cross-entropy on orthogonal modes.

    ??? cite "Reference"
        Tachet des Combes et al., arXiv:1809.06848 (2018).

    Per mode dz/dt = κ p s² σ(−z), so z + eᶻ = K(t) = κ p s² t + z₀ + e^{z₀} and
    z(t) = ln ω(K(t)) (ω the Wright omega function, exact). The weights move only along the
    features: w(t) = w(0) + Σ_k y_k e_k (z_k(t) − z_k(0))/s_k. A single sample x = s₁e₁ + s₂e₂ is
    one mode of norm |x| (R8a: feature 2 gets the share s₂²/|x|² of the margin).
    Fields z0, p, s (K,), labels (K,), features (d, K), w0 (d,), mode_of_sample (n,).
    Observables `margins` (T, n), `loss` (T,), `weights` (T, d).
    """

    z0: Float[Array, " K"]
    p: Float[Array, " K"]
    s: Float[Array, " K"]
    labels: Float[Array, " K"]
    features: Float[Array, "d K"]
    w0: Float[Array, " d"]
    mode_of_sample: Int[Array, " n"]
    time_scale: Float[Array, ""]

    @classmethod
    def from_flow(cls, flow, *, atol: float = 1e-10) -> "LinearCEMargins":
        """Seed from a depth-1 `ReLUChain` (f = v·x) under `logistic` on orthogonal modes."""
        from .._models.chain import ReLUChain

        name = cls.__name__
        check_unpadded(name, flow)
        model = flow.model0
        if not isinstance(model, ReLUChain) or model.depth != 1:
            raise regime_error(name, "a linear classifier (ReLUChain with no hidden layer)",
                               f"got {type(model).__name__}")
        if flow.loss is not logistic:
            raise regime_error(name, "the logistic loss", f"got {getattr(flow.loss, '__name__', flow.loss)}")
        if not isinstance(flow.data, Dataset):
            raise regime_error(name, "a finite Dataset", f"got {type(flow.data).__name__}")
        _concrete("from_flow", model.v, flow.data.x)
        F, mode_of, s, p, y = feature_modes(flow.data, name, atol=atol)
        w0 = np.asarray(model.v)[0]
        z0 = y * s * (w0 @ F)
        arr = lambda a: jnp.asarray(a, dtype=model.v.dtype)
        return cls(arr(z0), arr(p), arr(s), arr(y), arr(F), arr(w0), jnp.asarray(mode_of), flow.time_scale)

    def mode_margins(self, ts: Times) -> Float[Array, "T K"]:
        ts = jnp.asarray(ts, dtype=self.z0.dtype)[:, None]
        K = (self.time_scale * self.p * self.s**2)[None, :] * ts + (self.z0 + jnp.exp(self.z0))[None, :]
        return jnp.log(wrightomega(K))

    def evaluate(self, ts: Times) -> Observables:
        z = self.mode_margins(ts)
        shift = (z - self.z0[None, :]) * (self.labels / self.s)[None, :]
        return {
            "margins": z[:, self.mode_of_sample],
            "loss": jax.nn.softplus(-z) @ self.p,
            "weights": self.w0[None, :] + shift @ self.features.T,
        }


class FrequencyStarvation(AbstractReducedODE):
    """R8c: gradient starvation by frequency, as a 2-D reduced ODE (no closed form).

    ??? cite "Reference"
        Tachet des Combes et al., arXiv:1809.06848 (2018) ("gradient starvation").

    Linear classifier f = w·x, label +1; a fraction q of the samples is x = s₁e₁ + s₂e₂, the rest
    x = s₁e₁ (`gflow.cooccurring_features`). With m_b = s₁w₁ + s₂w₂ and m₁ = s₁w₁:
    dw₁/dt = κ[q s₁ σ(−m_b) + (1−q) s₁ σ(−m₁)],  dw₂/dt = κ q s₂ σ(−m_b).
    Since d(w₁/s₁ − w₂/s₂)/dt = κ(1−q)σ(−m₁) > 0, feature 2 always lags. State (w₁, w₂);
    observable `weights` (T, 2) (the first two coordinates of w).
    """

    q: Float[Array, ""]
    norms: Float[Array, " 2"]
    w0: Float[Array, " 2"]
    time_scale: Float[Array, ""]

    @classmethod
    def from_flow(cls, flow) -> "FrequencyStarvation":
        """Seed from a depth-1 `ReLUChain` under `logistic` on `cooccurring_features` data."""
        from .._models.chain import ReLUChain

        name = cls.__name__
        check_unpadded(name, flow)
        model = flow.model0
        if not isinstance(model, ReLUChain) or model.depth != 1 or flow.loss is not logistic:
            raise regime_error(name, "a linear classifier (depth-1 ReLUChain) under the logistic loss",
                               f"got {type(model).__name__} with {getattr(flow.loss, '__name__', flow.loss)}")
        _concrete("from_flow", model.v, flow.data.x)
        x, y = np.asarray(flow.data.x), np.asarray(flow.data.y)[:, 0]
        s1, s2 = x[0, 0], x[0, 1]
        both = np.all(x == x[0], axis=1)
        first = (x[:, 0] == s1) & np.all(x[:, 1:] == 0, axis=1)
        bad = ~(both | first) | (y != 1)
        if np.any(bad) or s2 == 0 or np.any(x[0, 2:] != 0):
            i = int(np.argmax(bad)) if np.any(bad) else 0
            raise regime_error(name, "samples s₁e₁ + s₂e₂ (first) or s₁e₁, all labelled +1 "
                               "(gflow.cooccurring_features)", f"sample {i} is {x[i].tolist()} with label {y[i]:+g}")
        dt = model.v.dtype
        return cls(jnp.asarray(both.mean(), dt), jnp.asarray([s1, s2], dt), model.v[0, :2], flow.time_scale)

    def initial_state(self):
        return self.w0

    def vector_field(self, t, w, args):
        s1, s2 = self.norms[0], self.norms[1]
        m_both = s1 * w[0] + s2 * w[1]
        m_first = s1 * w[0]
        g_both = self.q * jax.nn.sigmoid(-m_both)
        d1 = s1 * (g_both + (1.0 - self.q) * jax.nn.sigmoid(-m_first))
        return self.time_scale * jnp.stack([d1, s2 * g_both])

    def observables(self, t, w):
        return {"weights": w}


def _depth_clock_integral(z0, z, p, s, depth):
    """t(z) = ∫_{z₀}^{z} (1 + e^ζ) dζ / (p L s^{2/L} ζ^{2−2/L}) in ln ζ, composite Gauss–Legendre."""
    nodes = jnp.asarray(_GL_NODES)
    weights = jnp.asarray(_GL_WEIGHTS)
    edges = jnp.linspace(0.0, 1.0, _GL_PANELS + 1)
    mid = 0.5 * (edges[1:] + edges[:-1])
    half = 0.5 * (edges[1:] - edges[:-1])
    x = (mid[:, None] + half[:, None] * nodes[None, :]).reshape(-1)
    w = (half[:, None] * weights[None, :]).reshape(-1)
    lo, hi = jnp.log(z0), jnp.log(z)
    zeta = jnp.exp(lo + (hi - lo) * x)
    integrand = (1.0 + jnp.exp(zeta)) * zeta ** (2.0 / depth - 1.0)
    return (hi - lo) * jnp.sum(w * integrand) / (p * depth * s ** (2.0 / depth))


class ChainModes(AbstractTheory):
    """R6: balanced depth-L ReLU chain, one unit per mode and layer (`gflow.proper_chain_init`).

    ??? cite "Reference"
        Tachet des Combes et al., arXiv:1809.06848 (2018).

    With every layer's strength on mode k equal to a_k, z_k = s_k a_k^L and
    dz/dt = κ p L s^{2/L} z^{2−2/L} g(z). Hinge (L ≥ 3): z = [z₀^{−(L−2)/L} − (L−2)κ p s^{2/L} t]^{−L/(L−2)}
    until z = 1 (then frozen); L = 2: z₀e^{2κpst}, L = 1: z₀ + κps²t. Cross-entropy: the exact
    t(z) = ∫_{z₀}^{z}(1+e^ζ)dζ/(κpLs^{2/L}ζ^{2−2/L}), inverted by bracketed Newton.
    Fields z0, p, s (K,), mode_of_sample (n,). Observables `margins` (T, n), `loss` (T,).
    """

    z0: Float[Array, " K"]
    p: Float[Array, " K"]
    s: Float[Array, " K"]
    mode_of_sample: Int[Array, " n"]
    time_scale: Float[Array, ""]
    depth: int = eqx.field(static=True)
    loss: str = eqx.field(static=True)

    @classmethod
    def from_flow(cls, flow, *, atol: float = 1e-10) -> "ChainModes":
        """Seed from a `ReLUChain` flow under `hinge` or `logistic`; checks the diagonal, balanced
        proper init mode by mode."""
        from .._models.chain import ReLUChain

        name = cls.__name__
        check_unpadded(name, flow)
        model = flow.model0
        if not isinstance(model, ReLUChain) or model.depth < 2:
            raise regime_error(name, "a ReLUChain with at least one hidden layer", f"got {type(model).__name__}")
        if flow.loss not in (hinge, logistic):
            raise regime_error(name, "the hinge or logistic loss", f"got {getattr(flow.loss, '__name__', flow.loss)}")
        _concrete("from_flow", model.v, flow.data.x)
        F, mode_of, s, p, y = feature_modes(flow.data, name, atol=atol)
        K = F.shape[1]
        W = [np.asarray(w) for w in model.weights]
        first = W[0] @ F
        layers = [first] + W[1:]
        strengths = []
        for l, M in enumerate(layers):
            if M.shape != (K, K) or np.any(M[~np.eye(K, dtype=bool)] > 0):
                raise regime_error(name, "a diagonal proper init (one unit per mode, non-positive off-diagonals)",
                                   f"layer {l + 1} has shape {M.shape} or a positive off-diagonal entry",
                                   "Use gflow.proper_chain_init(...).")
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
                   flow.time_scale, model.depth, "hinge" if flow.loss is hinge else "logistic")

    def mode_margins(self, ts: Times) -> Float[Array, "T K"]:
        ts = jnp.asarray(ts, dtype=self.z0.dtype)
        L = self.depth
        if self.loss == "hinge":
            t = self.time_scale * ts[:, None]
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
            return jnp.exp(invert_increasing(clock, self.time_scale * t, jnp.log(z0), jnp.log(700.0)))

        per_time = jax.vmap(one, in_axes=(0, 0, 0, None))
        return jax.vmap(per_time, in_axes=(None, None, None, 0))(self.z0, self.p, self.s, ts)

    def late_time_margins(self, ts: Times) -> Float[Array, "T K"]:
        """R6 late-time cross-entropy asymptotics: z ≈ −α W₋₁(−(Ct)^{−1/α}/α), α = 2 − 2/L,
        C = κ p L s^{2/L} (valid once (Ct)^{−1/α}/α < 1/e, NaN before). The loss then falls like
        1/(Ct (ln Ct)^α): deeper chains converge faster late. L = 2 gives the leading R3b form."""
        L = self.depth
        alpha = 2.0 - 2.0 / L
        C = self.time_scale * self.p * L * self.s ** (2.0 / L)
        x = C[None, :] * jnp.asarray(ts, dtype=self.z0.dtype)[:, None]
        return -alpha * lambertw(-(x ** (-1.0 / alpha)) / alpha, -1)

    def evaluate(self, ts: Times) -> Observables:
        z = self.mode_margins(ts)
        per_mode = jax.nn.relu(1.0 - z) if self.loss == "hinge" else jax.nn.softplus(-z)
        return {"margins": z[:, self.mode_of_sample], "loss": per_mode @ self.p}


class SoftmaxModes(AbstractTheory):
    """R9: K-class softmax cross-entropy, class c = n_c samples s e_c, balanced proper init.

    ??? cite "Reference"
        Tachet des Combes et al., arXiv:1809.06848 (2018) (multi-class extension).

    Logits F = V relu(W x) with W = diag(u) (plus non-positive off-diagonals) and column c of V
    with diagonal a_c and equal off-diagonals b_c. With m = a − b, κ = K/(K−1) and the logit gap
    z = F_c − F_{c'} = s u m: du/dt = p s m r, dm/dt = κ p s u r, r = (K−1)/(eᶻ + K − 1).
    Balanced (m₀ = √κ u₀): ln(z/z₀) + [Ei(z) − Ei(z₀)]/(K−1) = 2κ_t p s √κ t (κ_t = time_scale),
    inverted by bracketed Newton in ln z. Fields z0, p (K,), s, mode_of_sample (n,).
    Observables `logit_gaps` (T, n) and `loss` (T,).
    """

    z0: Float[Array, " K"]
    p: Float[Array, " K"]
    s: Float[Array, ""]
    mode_of_sample: Int[Array, " n"]
    time_scale: Float[Array, ""]

    @classmethod
    def from_flow(cls, flow, *, atol: float = 1e-10) -> "SoftmaxModes":
        """Seed from a relu `TwoLayer` with K outputs under `cross_entropy` (one-hot labels)."""
        from .._losses import cross_entropy

        name = cls.__name__
        check_unpadded(name, flow)
        model = flow.model0
        if not isinstance(model, TwoLayer) or model.b is not None or flow.loss is not cross_entropy:
            raise regime_error(name, "a bias-free relu TwoLayer under cross_entropy", "got another setup")
        _concrete("from_flow", model.w, flow.data.x)
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
                               "the first layer is not of that form", "Use gflow.proper_init-style weights.")
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
                   flow.time_scale)

    def mode_margins(self, ts: Times) -> Float[Array, "T K"]:
        K = self.z0.shape[0]
        kappa = K / (K - 1)
        ts = jnp.asarray(ts, dtype=self.z0.dtype)
        rhs = 2.0 * self.time_scale * self.s * jnp.sqrt(kappa) * self.p[None, :] * ts[:, None]

        def one(z0, target):
            lhs = lambda y, _: y - jnp.log(z0) + (expi(jnp.exp(y)) - expi(z0)) / (K - 1)
            return jnp.exp(invert_increasing(lhs, target, jnp.log(z0), jnp.log(700.0)))

        return jax.vmap(jax.vmap(one), in_axes=(None, 0))(self.z0, rhs)

    def evaluate(self, ts: Times) -> Observables:
        z = self.mode_margins(ts)
        K = self.z0.shape[0]
        per_class = jnp.log1p((K - 1) * jnp.exp(-z))
        return {"logit_gaps": z[:, self.mode_of_sample], "loss": per_class @ self.p}
