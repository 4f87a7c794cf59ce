"""Pellegrini & Biroli 2020: mean-field dynamics of one-hidden-layer networks under the linear hinge.

Convention (shared/theory/pellegrini_biroli.md §1): x ~ N(0, I_d), teacher unit vector ŵ*,
y = sign(ŵ*·x); f(x) = (α/M) Σ_i a_i σ(w_i·x/√d) (`TwoLayer(..., scaling="mean_field")`);
L = (1/P) Σ_μ max(0, h − y_μ f(x_μ)); mean-field clock τ = α t / M, i.e. the flow is built with
`time_scale = M/α` (`mean_field_time_scale`). λ = k/√d with k = ½ for ReLU and 1 for linear σ.
x∥ = ŵ*·x, w∥ = ŵ*·w.
"""

import functools
import math
import warnings
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .._custom_types import Observables, Times
from .._data.base import Dataset
from .._flow.problem import GradientFlow
from .._flow.solve import solve_flow
from .._losses import hinge
from .._models.base import ACTIVATIONS
from .._models.two_layer import TwoLayer
from .._validate import check_float_array, is_concrete, message, check_unpadded, regime_error
from .base import AbstractReducedODE, AbstractTheory

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GAINS = {"relu": 0.5, "linear": 1.0}


def _check_width(name: str, width) -> int:
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width < 1:
        raise ValueError(message(name, "be an integer ≥ 1 (the number of hidden nodes M)", repr(width)))
    return int(width)


def _check_margin(margin) -> None:
    if is_concrete(margin) and not float(np.asarray(margin)) > 0:
        raise ValueError(
            message("margin", "be > 0 (the hinge margin h; the theory divides by it)", margin,
                    "Use h = 1 as in the paper.")
        )


def mean_field_time_scale(width: int | float, alpha: float) -> float:
    """The `GradientFlow(time_scale=...)` that puts the flow on the mean-field clock τ = α t / M.

    The flow of L in plain time has rate 1/M per node; dθ/dτ = −(M/α)∇L makes curves width
    independent. Returns M/α.
    """
    width = _check_width("width", width)
    if not float(alpha) > 0:
        raise ValueError(message("alpha", "be > 0 (the mean-field output scale α)", alpha))
    return width / float(alpha)


def hinge_with_margin(margin: float) -> Callable:
    """The linear hinge max(0, h − y f) with margin h = `margin` (> 0), as a per-example loss."""
    _check_margin(margin)
    return functools.partial(hinge, margin=float(margin))


def mean_field_hinge_flow(model: TwoLayer, data: Dataset, margin: float = 1.0) -> GradientFlow:
    """`GradientFlow` of a mean-field `TwoLayer` under the hinge with margin h, on the clock τ = α t/M
    (M = the real width, `active_width`, for a padded model)."""
    if not isinstance(model, TwoLayer) or model.scaling != "mean_field":
        raise ValueError(message("model", 'be a TwoLayer with scaling="mean_field"',
                                 getattr(model, "scaling", type(model).__name__)))
    if model.active_width is not None:
        time_scale = model.active_width / model.alpha
    else:
        time_scale = mean_field_time_scale(model.width, model.alpha)
    return GradientFlow(model, hinge_with_margin(margin), data, time_scale=time_scale)


def separable_gaussian(
    num_samples: int,
    d: int,
    *,
    key: PRNGKeyArray,
    teacher: Float[Array, " d"] | None = None,
    stratified: bool = False,
    symmetrized: bool = False,
) -> Dataset:
    """Linearly separable Gaussian data: x ~ N(0, I_d), y = sign(ŵ*·x) (noiseless, β* → ∞).

    `teacher` defaults to e_1. `stratified=True` replaces |x∥| by half-normal quantiles (the P = ∞
    drive is then matched to O(1/P)). `symmetrized=True` draws P/4 base points and adds the copies
    x∥ → −x∥ and x⊥ → −x⊥ (the dataset closed under x → −x and x⊥ → −x⊥, which makes the
    mean-field reduction exact at finite P; theory file §2); P must then be a multiple of 4.
    Returns a `Dataset` with x (P, d), y (P, 1).
    """
    num_samples = _check_width("num_samples", num_samples)
    teacher = jnp.eye(d)[0] if teacher is None else check_float_array("teacher", teacher, ndim=1)
    teacher = teacher / jnp.linalg.norm(teacher)
    n = num_samples // 4 if symmetrized else num_samples
    if symmetrized and num_samples % 4:
        raise ValueError(message("num_samples", "be a multiple of 4 when `symmetrized=True`", num_samples))
    kx, kp, ks = jr.split(key, 3)
    x = jr.normal(kx, (n, d))
    par = x @ teacher
    perp = x - par[:, None] * teacher[None, :]
    if stratified:
        q = (jnp.arange(n, dtype=float) + 0.5) / n
        mags = jax.scipy.special.ndtri(0.5 + 0.5 * q)
        signs = jnp.where(jr.bernoulli(ks, 0.5, (n,)), 1.0, -1.0)
        par = jr.permutation(kp, mags) * signs
    if symmetrized:
        par = jnp.abs(par)
        par = jnp.concatenate([par, par, -par, -par])
        perp = jnp.concatenate([perp, -perp, -perp, perp])
    x = perp + par[:, None] * teacher[None, :]
    return Dataset(x, jnp.sign(par))


def symmetric_population(
    base_width: int, d: int, *, key: PRNGKeyArray, alpha: float = 1.0, activation: str = "relu",
    teacher: Float[Array, " d"] | None = None, init_scale: float = 1.0,
) -> TwoLayer:
    """A mean-field `TwoLayer` of width M = 4·`base_width` closed under (a, w) → (−a, −w) and
    w⊥ → −w⊥: with symmetrized data the network output is exactly F(τ) x∥ (theory file §5, row 1)."""
    base_width = _check_width("base_width", base_width)
    teacher = jnp.eye(d)[0] if teacher is None else teacher / jnp.linalg.norm(teacher)
    kw, ka = jr.split(key)
    w = init_scale * jr.normal(kw, (base_width, d))
    a = init_scale * jr.normal(ka, (base_width,))
    par = w @ teacher
    mirrored = 2.0 * par[:, None] * teacher[None, :] - w  # the w⊥ → −w⊥ copy
    w_all = jnp.concatenate([w, mirrored, -w, -mirrored])
    a_all = jnp.concatenate([a, a, -a, -a])
    return TwoLayer(d, 4 * base_width, activation, scaling="mean_field", alpha=alpha, w=w_all, a=a_all)


def node_observables(teacher: Float[Array, " d"], margin: float = 1.0) -> dict[str, Callable]:
    """Simulation observables under the theory's names: `a` (M,), `w_par` (M,), `w_perp` (M, d),
    `balance` = a_i² − |w_i|² (M,), `v` = ⟨a w⟩ (d,), `unsatisfied_fraction`, `loss`."""
    teacher = teacher / jnp.linalg.norm(teacher)

    def a(t, params, flow):
        return flow.model(params).a[0]

    def w_par(t, params, flow):
        return flow.model(params).w @ teacher

    def w_perp(t, params, flow):
        w = flow.model(params).w
        return w - (w @ teacher)[:, None] * teacher[None, :]

    def balance(t, params, flow):
        m = flow.model(params)
        return m.a[0] ** 2 - jnp.sum(m.w**2, axis=-1)

    def v(t, params, flow):
        m = flow.model(params)
        return (m.output_scale / m.alpha) * (m.a[0] @ m.w)  # (1/M) Σ a_i w_i, M the real width

    def unsatisfied_fraction(t, params, flow):
        m = flow.model(params)
        yf = flow.data.y[:, 0] * jax.vmap(m)(flow.data.x)[:, 0]
        return flow.data.sample_mean((yf < margin).astype(yf.dtype))

    return {"a": a, "w_par": w_par, "w_perp": w_perp, "balance": balance, "v": v,
            "unsatisfied_fraction": unsatisfied_fraction, "loss": lambda t, p, flow: flow.loss_value(p)}


def _margin_of(flow) -> float:
    loss = flow.loss
    if isinstance(loss, functools.partial) and loss.func is hinge:
        return float(loss.keywords.get("margin", 1.0))
    if loss is hinge:
        return 1.0
    raise regime_error("MeanFieldHinge", "the linear hinge loss (gflow.hinge or hinge_with_margin(h))",
                       f"got {getattr(loss, '__name__', loss)}")


def _check_flow(flow, name: str, teacher) -> tuple[TwoLayer, float, Float[Array, " d"], str]:
    """Regime checks shared by the from_flow constructors; returns (model, h, ŵ*, activation)."""
    check_unpadded(name, flow)
    model = flow.model0
    if not isinstance(model, TwoLayer) or model.scaling != "mean_field":
        raise regime_error(name, 'a TwoLayer with scaling="mean_field"', f"got {type(model).__name__}")
    if model.b is not None or model.sphere or model.a.shape[0] != 1:
        raise regime_error(name, "no biases, no sphere normalisation and one output", "the model has one of them")
    act = next((k for k, f in ACTIVATIONS.items() if f is model.activation), None)
    if act not in _GAINS:
        raise regime_error(name, "σ = relu or linear", f"got {act or model.activation}")
    if not isinstance(flow.data, Dataset):
        raise regime_error(name, "a finite Dataset", f"got {type(flow.data).__name__}")
    if flow.rates is not None:
        raise regime_error(name, "equal layer rates", "got `rates`")
    h = _margin_of(flow)
    _check_margin(h)
    expected = mean_field_time_scale(model.width, model.alpha)
    if is_concrete(flow.time_scale) and not np.isclose(float(flow.time_scale), expected, rtol=1e-12):
        raise regime_error(name, "the mean-field clock τ = α t / M", f"time_scale {float(flow.time_scale)} ≠ M/α = {expected}",
                           "Build the flow with mean_field_hinge_flow(model, data, margin).")
    teacher = check_float_array("teacher", teacher, ndim=1)
    teacher = teacher / jnp.linalg.norm(teacher)
    y = flow.data.y[:, 0]
    if is_concrete(y) and not bool(jnp.all(jnp.abs(y) == 1)):
        zero_one = bool(jnp.all((y == 0) | (y == 1)))
        raise regime_error(name, "binary labels y = ±1", "got 0/1 labels" if zero_one else "got labels other than ±1",
                           "Map 0/1 labels to ±1 with `2 * y - 1`." if zero_one else None)
    wrong = jnp.sum(jnp.sign(flow.data.x @ teacher) != y)
    if is_concrete(wrong) and int(wrong) > 0:
        raise regime_error(name, "linearly separable labels y = sign(ŵ*·x)",
                           f"{int(wrong)} of {y.shape[0]} labels disagree with the teacher",
                           "Use noiseless teacher labels (separable_gaussian).")
    return model, h, teacher, act


def _rel_moments(a0, w_par0):
    return jnp.mean(a0 * w_par0), 0.5 * jnp.mean(a0**2 + w_par0**2)


class MeanFieldHinge(AbstractReducedODE):
    """Explicit mean-field solution for separable Gaussian data, P = ∞ (Pellegrini & Biroli 2020).

    ??? cite "Reference"
        Pellegrini & Biroli, "An analytic theory of shallow networks dynamics for hinge loss
        classification", NeurIPS 2020 (arXiv:2006.11209).

    State γ(τ), τ the mean-field clock α t/M. Closure (theory file §2):
    F(γ) = αλ (C0 cosh 2γ + S0 sinh 2γ), x_c = h/F, dγ/dτ = λ c(x_c), c(x) = √(2/π)(1 − e^{−x²/2}).
    Every node: a_i(τ) = a_i(0) cosh γ + w∥_i(0) sinh γ, w∥_i(τ) = w∥_i(0) cosh γ + a_i(0) sinh γ,
    w⊥_i frozen. Observables: `gamma`, `F`, `x_c`, `unsatisfied_fraction` = erf(x_c/√2),
    `loss` (hinge), `a` (T, M), `w_par` (T, M) (M = 0 when no nodes are given).
    Assumes x ~ N(0, I_d) and noiseless teacher labels; for a finite sample use
    `MeanFieldHingeFiniteP`. The rich/lazy knob is `knob` = αλS0/h.
    """

    alpha: Float[Array, ""]
    margin: Float[Array, ""]
    gain: Float[Array, ""]
    C0: Float[Array, ""]
    S0: Float[Array, ""]
    a0: Float[Array, " M"]
    w_par0: Float[Array, " M"]

    def __init__(self, *, d: int, alpha=1.0, margin=1.0, activation: str = "relu", C0=0.0, S0=1.0,
                 a0=None, w_par0=None):
        _check_width("d", d)
        _check_margin(margin)
        if activation not in _GAINS:
            raise ValueError(message("activation", f"be one of {tuple(_GAINS)}", repr(activation)))
        self.alpha = jnp.asarray(alpha, dtype=float)
        self.margin = jnp.asarray(margin, dtype=float)
        self.gain = jnp.asarray(_GAINS[activation] / math.sqrt(d), dtype=float)
        self.C0 = jnp.asarray(C0, dtype=float)
        self.S0 = jnp.asarray(S0, dtype=float)
        self.a0 = jnp.zeros(0) if a0 is None else check_float_array("a0", a0, ndim=1)
        self.w_par0 = jnp.zeros(0) if w_par0 is None else check_float_array("w_par0", w_par0, ndim=1)
        if self.a0.shape != self.w_par0.shape:
            raise ValueError(message("w_par0", f"have the shape of `a0` {self.a0.shape}", self.w_par0.shape))

    @classmethod
    def from_flow(cls, flow, teacher: Float[Array, " d"], *, empirical_moments: bool = True) -> "MeanFieldHinge":
        """Seed the node paths from the network at τ = 0 (C0, S0 empirical, or 0 and (σ_a²+σ_w²)/2 = 1).

        Warns (`UserWarning`) when the training x∥ are not N(0, 1) by a Kolmogorov–Smirnov test at
        the 1% level, pointing to `MeanFieldHingeFiniteP`.
        """
        model, h, teacher, act = _check_flow(flow, "MeanFieldHinge", teacher)
        par = flow.data.x @ teacher
        if is_concrete(par):
            p = np.sort(np.asarray(par))
            n = p.shape[0]
            cdf = 0.5 * (1.0 + np.vectorize(math.erf)(p / math.sqrt(2.0)))
            ks = max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n))
            if ks > 1.63 / math.sqrt(n):
                warnings.warn(
                    f"MeanFieldHinge assumes Gaussian data x∥ ~ N(0, 1) (P = ∞); the training projections "
                    f"fail a Kolmogorov–Smirnov test (D = {ks:.3f} > {1.63 / math.sqrt(n):.3f}). "
                    "Use MeanFieldHingeFiniteP.from_flow for the exact finite-P solution.",
                    UserWarning, stacklevel=2)
        a0 = model.a[0]
        w_par0 = model.w @ teacher
        C0, S0 = _rel_moments(a0, w_par0) if empirical_moments else (0.0, 1.0)
        return cls(d=model.d, alpha=model.alpha, margin=h, activation=act, C0=C0, S0=S0, a0=a0, w_par0=w_par0)

    @property
    def knob(self) -> Float[Array, ""]:
        """A = αλS0/h: ≫ 1 lazy (bulk fitted at γ ≈ 1/(2A)), ≪ 1 rich (γ ≈ ½ ln(2/A)) (§4)."""
        return self.alpha * self.gain * self.S0 / self.margin

    @property
    def regime(self) -> str:
        """'lazy' (A > 10), 'rich' (A < 0.1) or 'crossover'; at late times the dynamics is always rich."""
        A = float(self.knob)
        return "lazy" if A > 10 else "rich" if A < 0.1 else "crossover"

    def F(self, gamma):
        """f(x) = F(γ) x∥: F = αλ (C0 cosh 2γ + S0 sinh 2γ)."""
        return self.alpha * self.gain * (self.C0 * jnp.cosh(2 * gamma) + self.S0 * jnp.sinh(2 * gamma))

    def x_c(self, gamma):
        """Active-set boundary h/F (∞ while F ≤ 0: every sample unsatisfied)."""
        F = self.F(gamma)
        return jnp.where(F > 0, self.margin / jnp.where(F > 0, F, 1.0), jnp.inf)

    def drive(self, gamma):
        """c(x_c) = ⟨y x∥⟩_U = √(2/π)(1 − e^{−x_c²/2})."""
        return _SQRT_2_OVER_PI * -jnp.expm1(-0.5 * self.x_c(gamma) ** 2)

    def initial_state(self):
        return jnp.zeros((), dtype=self.alpha.dtype)

    def vector_field(self, t, gamma, args):
        return self.gain * self.drive(gamma)

    def observables(self, t, gamma) -> Observables:
        F = self.F(gamma)
        xc = self.x_c(gamma)
        u = jnp.where(F > 0, jax.scipy.special.erf(xc / math.sqrt(2.0)), 1.0)
        loss = self.margin * u - F * self.drive(gamma)
        return {"gamma": gamma, "F": F, "x_c": xc, "unsatisfied_fraction": u, "loss": loss,
                **_node_paths(self.a0, self.w_par0, gamma)}

    def gamma_sat(self, p):
        """γ at which a sample with y x∥ = p > 0 is first satisfied (F(γ) p = h), 0 if it starts so."""
        return _gamma_sat(self, p)

    def tau_sat(self, p, num_nodes: int = 96):
        """τ_sat(p) = ∫₀^{γ_p} dg / (λ c(h/F(g))) by Gauss–Legendre quadrature (smooth integrand)."""
        g = jnp.asarray(self.gamma_sat(p))
        nodes, weights = np.polynomial.legendre.leggauss(num_nodes)
        shape = (1,) * g.ndim + (num_nodes,)
        s = jnp.asarray(0.5 * (nodes + 1.0)).reshape(shape)
        integrand = 1.0 / (self.gain * self.drive(g[..., None] * s))
        return 0.5 * g * jnp.sum(jnp.asarray(weights).reshape(shape) * integrand, axis=-1)

    def late_time(self) -> dict[str, Float[Array, ""]]:
        """Late-time constants (x_c ≪ 1, C0 = 0): γ − ¼ ln τ → `gamma_offset`, u √τ → `u_sqrt_tau`,
        x_c² τ → `xc2_tau`, L √τ → `loss_sqrt_tau`; τ_sat(p) ≈ x_c2_tau / p² for small p."""
        lam, h = self.gain, self.margin
        xc2_tau = math.sqrt(2 * math.pi) / (4 * lam)
        return {
            "gamma_offset": 0.25 * jnp.log(16 * h**2 / (math.sqrt(2 * math.pi) * self.alpha**2 * lam * self.S0**2)),
            "xc2_tau": xc2_tau,
            "u_sqrt_tau": _SQRT_2_OVER_PI * jnp.sqrt(xc2_tau),
            "loss_sqrt_tau": h * jnp.sqrt(xc2_tau) / math.sqrt(2 * math.pi),
        }


def _node_paths(a0, w_par0, gamma):
    ch, sh = jnp.cosh(gamma), jnp.sinh(gamma)
    return {"a": a0 * ch + w_par0 * sh, "w_par": w_par0 * ch + a0 * sh}


def _gamma_sat(theory, p):
    """Solve C0 cosh 2γ + S0 sinh 2γ = h/(αλp) = R sinh(2γ + φ), R = √(S0² − C0²), tanh φ = C0/S0."""
    p = jnp.asarray(p)
    R = jnp.sqrt(theory.S0**2 - theory.C0**2)
    phi = jnp.arctanh(theory.C0 / theory.S0)
    r = theory.margin / (theory.alpha * theory.gain * jnp.where(p > 0, p, 1.0))
    g = 0.5 * (jnp.arcsinh(r / R) - phi)
    return jnp.where(p > 0, jnp.maximum(g, 0.0), jnp.inf)


class MeanFieldHingeFiniteP(AbstractTheory):
    """The exact finite-P mean-field solution: γ(τ) piecewise linear (theory file §2, "Finite P").

    ??? cite "Reference"
        Pellegrini & Biroli, NeurIPS 2020 (arXiv:2006.11209).

    With margins p_μ = y_μ x∥_μ > 0 (P samples), the drive c_P(γ) = (1/P) Σ_{μ unsatisfied} p_μ is
    constant between the crossings γ_μ (F(γ_μ) p_μ = h); τ(γ) is their cumulative sum. Exact at any
    M when the data are closed under x → −x, x⊥ → −x⊥ and the nodes under (a, w) → (−a, −w),
    w⊥ → −w⊥ (then f = F(γ) x∥ exactly); the M → ∞ limit otherwise (with C0 = 0, S0 = 1).
    Time: τ = α t / M. Observables as `MeanFieldHinge`; `unsatisfied_fraction` counts samples.
    """

    alpha: Float[Array, ""]
    margin: Float[Array, ""]
    gain: Float[Array, ""]
    C0: Float[Array, ""]
    S0: Float[Array, ""]
    a0: Float[Array, " M"]
    w_par0: Float[Array, " M"]
    margins_sorted: Float[Array, " P"]
    gamma_nodes: Float[Array, " P1"]
    tau_nodes: Float[Array, " P1"]

    def __init__(self, projections, *, d: int, alpha=1.0, margin=1.0, activation: str = "relu",
                 C0=0.0, S0=1.0, a0=None, w_par0=None):
        base = MeanFieldHinge(d=d, alpha=alpha, margin=margin, activation=activation, C0=C0, S0=S0,
                              a0=a0, w_par0=w_par0)
        p = check_float_array("projections", projections, ndim=1)
        separable = ("MeanFieldHingeFiniteP", "linearly separable labels (every y_μ ŵ*·x_μ > 0)")
        if is_concrete(p):
            bad = int(np.sum(np.asarray(p) <= 0))
            if bad:
                raise regime_error(*separable, f"{bad} of {p.shape[0]} margins are ≤ 0")
        else:
            p = eqx.error_if(p, jnp.any(p <= 0), str(regime_error(*separable, "some margins are ≤ 0")))
        self.alpha, self.margin, self.gain = base.alpha, base.margin, base.gain
        self.C0, self.S0, self.a0, self.w_par0 = base.C0, base.S0, base.a0, base.w_par0
        p = jnp.sort(p)[::-1]  # largest margins are satisfied first
        g = _gamma_sat(self, p)
        # drive on segment k (from γ_(k−1) to γ_(k)): samples k.. still active.
        active_sum = jnp.cumsum(p[::-1])[::-1] / p.shape[0]
        dtau = jnp.diff(jnp.concatenate([jnp.zeros(1), g])) / (self.gain * active_sum)
        self.margins_sorted = p
        self.gamma_nodes = jnp.concatenate([jnp.zeros(1), g])
        self.tau_nodes = jnp.concatenate([jnp.zeros(1), jnp.cumsum(dtau)])

    @classmethod
    def from_flow(cls, flow, teacher: Float[Array, " d"], *, empirical_moments: bool = True) -> "MeanFieldHingeFiniteP":
        """Seed from the network at τ = 0 and the training margins y_μ ŵ*·x_μ."""
        model, h, teacher, act = _check_flow(flow, "MeanFieldHingeFiniteP", teacher)
        a0, w_par0 = model.a[0], model.w @ teacher
        C0, S0 = _rel_moments(a0, w_par0) if empirical_moments else (0.0, 1.0)
        proj = flow.data.y[:, 0] * (flow.data.x @ teacher)
        return cls(proj, d=model.d, alpha=model.alpha, margin=h, activation=act, C0=C0, S0=S0,
                   a0=a0, w_par0=w_par0)

    @property
    def crossing_times(self) -> Float[Array, " P"]:
        """τ at which each sample (largest margin first) is satisfied: the kinks of the flow."""
        return self.tau_nodes[1:]

    def gamma(self, ts: Times) -> Float[Array, " T"]:
        return jnp.interp(jnp.asarray(ts), self.tau_nodes, self.gamma_nodes)

    def evaluate(self, ts: Times) -> Observables:
        gamma = self.gamma(ts)
        F = MeanFieldHinge.F(self, gamma)
        p = self.margins_sorted
        active = F[:, None] * p[None, :] < self.margin
        u = jnp.mean(active.astype(F.dtype), axis=-1)
        loss = jnp.mean(jnp.where(active, self.margin - F[:, None] * p[None, :], 0.0), axis=-1)
        return {"gamma": gamma, "F": F, "unsatisfied_fraction": u, "loss": loss,
                **_node_paths(self.a0[None, :], self.w_par0[None, :], gamma[:, None])}


class LinearMeanFieldMoments(AbstractReducedODE):
    """Exact reduced flow of a linear-σ mean-field network under the hinge, any M and P (§4).

    ??? cite "Reference"
        Pellegrini & Biroli, NeurIPS 2020 (arXiv:2006.11209).

    f(x) = α v·x/√d with v = ⟨a w⟩ (average over the M nodes); with Σ = ⟨w wᵀ⟩, A = ⟨a²⟩ and
    G = (1/P) Σ_μ y_μ x_μ 1[y_μ f(x_μ) < h]:
    dv/dτ = (Σ + A I) G/√d,  dΣ/dτ = (v Gᵀ + G vᵀ)/√d,  dA/dτ = 2 v·G/√d,  τ = α t/M.
    Observables: `v` (T, d), `loss` (T,), `unsatisfied_fraction` (T,),
    `generalization_error` = arccos(v·ŵ*/|v|)/π (Gaussian test inputs).
    """

    alpha: Float[Array, ""]
    margin: Float[Array, ""]
    x: Float[Array, "P d"]
    y: Float[Array, " P"]
    teacher: Float[Array, " d"]
    v0: Float[Array, " d"]
    sigma0: Float[Array, "d d"]
    A0: Float[Array, ""]

    def __init__(self, x, y, teacher, v0, sigma0, A0, *, alpha=1.0, margin=1.0):
        _check_margin(margin)
        self.x = check_float_array("x", x, ndim=2)
        self.y = check_float_array("y", y, ndim=(1, 2)).reshape(-1)
        t = check_float_array("teacher", teacher, ndim=1)
        self.teacher = t / jnp.linalg.norm(t)
        self.v0 = check_float_array("v0", v0, ndim=1)
        self.sigma0 = check_float_array("sigma0", sigma0, ndim=2)
        self.A0 = jnp.asarray(A0, dtype=float)
        self.alpha = jnp.asarray(alpha, dtype=float)
        self.margin = jnp.asarray(margin, dtype=float)

    @classmethod
    def from_flow(cls, flow, teacher: Float[Array, " d"]) -> "LinearMeanFieldMoments":
        """Moments of the network at τ = 0; needs σ = linear (any data, labels need not be separable)."""
        check_unpadded("LinearMeanFieldMoments", flow)
        model = flow.model0
        if not isinstance(model, TwoLayer) or ACTIVATIONS.get("linear") is not model.activation:
            raise regime_error("LinearMeanFieldMoments", "a mean-field TwoLayer with σ = linear",
                               f"got {getattr(model, 'activation', type(model).__name__)}")
        _, h, teacher, _ = _check_flow(flow, "LinearMeanFieldMoments", teacher)
        a, w = model.a[0], model.w
        M = model.width
        return cls(flow.data.x, flow.data.y, teacher, a @ w / M, w.T @ w / M, jnp.mean(a**2),
                   alpha=model.alpha, margin=h)

    def initial_state(self):
        return (self.v0, self.sigma0, self.A0)

    def _drive(self, v):
        sd = math.sqrt(self.x.shape[-1])
        yf = self.y * self.alpha * (self.x @ v) / sd
        active = (yf < self.margin).astype(v.dtype)
        return (active * self.y) @ self.x / self.x.shape[0], yf

    def vector_field(self, t, state, args):
        v, sigma, A = state
        sd = math.sqrt(self.x.shape[-1])
        G, _ = self._drive(v)
        dv = (sigma @ G + A * G) / sd
        dsigma = (jnp.outer(v, G) + jnp.outer(G, v)) / sd
        return dv, dsigma, 2.0 * jnp.dot(v, G) / sd

    def observables(self, t, state) -> Observables:
        v = state[0]
        _, yf = self._drive(v)
        cos = jnp.dot(v, self.teacher) / jnp.linalg.norm(v)
        return {"v": v, "loss": jnp.mean(jax.nn.relu(self.margin - yf)),
                "unsatisfied_fraction": jnp.mean((yf < self.margin).astype(v.dtype)),
                "generalization_error": jnp.arccos(jnp.clip(cos, -1.0, 1.0)) / math.pi}


def frozen_dataset_gamma(margins: Float[Array, " P"], ts: Float[Array, "*T"], *, d: int, activation: str = "relu") -> Float[Array, "*T"]:
    """Negative control (§5 row 7): γ = λ⟨|x∥|⟩τ, as if every sample stayed active forever."""
    return _GAINS[activation] / math.sqrt(d) * jnp.mean(jnp.abs(margins)) * jnp.asarray(ts)


def _padded_errors(width, key, padded_width, data, teacher, ts, alpha, margin, rtol, atol, init_scale, max_steps):
    """One random N(0, s²) init of width M = `width`, run as a `TwoLayer` of `padded_width` units
    with `active_width` = M, so that every width shares one compile (the padding units are zero
    and stay zero; the output scale α/M and the clock M/α are the width-M ones). Returns the
    relative (a, w∥) error at ts[-1] against the M = ∞ finite-P theory, the same for the
    frozen-dataset control, the RMS unsatisfied-fraction deviation and the step count."""
    d = data.d
    kw, ka = jr.split(key)
    real = jnp.arange(padded_width, dtype=data.x.dtype) < width
    w0 = jnp.where(real[:, None], init_scale * jr.normal(kw, (padded_width, d)), 0.0)
    a0 = jnp.where(real, init_scale * jr.normal(ka, (padded_width,)), 0.0)
    model = TwoLayer(d, padded_width, "relu", scaling="mean_field", alpha=alpha, w=w0, a=a0, active_width=width)
    flow = mean_field_hinge_flow(model, data, margin)
    obs = node_observables(teacher, margin)
    sol = solve_flow(flow, ts[-1], ts=ts, observables={k: obs[k] for k in ("a", "w_par", "unsatisfied_fraction")},
                     rtol=rtol, atol=atol, max_steps=max_steps)
    w_par0 = w0 @ teacher
    theory = MeanFieldHingeFiniteP(data.y[:, 0] * (data.x @ teacher), d=d, alpha=alpha, margin=margin,
                                   C0=0.0, S0=init_scale**2, a0=a0, w_par0=w_par0)
    pred = theory.evaluate(ts)
    sim = jnp.concatenate([sol.observables["a"][-1], sol.observables["w_par"][-1]])
    th = jnp.concatenate([pred["a"][-1], pred["w_par"][-1]])
    frozen = _node_paths(a0, w_par0, frozen_dataset_gamma(theory.margins_sorted, ts[-1], d=d))
    fz = jnp.concatenate([frozen["a"], frozen["w_par"]])
    u_rms = jnp.sqrt(jnp.mean((sol.observables["unsatisfied_fraction"] - pred["unsatisfied_fraction"]) ** 2))
    norm = jnp.linalg.norm(th)
    return jnp.linalg.norm(sim - th) / norm, jnp.linalg.norm(sim - fz) / jnp.linalg.norm(fz), u_rms, sol.stats["num_steps"]


class WidthSweep(eqx.Module):
    """Result of `finite_width_sweep`: per-(width, seed) errors and the fitted log-log slope."""

    widths: Int[Array, " W"]
    errors: Float[Array, "W S"]
    frozen_errors: Float[Array, "W S"]
    unsatisfied_rms: Float[Array, "W S"]
    num_steps: Int[Array, "W S"]
    slope: Float[Array, ""]
    slope_stderr: Float[Array, ""]


def fit_power_law(widths, errors: Float[Array, "W S"]) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """Slope of log(mean error) vs log M by weighted least squares, weights from the seed spread
    (σ_log ≈ SEM/mean); returns (slope, its standard error)."""
    errors = jnp.asarray(errors)
    n = errors.shape[-1]
    mean = jnp.mean(errors, axis=-1)
    sem = jnp.std(errors, axis=-1, ddof=1) / math.sqrt(n) if n > 1 else 0.1 * mean
    sig = jnp.maximum(sem / mean, 1e-3)
    X = jnp.log(jnp.asarray(widths, dtype=mean.dtype))
    Y = jnp.log(mean)
    wts = 1.0 / sig**2
    xm = jnp.sum(wts * X) / jnp.sum(wts)
    ym = jnp.sum(wts * Y) / jnp.sum(wts)
    sxx = jnp.sum(wts * (X - xm) ** 2)
    slope = jnp.sum(wts * (X - xm) * (Y - ym)) / sxx
    return slope, 1.0 / jnp.sqrt(sxx)


def finite_width_sweep(
    widths, num_seeds: int, data: Dataset, *, key: PRNGKeyArray, teacher: Float[Array, " d"] | None = None,
    t1: float = 10.0, num_times: int = 21, alpha: float = 1.0, margin: float = 1.0,
    init_scale: float = 1.0, rtol: float = 1e-7, atol: float = 1e-9, max_steps: int = 100_000,
) -> WidthSweep:
    """Finite-width deviation from the mean-field theory: `num_seeds` random N(0, s²) inits per width.

    For each width M (widths and seeds vmapped together in one compile, see `_padded_errors`), the relative error of the node
    parameters (a_i, w∥_i) at τ = `t1` against `MeanFieldHingeFiniteP` with C0 = 0, S0 = s²
    (the M = ∞ theory on the same data), the frozen-dataset control's error, and the RMS over
    time of the unsatisfied-fraction deviation. The slope of log(mean error) vs log M is fitted with
    its standard error (theory: −½).
    """
    widths = [_check_width("widths", m) for m in widths]
    num_seeds = _check_width("num_seeds", num_seeds)
    teacher = jnp.eye(data.d)[0] if teacher is None else teacher / jnp.linalg.norm(teacher)
    ts = jnp.linspace(0.0, t1, num_times)
    W = len(widths)
    m = jnp.repeat(jnp.asarray(widths, dtype=data.x.dtype), num_seeds)
    keys = jr.split(key, W * num_seeds)
    run = functools.partial(_padded_errors, padded_width=max(widths), data=data, teacher=teacher, ts=ts,
                            alpha=alpha, margin=margin, rtol=rtol, atol=atol, init_scale=init_scale,
                            max_steps=max_steps)
    out = jax.jit(jax.vmap(run))(m, keys)
    errors, frozen, u_rms, steps = (x.reshape(W, num_seeds) for x in out)
    slope, stderr = fit_power_law(widths, errors)
    return WidthSweep(jnp.asarray(widths), errors, frozen, u_rms, steps, slope, stderr)
