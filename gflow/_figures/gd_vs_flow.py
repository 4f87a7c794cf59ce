"""Gradient descent against the gradient flow, the modified flow and the edge of stability:
`gflow reproduce gd-vs-flow` and notebooks/gd_vs_flow.ipynb.

A tanh network (d = 3, width 6, n = 10, squared error, NTK scaling; λ_max(H(θ0)) ≈ 0.70, rising
to ≈ 0.87 along the flow) trained by GD at three step sizes on the flow's clock t = k·η:
η = 0.5 (ηλ ≈ 0.4: GD follows the flow, the modified flow closer still), η = 1.5 (ηλ ≈ 1.2: the
modified flow's O(η²) is no longer small) and η = 3.0 (2/η = 0.67 below λ_max(θ0): past the edge
of stability from the start; GD does not diverge but hovers at λ_max ≈ 2/η, the edge-of-stability
regime of Cohen et al. 2021, which no gradient flow of L describes: the central flow does).

??? cite "References"
    Barrett & Dherin, "Implicit Gradient Regularization", ICLR 2021 (arXiv:2009.11162);
    Cohen, Kaur, Li, Kolter & Talwalkar, "Gradient Descent on Neural Networks Typically Occurs
    at the Edge of Stability", ICLR 2021 (arXiv:2103.00065).
"""

from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

from .._data.base import Dataset
from .._discrete import solve_discrete
from .._flow.modified import modified_flow, unmodified_loss
from .._flow.problem import GradientFlow
from .._flow.sharpness import sharpness
from .._flow.solve import solve_flow
from .._losses import squared_error
from .._models import TwoLayer
from .._plotting import _pyplot
from .._reproduce import register

#: The three step sizes of the figure (GD on the flow's clock).
LEARNING_RATES = (0.5, 1.5, 3.0)


def gd_vs_flow_problem(key=jr.PRNGKey(0)) -> GradientFlow:
    """The figure's flow: TwoLayer(3, 6, tanh, NTK scaling), n = 10 Gaussian inputs, targets
    sin(x·(1, −0.5, 0.3)), squared error (24 parameters)."""
    kx, _, km = jr.split(key, 3)
    x = jr.normal(kx, (10, 3))
    y = jnp.sin(x @ jnp.array([1.0, -0.5, 0.3]))[:, None]
    return GradientFlow(TwoLayer(3, 6, "tanh", scaling="ntk", key=km), squared_error, Dataset(x, y))


def _distance(a, b):
    """‖θ_a(t) − θ_b(t)‖₂ over the time axis (axis 0 of every leaf)."""
    sq = sum(jnp.sum((x - y) ** 2, axis=tuple(range(1, x.ndim)))
             for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))
    return np.asarray(jnp.sqrt(sq))


def gd_vs_flow_runs(flow: GradientFlow, learning_rates=LEARNING_RATES, t1: float = 30.0, num_times: int = 61) -> dict:
    """GD at each η, the flow and each η's modified flow, saved on `num_times` points of [0, t1]
    (flow clock) rounded to each η's steps; returns numpy arrays (m step sizes, T times):

    - "learning_rates" (m,); "ts" (m, T): GD's step times, where every curve of η is saved;
    - "gd_loss", "gd_sharpness" (m, T); "flow_loss", "flow_sharpness", "modified_loss" (m, T):
      L and λ_max(∇²L) along the flow, and L along η's modified flow, at GD's times;
    - "gap_flow", "gap_modified" (m, T): ‖θ_GD − θ_flow‖ and ‖θ_GD − θ_modified‖.

    Two solve compiles: GD vmapped over η, and one vmapped `solve_flow` over the flow (as a
    modified flow with coefficient 0, m copies on GD's m grids) and the m modified flows; the
    sharpness is computed on the saved parameters afterwards.
    """
    etas = jnp.asarray(learning_rates, dtype=flow.time_scale.dtype)
    grid = jnp.linspace(0.0, t1, num_times, dtype=etas.dtype)

    def descend(eta):
        sol = solve_discrete(flow, optax.sgd(eta), t1, learning_rate=eta, ts=grid, save_params=True)
        return sol.ts, sol.observables

    gd_ts, gd = jax.jit(jax.vmap(descend))(etas)
    m = len(learning_rates)
    plain = eqx.tree_at(lambda f: f.data.coefficient, modified_flow(flow, 1.0), jnp.zeros((), etas.dtype))
    flows = [plain] * m + [modified_flow(flow, eta) for eta in learning_rates]
    stacked = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *flows)

    def solve(f, ts):
        return solve_flow(f, t1, ts=ts, observables={"loss": unmodified_loss}, save_params=True, rtol=1e-9,
                          atol=1e-11, solver="explicit").observables  # non-stiff: one solver to compile

    ref = jax.jit(jax.vmap(solve))(stacked, jnp.concatenate([gd_ts, gd_ts]))
    # λ_max(∇²L) on the saved parameters, after the solves (one small compile for GD and flow)
    on_saves = jax.jit(jax.vmap(jax.vmap(lambda p: sharpness(0.0, p, flow))))
    member = lambda tree, i: jax.tree_util.tree_map(lambda x: x[i], tree)  # noqa: E731
    return {
        "ts": np.asarray(gd_ts),
        "learning_rates": np.asarray(etas),
        "gd_loss": np.asarray(gd["loss"]),
        "gd_sharpness": np.asarray(on_saves(gd["params"])),
        "flow_loss": np.asarray(ref["loss"][:m]),
        "flow_sharpness": np.asarray(on_saves(member(ref["params"], slice(0, m)))),
        "modified_loss": np.asarray(ref["loss"][m:]),
        "gap_flow": np.stack([_distance(member(gd["params"], i), member(ref["params"], i)) for i in range(m)]),
        "gap_modified": np.stack([_distance(member(gd["params"], i), member(ref["params"], m + i)) for i in range(m)]),
    }


def plot_gd_vs_flow(runs: dict, path: str | Path | None = None):
    """Three panels from `gd_vs_flow_runs`: the loss of GD (markers) at each η, of the flow
    (black) and of each modified flow (dashed); the distance of GD to the flow (solid) and to
    its modified flow (dashed); the sharpness λ_max along GD and the flow with the 2/η lines.
    Returns the figure; writes it to `path` if given."""
    plt = _pyplot()
    ts, etas = runs["ts"], runs["learning_rates"]
    fine = int(np.argmin(etas))  # the flow's curves on the finest grid
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.9))
    ax = axes[0]
    ax.plot(ts[fine], runs["flow_loss"][fine], "k-", lw=1.5, label="gradient flow")
    for i, eta in enumerate(etas):
        ax.plot(ts[i], runs["gd_loss"][i], "o", ms=3, color=f"C{i}", label=f"GD η = {eta:g}")
        ax.plot(ts[i], runs["modified_loss"][i], "--", color=f"C{i}", lw=1, label=f"modified flow η = {eta:g}")
    ax.set(yscale="log", xlabel="t = k·η", ylabel="loss L", title="loss (dashed: modified flows)")
    ax.legend(frameon=False, fontsize=7)
    ax = axes[1]
    for i, eta in enumerate(etas):
        later = ts[i] > 0
        ax.plot(ts[i][later], runs["gap_flow"][i][later], "-", color=f"C{i}", label=f"η = {eta:g}: GD − flow")
        ax.plot(ts[i][later], runs["gap_modified"][i][later], "--", color=f"C{i}", label=f"η = {eta:g}: GD − modified")
    ax.set(yscale="log", xlabel="t = k·η", ylabel="‖θ_GD(t) − θ(t)‖",
           title="distance: O(η) to the flow, O(η²) to the modified")
    ax.legend(frameon=False, fontsize=7)
    ax = axes[2]
    ax.plot(ts[fine], runs["flow_sharpness"][fine], "k-", lw=1.5, label="gradient flow")
    for i, eta in enumerate(etas):
        ax.plot(ts[i], runs["gd_sharpness"][i], "o-", ms=2.5, lw=0.8, color=f"C{i}", label=f"GD η = {eta:g}")
        ax.axhline(2 / eta, color=f"C{i}", ls=":", lw=1)
    top = max(float(np.max(runs["flow_sharpness"])), float(np.max(runs["gd_sharpness"])))
    ax.set(xlabel="t = k·η", ylabel="sharpness λ_max(∇²L)", ylim=(0, 1.6 * top),
           title="sharpness; dotted: 2/η (edge of stability)")
    ax.legend(frameon=False, fontsize=7)
    for ax in axes:
        ax.title.set_fontsize(9)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


@register("gd-vs-flow", "Gradient descent at three step sizes vs the gradient flow, the modified flow and "
                        "the edge of stability (sharpness against 2/η); the central flow past the edge")
def gd_vs_flow(out: Path, small: bool) -> list[Path]:
    """`gd-vs-flow.png`: `plot_gd_vs_flow` of `gd_vs_flow_runs` (t1 = 15 in small mode, 30 full);
    `gd-vs-flow-central.png`: `plot_central_flow` (GD past the edge of stability against the
    central flow and gradient flow; 250 steps in small mode, 1000 full)."""
    from .._theory.central_flow.figures import plot_central_flow

    runs = gd_vs_flow_runs(gd_vs_flow_problem(), t1=15.0 if small else 30.0, num_times=31 if small else 61)
    path = Path(out) / "gd-vs-flow.png"
    fig = plot_gd_vs_flow(runs, path)
    _pyplot().close(fig)
    central = Path(out) / "gd-vs-flow-central.png"
    fig = plot_central_flow(small=small)
    fig.savefig(central, dpi=120)
    _pyplot().close(fig)
    return [path, central]
