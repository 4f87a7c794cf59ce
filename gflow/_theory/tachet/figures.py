"""Figures of Tachet des Combes, Pezeshki, Shabanian, Courville & Bengio, "On the Learning Dynamics
of Deep Neural Networks", arXiv:1809.06848 (2018), and a gradient-starvation illustration on
scikit-learn's bundled digits (`gflow reproduce tachet-…`, or `gflow.tachet.FIGURES`).

The paper's own figures could not be read; these illustrate its claims (independent modes,
sigmoidal error, failed-training regions, speed set by norm and frequency, CE vs hinge, gradient
starvation, depth) with the models of `gflow.tachet`. Lines are theory, markers simulation
(float64, rtol 1e-10), time t (the flow's clock) on a log axis. Each `fig_*(out, small)` writes a
PNG into `out` and returns its paths; `small=True` is a quick low-resolution pass.
"""

from pathlib import Path

import diffrax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from ..._data.base import Dataset
from ..._flow import GradientFlow, margins_at_least, solve_flow
from ..._losses import hinge, logistic
from ..._models.chain import ReLUChain
from ..._models.two_layer import TwoLayer
from ..._plotting import _pyplot, save_figure
from ..._reproduce import register
from ..._special import expi
from ..base import relative_error
from .clocks import REGION_R, crossing_time, ensemble_error, phase_region
from .margins import BalancedCEMargins, LinearCEMargins, linear_weights
from .phase_map import phase_map_margins
from .setup import cooccurring_features, orthogonal_features, proper_chain_init, proper_init
from .starvation import FrequencyStarvation
from .two_layer import TwoLayerModes, TwoLayerModesCE

SOLVER = diffrax.Dopri8()
RTOL, ATOL = 1e-10, 1e-12
LOSSES = {"hinge": hinge, "logistic": logistic}
S4, COUNTS4, LABELS4 = (1.0, 2.0, 0.5, 1.5), (1, 2, 3, 2), (1.0, -1.0, 1.0, -1.0)


def mode_flow(u0, vt0, loss, norms=S4, counts=COUNTS4, labels=LABELS4):
    """The R1 test problem: K orthogonal modes, one properly initialised relu unit per mode."""
    K = len(norms)
    data = orthogonal_features(norms, counts, labels, K)
    w, a = proper_init(jnp.asarray(u0), jnp.asarray(vt0), jnp.asarray(labels), K, key=jr.PRNGKey(0))
    return GradientFlow(TwoLayer(K, K, "relu", w=w, a=a), loss, data)


def _mode_theory(flow, loss):
    """(theory, its `TwoLayerUnits`, the hinge kink times for `jump_ts` or None) of a mode flow."""
    if loss == "hinge":
        theory = TwoLayerModes.from_flow(flow)
        kinks = np.asarray(theory.kink_times())
        return theory, theory.units, jnp.asarray(kinks[np.isfinite(kinks)])
    theory = TwoLayerModesCE.from_flow(flow)
    return theory, theory.units, None


def mode_solution(loss, u0=(0.1, 0.1, 0.2, 0.05), vt0=(0.1, 0.05, -0.1, 0.15), t1=1e4, num=60):
    """(theory, simulation) of the 4-mode problem under `loss` ("hinge" or "logistic")."""
    flow = mode_flow(u0, vt0, LOSSES[loss])
    theory, modes, jumps = _mode_theory(flow, loss)
    ts = jnp.logspace(-2, np.log10(t1), num)
    sol = solve_flow(flow, t1, ts=ts, observables=theory.observables, solver=SOLVER,
                     rtol=RTOL, atol=ATOL, jump_ts=jumps, max_steps=200_000)
    return theory, modes, sol


def _evaluate(theory, ts):
    return theory.evaluate(ts)  # the CE clock ODE defaults to Dopri8 at rtol 1e-12


@register("tachet-modes", "F1: independent modes, per-mode margins of a 4-mode ReLU net, theory vs simulation")
def fig_modes(out: Path, small: bool) -> list[Path]:
    """F1, independent modes: per-mode margins z_k(t) of the 4-mode ReLU net under hinge and CE,
    theory (`TwoLayerModes`, `TwoLayerModesCE`) against simulation."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, loss in zip(axes, ("hinge", "logistic")):
        theory, modes, sol = mode_solution(loss, num=25 if small else 60)
        dense = jnp.logspace(-2, 4, 300)
        z_th = np.asarray(_evaluate(theory, dense)["margins"])
        z_sim = np.asarray(sol.observables["margins"])
        first = [int(np.argmax(np.asarray(modes.mode_of_sample) == k)) for k in range(4)]
        for k, i in enumerate(first):
            lab = f"p={float(modes.p[k]):.2f}, s={float(modes.s[k]):g}"
            ax.plot(dense, z_th[:, i], "-", color=f"C{k}", label=lab)
            ax.plot(sol.ts, z_sim[:, i], "o", color=f"C{k}", ms=3, mfc="none")
        err = float(relative_error(sol.observables["margins"], _evaluate(theory, sol.ts)["margins"]))
        ax.set(xscale="log", xlabel="t", ylabel="mode margin z_k(t)",
               title=f"{'hinge' if loss == 'hinge' else 'cross-entropy'} (max rel. err {err:.1e})")
        ax.legend(frameon=False, fontsize=7)
    return save_figure(fig, out, "tachet-modes")


@register("tachet-error", "F2: sigmoidal 0-1 error: staircase of many equal-rate modes and the ensemble curve")
def fig_error(out: Path, small: bool) -> list[Path]:
    """K modes with s = 1 and p = 1/K (λ = 1/K), live units u0 = 0.1|N|, ṽ0 = 0.1 N: a quarter of
    the modes fail (F), a quarter recover (R) at their t_c. Ensemble over such inits (hinge):
    P(wrong) = 1/4 + arctan(e^{−2λt})/π (= 2·(5/8 + arctan(e^{−2λt})/2π) − 1); CE at small init:
    λt instead of 2λt."""
    plt = _pyplot()
    K = 16 if small else 48
    k1, k2, k3 = jr.split(jr.PRNGKey(3), 3)
    u0 = 0.1 * jnp.abs(jr.normal(k1, (K,)))
    vt0 = 0.1 * jr.normal(k2, (K,))
    labels = jnp.where(jr.bernoulli(k3, 0.5, (K,)), 1.0, -1.0)
    data = orthogonal_features((1.0,) * K, [1] * K, labels, K)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    ts = jnp.logspace(-1, 4, 120 if small else 300)
    for ax, loss in zip(axes, ("hinge", "logistic")):
        w, a = proper_init(u0, vt0, labels, K, key=jr.PRNGKey(4))
        flow = GradientFlow(TwoLayer(K, K, "relu", w=w, a=a), LOSSES[loss], data)
        _, modes, jumps = _mode_theory(flow, loss)
        sol = solve_flow(flow, ts[-1], ts=ts, observables=["classification_error"], solver=SOLVER,
                            rtol=RTOL, atol=ATOL, jump_ts=jumps)
        region = phase_region(modes.u0, modes.vt0)
        lam = modes.rates[modes.unit_mode]
        t_c = crossing_time(modes.u0, modes.vt0, modes.s[modes.unit_mode], lam, loss)
        wrong = (region < REGION_R)[None, :] | (ts[:, None] < t_c[None, :])
        stair = wrong.astype(ts.dtype) @ modes.p[modes.unit_mode]
        ax.step(ts, stair, where="post", color="k", lw=1, label="staircase Σ p_k 1[t < t_c,k] (theory)")
        ax.plot(ts, sol.observables["classification_error"], "o", ms=2, color="C1", label="simulation")
        ax.plot(ts, 2.0 * ensemble_error(ts / K, loss) - 1.0, "--", color="C0",
                label="ensemble 1/4 + arctan(e^{-2λt})/π" if loss == "hinge" else "ensemble (CE: λt)")
        ax.set(xscale="log", xlabel="t", ylabel="training 0-1 error",
               title=f"{'hinge' if loss == 'hinge' else 'cross-entropy'}, {K} modes, λ = 1/{K}")
        ax.legend(frameon=False, fontsize=7)
    return save_figure(fig, out, "tachet-error")


@register("tachet-phase", "F3: initial-parameter phase diagram (u0, ṽ0), coloured by the simulated final margin")
def fig_phase(out: Path, small: bool) -> list[Path]:
    """F3, failed training: the (u₀, ṽ₀) plane coloured by the simulated final margin at T = 100 (CE),
    with the hyperbolic flow lines, the separatrix ṽ₀ = −u₀ and the regions D/F/R/S."""
    plt = _pyplot()
    n = 16 if small else 64  # small: the grid of test_tachet's phase-map check (one compile)
    grid = jnp.linspace(-1.0, 1.0, n)
    U, V = jnp.meshgrid(grid + 0.0071, grid + 0.013, indexing="ij")
    T = 100.0
    z = np.asarray(phase_map_margins(U.ravel(), V.ravel(), T)).reshape(n, n)
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    mesh = ax.pcolormesh(np.asarray(U), np.asarray(V), z, shading="auto", cmap="viridis")
    fig.colorbar(mesh, ax=ax, label=f"final margin z(T = {T:g}) (CE)")
    r = np.linspace(-1, 1, 9)
    for c in r:  # hyperbolic flow lines u² − ṽ² = c
        uu = np.linspace(0.001, 1, 200)
        vv = np.sqrt(np.maximum(uu**2 - c, 0))
        ok = uu**2 >= c
        ax.plot(uu[ok], vv[ok], color="w", lw=0.4, alpha=0.6)
        ax.plot(uu[ok], -vv[ok], color="w", lw=0.4, alpha=0.6)
    ax.plot([0, 1], [0, -1], "r-", lw=1.5, label="separatrix ṽ0 = −u0")
    ax.axvline(0, color="r", lw=1.5)
    for text, xy in (("D", (-0.5, 0.0)), ("F", (0.3, -0.8)), ("R", (0.8, -0.4)), ("S", (0.5, 0.6))):
        ax.text(*xy, text, color="w", fontsize=14, weight="bold")
    ax.set(xlim=(-1, 1), ylim=(-1, 1), xlabel="u0 = w·e", ylabel="ṽ0 = y v0", title="R4 phase map (vmapped sweep)")
    ax.legend(frameon=False, fontsize=7, loc="lower left")
    return save_figure(fig, out, "tachet-phase")


@register("tachet-speed", "F4: time to learn against frequency and norm (log-log), slopes −1 (p) and ≈ −1 / −2 (s)")
def fig_speed(out: Path, small: bool) -> list[Path]:
    """F4, speed: time to reach margin 2 against frequency p and input norm s (log-log), two-layer
    (slope −1 in p, ≈ −1 in s) and linear (slope −2 in s), with simulated event times."""
    plt = _pyplot()
    z_star = 2.0
    u0 = 0.1
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    ps = np.geomspace(0.01, 1, 12)
    ss = np.geomspace(0.25, 4, 12)

    def t_balanced(p, s):  # R6: t* = [ln(z*/z0) + Ei(z*) − Ei(z0)]/(2ps), z0 = s u0²
        z0 = s * u0**2
        return (np.log(z_star / z0) + float(gf_expi(z_star)) - np.asarray(gf_expi(jnp.asarray(z0)))) / (2 * p * s)

    def t_linear(p, s):  # R3d: z + eᶻ = p s² t + z0 + e^{z0}, z0 = s u0
        z0 = s * u0
        return (z_star + np.exp(z_star) - z0 - np.exp(z0)) / (p * s**2)

    axes[0].loglog(ps, t_balanced(ps, 1.0), "-", label="two-layer (R6), slope −1")
    axes[0].loglog(ps, t_linear(ps, 1.0), "--", label="linear (R3d), slope −1")
    axes[0].set(xlabel="frequency p", ylabel=f"time to margin {z_star:g}")
    axes[1].loglog(ss, t_balanced(1.0, ss), "-", label="two-layer: ≈ slope −1 (log z0 correction)")
    axes[1].loglog(ss, t_linear(1.0, ss), "--", label="linear: slope −2")
    axes[1].set(xlabel="input norm s", ylabel=f"time to margin {z_star:g}")
    # Simulation: the exact event time at which the probed mode reaches z* (a second, already
    # learned mode with z0 = 4 > z* fills the rest of the data, so the minimum margin is the probe's).
    for ax, pairs in ((axes[0], [(p, 1.0) for p in ps[::3]]), (axes[1], [(1.0, s) for s in ss[::3]])):
        xs, t_sim = [], []
        for p, s in pairs:
            n_probe = max(1, round(p * 100))
            counts = (n_probe, 100 - n_probe) if n_probe < 100 else (1,)
            norms, labels = ((s, 1.0), (1.0, 1.0)) if len(counts) == 2 else ((s,), (1.0,))
            u, v = ((u0, 2.0), (u0, 2.0)) if len(counts) == 2 else ((u0,), (u0,))
            flow = mode_flow(u, v, logistic, norms=norms, counts=counts, labels=labels)
            p_eff = counts[0] / sum(counts)
            sol = solve_flow(flow, 10 * t_balanced(p_eff, s), event=margins_at_least(z_star),
                                rtol=1e-10, atol=1e-12)
            xs.append(p_eff if ax is axes[0] else s)
            t_sim.append(float(sol.event_time))
        ax.loglog(xs, t_sim, "o", color="k", mfc="none", label="simulation (event time)")
        ax.legend(frameon=False, fontsize=7)
    return save_figure(fig, out, "tachet-speed")


def gf_expi(x):
    return expi(jnp.asarray(x, dtype=float))


@register("tachet-ce-vs-hinge", "F5: CE vs hinge on the same init: margin, loss, and the R7 clock delay")
def fig_ce_vs_hinge(out: Path, small: bool) -> list[Path]:
    """F5, CE vs hinge on the same init: margin and loss; hinge stops at margin 1 at t_h, CE grows
    like ln t with loss ~ 1/(t ln t)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    dense = jnp.logspace(-2, 4, 300)
    for loss, style in (("hinge", "-"), ("logistic", "--")):
        theory, modes, sol = mode_solution(loss, num=25 if small else 60)
        pred = _evaluate(theory, dense)
        name = "hinge" if loss == "hinge" else "CE"
        axes[0].plot(dense, pred["margins"][:, 0], style, color="C0", label=f"{name} theory")
        axes[0].plot(sol.ts, sol.observables["margins"][:, 0], "o", ms=3, mfc="none", color="C0")
        axes[1].plot(dense, pred["loss"], style, color="C1", label=f"{name} theory")
        axes[1].plot(sol.ts, sol.observables["loss"], "o", ms=3, mfc="none", color="C1")
    th_h = TwoLayerModes.from_flow(mode_flow((0.1,) * 4, (0.1, 0.05, -0.1, 0.15), hinge))
    axes[0].axvline(float(th_h.stop_times()[0]), color="k", lw=0.6, ls=":", label="t_h (hinge stop)")
    axes[0].set(xscale="log", xlabel="t", ylabel="margin of mode 0", title="hinge stops at 1; CE grows ~ ln t")
    axes[1].set(xscale="log", yscale="log", xlabel="t", ylabel="loss", title="CE loss ~ 1/(t ln t)")
    for ax in axes:
        ax.legend(frameon=False, fontsize=7)
    return save_figure(fig, out, "tachet-ce-vs-hinge")


@register("tachet-starvation", "F6: gradient starvation, norm version (R8a) and frequency version (R8c)")
def fig_starvation(out: Path, small: bool) -> list[Path]:
    """F6, gradient starvation: by norm (s = (2, 0.5), `LinearCEMargins`, against the weak feature
    trained alone) and by frequency (`FrequencyStarvation`, q ∈ {0.1, 0.5, 0.9})."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    ts = jnp.logspace(-2, 6, 30 if small else 60)
    data = cooccurring_features((2.0, 0.5), (1, 0), 2)
    flow = GradientFlow(ReLUChain((), jnp.zeros((1, 2))), logistic, data)
    theory = LinearCEMargins.from_flow(flow)
    sol = solve_flow(flow, ts[-1], ts=ts, observables={"weights": linear_weights}, solver=SOLVER,
                     rtol=RTOL, atol=ATOL)
    dense = jnp.logspace(-2, 6, 300)
    w = theory.evaluate(dense)["weights"]
    alone = LinearCEMargins.from_flow(GradientFlow(ReLUChain((), jnp.zeros((1, 2))), logistic,
                                                      orthogonal_features((0.5,), (1,), (1.0,), 2)))
    ax = axes[0]
    ax.plot(dense, 2.0 * w[:, 0], "-", color="C0", label="f(s₁e₁) (strong feature)")
    ax.plot(dense, 0.5 * w[:, 1], "-", color="C1", label="f(s₂e₂) (weak feature, co-occurring)")
    ax.plot(dense, alone.mode_margins(dense)[:, 0], ":", color="C1", label="f(s₂e₂) if trained alone")
    ax.plot(sol.ts, 2.0 * sol.observables["weights"][:, 0], "o", ms=3, mfc="none", color="C0")
    ax.plot(sol.ts, 0.5 * sol.observables["weights"][:, 1], "o", ms=3, mfc="none", color="C1")
    ax.set(xscale="log", xlabel="t", ylabel="response", title="R8a: s = (2, 0.5), linear, CE")
    ax.legend(frameon=False, fontsize=7)
    ax = axes[1]
    for j, q in enumerate((0.1, 0.5, 0.9)):
        n_both = round(q * 10)
        data = cooccurring_features((1.0, 1.0), (n_both, 10 - n_both), 2)
        flow = GradientFlow(ReLUChain((), jnp.zeros((1, 2))), logistic, data)
        th = FrequencyStarvation.from_flow(flow)
        sol = solve_flow(flow, ts[-1], ts=ts, observables={"weights": linear_weights}, solver=SOLVER,
                         rtol=RTOL, atol=ATOL)
        pred = th.evaluate(dense, solver=SOLVER, rtol=1e-12, atol=1e-14)["weights"]
        ax.plot(dense, pred[:, 0], "-", color=f"C{j}", label=f"q = {q}: w₁")
        ax.plot(dense, pred[:, 1], "--", color=f"C{j}", label=f"q = {q}: w₂ (rare feature)")
        ax.plot(sol.ts, sol.observables["weights"][:, 1], "o", ms=3, mfc="none", color=f"C{j}")
    ax.set(xscale="log", xlabel="t", ylabel="weight", title="R8c: feature 2 present in a fraction q")
    ax.legend(frameon=False, fontsize=6, ncol=2)
    return save_figure(fig, out, "tachet-starvation")


@register("tachet-depth", "F7: margin vs time for depth L = 1, 2, 3 at matched z0 (theory for L = 1, 2)")
def fig_depth(out: Path, small: bool) -> list[Path]:
    """F7, depth: margin z(t) of balanced ReLU chains of depth L = 1, 2, 3 at matched z₀ (CE),
    with the L = 1 (Wright ω) and L = 2 (Ei) closed forms."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    z0 = 1e-2
    ts = jnp.logspace(-2, 5, 30 if small else 60)
    dense = jnp.logspace(-2, 5, 300)
    data = orthogonal_features((1.0,), (1,), (1.0,), 1)
    for L in (1, 2, 3):
        a = z0 ** (1.0 / L)
        weights, v = proper_chain_init(jnp.full((L, 1), a), jnp.array([1.0]), 1)
        flow = GradientFlow(ReLUChain(weights, v), logistic, data)
        sol = solve_flow(flow, ts[-1], ts=ts, observables=["margins"], solver=SOLVER, rtol=RTOL, atol=ATOL)
        ax.plot(sol.ts, sol.observables["margins"][:, 0], "o", ms=3, mfc="none", color=f"C{L - 1}",
                label=f"L = {L} simulation")
        if L == 1:
            z = LinearCEMargins.from_flow(flow).mode_margins(dense)[:, 0]
            ax.plot(dense, z, "-", color="C0", label="L = 1 theory (R3d)")
        if L == 2:
            th = BalancedCEMargins(jnp.array([z0]), jnp.array([1.0]), jnp.array([1.0]), jnp.array([0]), 1.0)
            ax.plot(dense, th.mode_margins(dense)[:, 0], "-", color="C1", label="L = 2 theory (R3a)")
    ax.set(xscale="log", xlabel="t", ylabel="margin z(t)", title="depth: slower start at small z0, faster late (CE)")
    ax.legend(frameon=False, fontsize=7)
    return save_figure(fig, out, "tachet-depth")


@register("tachet-digits", "Beyond the paper: gradient starvation on sklearn digits with an easy feature added")
def fig_digits(out: Path, small: bool) -> list[Path]:
    """Digits 3 vs 8 (bundled with scikit-learn), linear logistic classifier on the 64 pixels plus
    one extra "easy" input that equals the label on a fraction of the samples. The pixel part of
    the margin stalls once the easy feature has made the margins large (starvation)."""
    from sklearn.datasets import load_digits

    plt = _pyplot()
    digits = load_digits()
    keep = (digits.target == 3) | (digits.target == 8)
    x = digits.data[keep] / 16.0
    x = x - x.mean(axis=0)
    x = x / np.sqrt((x**2).sum(axis=1).mean())
    y = np.where(digits.target[keep] == 3, 1.0, -1.0)
    if small:
        x, y = x[:80], y[:80]
    n = len(y)
    rng = np.random.default_rng(0)
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    ts = jnp.logspace(-1, 4, 25 if small else 50)
    for frac, style in ((0.0, "-"), (0.5, "--"), (1.0, ":")):
        easy = np.where(rng.random(n) < frac, 3.0 * y, 0.0)
        X = jnp.asarray(np.concatenate([x, easy[:, None]], axis=1))
        flow = GradientFlow(ReLUChain((), jnp.zeros((1, X.shape[1]))), logistic, Dataset(X, jnp.asarray(y)))

        def pixel_margin(t, params, flow, X=X):
            w = flow.model(params).v[0, :-1]
            return jnp.mean(jnp.asarray(y) * (X[:, :-1] @ w))

        sol = solve_flow(flow, ts[-1], ts=ts, observables={"pixel": pixel_margin}, solver="explicit",
                         rtol=1e-8, atol=1e-10)
        ax.plot(sol.ts, sol.observables["pixel"], style, label=f"easy feature on {int(frac * 100)}% of samples")
    ax.set(xscale="log", xlabel="t", ylabel="mean margin from the pixels",
           title="digits 3 vs 8: starvation of the pixel features")
    ax.legend(frameon=False, fontsize=7)
    return save_figure(fig, out, "tachet-digits")
