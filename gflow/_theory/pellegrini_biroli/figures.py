"""Pellegrini & Biroli 2020: figures for the notebook and `gflow reproduce pb-<name>`.

??? cite "Reference"
    F. Pellegrini and G. Biroli, "An analytic theory of shallow networks dynamics for hinge loss
    classification", NeurIPS 2020 (arXiv:2006.11209), Fig. 1 and the finite-M, finite-P studies.

Simulations of the full network use gradient descent on the mean-field clock (Euler steps Δτ of
dθ/dτ = −(M/α)∇L, i.e. τ = α·lr·steps/M), as the paper did: on generic (non-symmetric) finite
data the linear-hinge flow enters sliding modes where a satisfied sample is pushed back below the
margin, which adaptive ODE solvers cannot cross; GD simply chatters across them.
"""

from functools import partial
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

from ..._discrete import solve_discrete
from ..._models.two_layer import TwoLayer
from ..._plotting import _pyplot, save_figure
from ..._reproduce import register
from .mean_field import MeanFieldHinge
from .setup import mean_field_hinge_flow, separable_gaussian
from .width import finite_width_sweep


@partial(jax.jit, static_argnames=("num_saves", "save_every", "margin"))
def gradient_descent_path(flow, dtau, num_saves: int, save_every: int, margin: float, teacher, x_test):
    """GD on the flow's clock: θ ← θ + Δτ·vector_field(θ), `num_saves` × `save_every` steps
    (`gflow.solve_discrete` with `optax.sgd(Δτ)`).

    Returns ts (S+1,), a (S+1, M), w_par (S+1, M), train_error, test_error, unsatisfied (S+1,),
    and the time each training sample is first satisfied (P,) (inf if never, t > 0 only), read
    on the union of the S+1 save times and 2S log-spaced steps from step 1 (a few per cent
    apart on the log axis of Fig. 1 (d); the hand-written loop read it at every step).
    """
    x, y = flow.data.x, flow.data.y[:, 0]
    y_test = jnp.sign(x_test @ teacher)
    steps = num_saves * save_every
    t1 = steps * dtau
    uniform = np.arange(num_saves + 1) * save_every  # step indices of the saves
    logs = np.unique(np.round(np.geomspace(1, steps, 2 * num_saves)).astype(np.int64))
    grid_steps = np.concatenate([uniform, logs])
    order = np.argsort(grid_steps, kind="stable")
    at_saves = np.argsort(order)[: num_saves + 1]  # positions of the uniform saves in the sorted grid

    def record(t, params, flow):
        model = flow.model(params)
        m = y * jax.vmap(model)(x)[:, 0]
        mt = y_test * jax.vmap(model)(x_test)[:, 0]
        return {"a": model.a[0], "w_par": model.w @ teacher,
                "train_error": jnp.mean((m <= 0).astype(m.dtype)), "test_error": jnp.mean((mt <= 0).astype(m.dtype)),
                "unsatisfied": jnp.mean((m < margin).astype(m.dtype)), "satisfied": m >= margin}

    ts = jnp.asarray(grid_steps[order], dtype=y.dtype) * dtau
    sol = solve_discrete(flow, optax.sgd(dtau), t1, learning_rate=dtau, ts=ts, observables={"record": record})
    saved = dict(sol.observables["record"])
    satisfied = saved.pop("satisfied") & (sol.ts > 0)[:, None]
    obs = jax.tree_util.tree_map(lambda v: v[at_saves], saved)
    hit = jnp.any(satisfied, axis=0)
    first = jnp.where(hit, sol.ts[jnp.argmax(satisfied, axis=0)], jnp.inf)
    return sol.ts[at_saves], obs, first


def fig1_setup(small: bool):
    """Fig. 1 problem: M = 400, P = 1e5, d = 100, α = 1, h = 1 (small: M = 64, P = 2000, d = 20)."""
    M, P, d = (64, 2000, 20) if small else (400, 100_000, 100)
    kd, km, kt = jr.split(jr.PRNGKey(0), 3)
    data = separable_gaussian(P, d, key=kd)
    model = TwoLayer(d, M, "relu", scaling="mean_field", alpha=1.0, key=km)
    return mean_field_hinge_flow(model, data, 1.0), jr.normal(kt, (2000 if small else 100_000, d))


_CACHE: dict = {}


def _closure_grid(tau_max: float):
    """0 ∪ 200 log-spaced τ in [1e-2, tau_max]: one shape for every closure curve (one compile)."""
    return jnp.concatenate([jnp.zeros(1), jnp.geomspace(1e-2, tau_max, 200)])


def _closure(theory: MeanFieldHinge) -> MeanFieldHinge:
    """The same closure without its nodes (γ, F, u, loss only; the node-less shape of the others)."""
    empty = jnp.zeros(0, theory.a0.dtype)
    return eqx.tree_at(lambda t: (t.a0, t.w_par0), theory, (empty, empty))


def fig1_run(small: bool):
    if ("fig1", small) not in _CACHE:
        flow, x_test = fig1_setup(small)
        teacher = jnp.eye(flow.data.d)[0]
        dtau, saves, every = (0.02, 100, 10) if small else (0.01, 200, 50)
        ts, obs, first = gradient_descent_path(flow, dtau, saves, every, 1.0, teacher, x_test)
        theory = MeanFieldHinge.from_flow(flow, teacher)
        _CACHE[("fig1", small)] = (flow, theory, ts, obs, first)
    return _CACHE[("fig1", small)]


@register("pb-fig1", "Fig. 1 (a)–(d): a_i, w∥_i, γ(τ) and per-sample fitting time vs |x∥| (GD vs mean-field theory)")
def fig1(out: Path, small: bool) -> list[Path]:
    """Fig. 1 (a)–(d): ten a_i(τ), w∥_i(τ) (GD vs `MeanFieldHinge`), γ(τ) with its early and late
    asymptotes, and each sample's first-satisfied time vs |x∥| with τ_sat(p) ± the finite-M spread.
    Writes `pb-fig1` into `out`; `small`: M = 64, P = 2000, d = 20. Returns the written paths."""
    plt = _pyplot()
    flow, theory, ts, obs, first = fig1_run(small)
    th = theory.evaluate(ts)
    fig, ax = plt.subplots(2, 2, figsize=(10, 7.5))
    for i in range(10):
        for k, name in enumerate(("a", "w_par")):
            ax[0, k].plot(ts, obs[name][:, i], "o", ms=2.5, mfc="none", color=f"C{i}")
            ax[0, k].plot(ts, th[name][:, i], "-", color=f"C{i}")
    ax[0, 0].set(xlabel="τ = α t / M", ylabel="a_i(τ)", title="(a) second layer (circles: GD, lines: theory)")
    ax[0, 1].set(xlabel="τ", ylabel="w∥_i(τ)", title="(b) teacher projection of w_i")
    tt = _closure_grid(1e4)
    g = _closure(theory).evaluate(tt)["gamma"]
    late = theory.late_time()
    ax[1, 0].plot(tt[1:], g[1:], "k-", label="γ(τ) closure")
    ax[1, 0].plot(tt[1:], theory.gain * np.sqrt(2 / np.pi) * tt[1:], "--", label="λ√(2/π) τ")
    ax[1, 0].plot(tt[1:], 0.25 * jnp.log(tt[1:]) + late["gamma_offset"], "--", label="¼ ln τ + const")
    ax[1, 0].set(xscale="log", ylim=(0, float(g[-1]) * 1.1), xlabel="τ", ylabel="γ", title="(c) γ(τ)")
    ax[1, 0].legend(frameon=False, fontsize=8)
    p = jnp.abs(flow.data.x[:, 0])
    ok = jnp.isfinite(first)
    ax[1, 1].plot(first[ok], p[ok], ".", ms=1, alpha=0.3, color="C0", label="GD: first satisfied")
    gam = jnp.linspace(1e-3, float(th["gamma"][-1]), 200)
    pg = theory.margin / theory.F(gam)
    tau_g = theory.tau_sat(pg)
    # finite-M spread of y f at fixed p (theory file §4 (ii), odd part): std η / F.
    M, d = flow.model0.width, flow.data.d
    spread = (theory.alpha * theory.gain * jnp.sqrt((d - 1) / M * (jnp.cosh(gam) ** 2 + jnp.sinh(gam) ** 2))
              / theory.F(gam))
    ax[1, 1].plot(tau_g, pg, "r-", label="τ_sat(p) theory")
    ax[1, 1].plot(tau_g, pg + spread, "r--", lw=0.8, label="±1 std (finite M)")
    ax[1, 1].plot(tau_g, jnp.maximum(pg - spread, 1e-3), "r--", lw=0.8)
    ax[1, 1].set(xscale="log", yscale="log", xlabel="τ first satisfied", ylabel="|ŵ*·x|",
                 xlim=(float(ts[1]), float(ts[-1])), ylim=(1e-2, 5), title="(d) fitting time")
    ax[1, 1].legend(frameon=False, fontsize=8)
    return save_figure(fig, out, "pb-fig1")


@register("pb-hyperbolas", "Node paths in the (a, w∥) plane: hyperbolas a² − w∥² = const converging to a = w∥")
def hyperbolas(out: Path, small: bool) -> list[Path]:
    """Node paths in the (a, w∥) plane: GD vs the hyperbolas a² − w∥² = const that converge to
    a = w∥ (the Fig. 1 run). Writes `pb-hyperbolas` into `out`; returns the written paths."""
    plt = _pyplot()
    flow, theory, ts, obs, _ = fig1_run(small)
    th = theory.evaluate(ts)
    fig, ax = plt.subplots(figsize=(5, 5))
    for i in range(12):
        ax.plot(th["a"][:, i], th["w_par"][:, i], "-", color=f"C{i % 10}")
        ax.plot(obs["a"][::5, i], obs["w_par"][::5, i], "o", ms=3, mfc="none", color=f"C{i % 10}")
    lim = float(jnp.max(jnp.abs(th["a"][:, :12]))) * 1.05
    ax.plot([-lim, lim], [-lim, lim], "k:", lw=0.8, label="a = w∥")
    ax.set(xlabel="a_i", ylabel="w∥_i", title="(a, w∥) paths: GD (circles) vs hyperbolas (lines)")
    ax.legend(frameon=False)
    return save_figure(fig, out, "pb-hyperbolas")


@register("pb-rich-lazy", "γ(τ) and u(τ) for α ∈ {0.1, 1, 10}: the rich/lazy knob A = αλS0/h")
def rich_lazy(out: Path, small: bool) -> list[Path]:
    """γ(τ) and u(τ) of the P = ∞ closure for α ∈ {0.1, 1, 10} (the rich/lazy knob A = αλS0/h).
    Writes `pb-rich-lazy` into `out`; returns the written paths."""
    plt = _pyplot()
    d = 20 if small else 100
    alphas = jnp.array([0.1, 1.0, 10.0])
    ts = _closure_grid(1e5)
    runs = [MeanFieldHinge(d=d, alpha=a).evaluate(ts) for a in alphas]  # one compile (the shared grid shape)
    obs = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *runs)
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    for k, a in enumerate(alphas):
        A = float(MeanFieldHinge(d=d, alpha=a).knob)
        ax[0].plot(ts[1:], obs["gamma"][k, 1:], label=f"α = {float(a):g} (A = {A:.3g})")
        ax[1].plot(ts[1:], obs["unsatisfied_fraction"][k, 1:], label=f"α = {float(a):g}")
    ax[0].set(xscale="log", xlabel="τ", ylabel="γ(τ)", title="rich (large γ) vs lazy (small γ)")
    ax[1].set(xscale="log", yscale="log", xlabel="τ", ylabel="unsatisfied fraction u(τ)")
    for a_ in ax:
        a_.legend(frameon=False, fontsize=8)
    return save_figure(fig, out, "pb-rich-lazy")


@register("pb-slowing-down", "Slowing down: u(τ) and the hinge loss ∝ τ^{-1/2} on log-log axes")
def slowing_down(out: Path, small: bool) -> list[Path]:
    """The slowing down: u(τ) and the hinge loss ∝ τ^{-1/2} (P = ∞ closure, d = 100) with their
    late-time asymptotes. Writes `pb-slowing-down` into `out`; returns the written paths."""
    plt = _pyplot()
    theory = MeanFieldHinge(d=100)
    ts = _closure_grid(1e7)
    obs = theory.evaluate(ts)
    lt = theory.late_time()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.plot(ts[1:], obs["unsatisfied_fraction"][1:], label="u(τ)")
    ax.plot(ts[1:], obs["loss"][1:], label="hinge loss L(τ)")
    ax.plot(ts[1:], lt["u_sqrt_tau"] / jnp.sqrt(ts[1:]), "k--", lw=0.8, label="τ^{-1/2} asymptotes")
    ax.plot(ts[1:], lt["loss_sqrt_tau"] / jnp.sqrt(ts[1:]), "k--", lw=0.8)
    ax.set(xscale="log", yscale="log", ylim=(1e-5, 2), xlabel="τ", title="P = ∞ closure (d = 100, α = h = 1)")
    ax.legend(frameon=False)
    return save_figure(fig, out, "pb-slowing-down")


@register("pb-width", "Deviation from mean-field vs width M: slope −1/2 over seeds (frozen-dataset control flat)")
def width(out: Path, small: bool) -> list[Path]:
    """Deviation of random width-M networks from the mean-field theory vs M (slope −½, over seeds;
    `finite_width_sweep`) with the frozen-dataset control. Writes `pb-width`; returns the paths."""
    plt = _pyplot()
    widths, seeds, P = ((16, 64), 4, 80) if small else ((32, 64, 128, 256, 512), 8, 400)
    data = separable_gaussian(P, 8, key=jr.PRNGKey(0), stratified=True, symmetrized=True)
    r = finite_width_sweep(widths, seeds, data, key=jr.PRNGKey(2), alpha=2.0, rtol=1e-5, atol=1e-7)
    Ms = np.asarray(r.widths)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    mean, sem = np.mean(r.errors, 1), np.std(r.errors, 1, ddof=1) / np.sqrt(seeds)
    label = f"network vs theory (slope {float(r.slope):.2f} ± {float(r.slope_stderr):.2f})"
    ax.errorbar(Ms, mean, sem, fmt="o", label=label)
    ax.plot(Ms, mean[0] * (Ms / Ms[0]) ** -0.5, "k--", lw=0.8, label="M^{-1/2}")
    ax.plot(Ms, np.mean(r.frozen_errors, 1), "s", label="frozen-dataset control")
    ax.set(xscale="log", yscale="log", xlabel="width M", ylabel="rel. error of (a, w∥) at τ = 10")
    ax.legend(frameon=False, fontsize=8)
    return save_figure(fig, out, "pb-width")


@register("pb-overfitting", "Train vs test error for P ∈ {1e2, 1e3, 1e4} (GD, finite P): test error stalls")
def overfitting(out: Path, small: bool) -> list[Path]:
    """Train vs test 0-1 error under GD for several training-set sizes P (finite P: the test error
    stalls). Writes `pb-overfitting` into `out`; returns the written paths."""
    plt = _pyplot()
    Ps, M, d = ((100, 1000), 32, 20) if small else ((100, 1000, 10_000), 400, 100)
    dtau, saves, every = (0.05, 40, 10) if small else (0.05, 200, 100)
    fig, ax = plt.subplots(figsize=(6, 4))
    x_test = jr.normal(jr.PRNGKey(9), (2000 if small else 20_000, d))
    for k, P in enumerate(Ps):
        data = separable_gaussian(P, d, key=jr.PRNGKey(10 + k))
        model = TwoLayer(d, M, "relu", scaling="mean_field", alpha=1.0, key=jr.PRNGKey(20 + k))
        flow = mean_field_hinge_flow(model, data, 1.0)
        ts, obs, _ = gradient_descent_path(flow, dtau, saves, every, 1.0, jnp.eye(d)[0], x_test)
        ax.plot(ts[1:], obs["train_error"][1:], "--", color=f"C{k}", label=f"train, P = {P}")
        ax.plot(ts[1:], obs["test_error"][1:], "-", color=f"C{k}", label=f"test, P = {P}")
    ax.set(xscale="log", yscale="symlog", xlabel="τ", ylabel="0-1 error", title=f"M = {M}, d = {d}, α = h = 1")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.legend(frameon=False, fontsize=8)
    return save_figure(fig, out, "pb-overfitting")


ALL = (fig1, hyperbolas, rich_lazy, slowing_down, width, overfitting)


def main(out: str | Path = "reproduce_out", small: bool = False) -> list[Path]:
    """Draw every Pellegrini–Biroli figure into `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return [p for make in ALL for p in make(out, small)]
