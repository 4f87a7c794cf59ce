"""Saxe et al. 2013: the mode-strength figure for the demo and `gflow reproduce saxe-modes`.

??? cite "Reference"
    Saxe, McClelland & Ganguli, "Exact solutions to the nonlinear dynamics of learning in deep
    linear neural networks", ICLR 2014 (arXiv:1312.6120), Fig. 3.
"""

from pathlib import Path

import jax.numpy as jnp
import numpy as np

from ..._flow.solve import FlowSolution, solve_flow
from ..._plotting import _pyplot
from ..._reproduce import register
from ..base import compare
from .modes import DeepLinearModes
from .setup import saxe_problem


def saxe_solution(depth: int = 2, t1: float = 20.0) -> tuple[DeepLinearModes, FlowSolution]:
    """The theory and a float64-grade simulation (rtol 1e-10) of `saxe_problem(depth)` to `t1`
    (flow clock), saved on 0 ∪ 90 log-spaced times from 1e-3."""
    flow = saxe_problem(depth)
    ts = jnp.concatenate([jnp.zeros(1), jnp.geomspace(1e-3, t1, 90)])
    sol = solve_flow(flow, t1, ts=ts, observables=DeepLinearModes.observables, rtol=1e-10, atol=1e-12)
    return DeepLinearModes.from_flow(flow), sol


@register("saxe-modes", "Deep linear mode strengths u_α(t): simulation vs Saxe's closed form, D = 2 and 3")
def saxe_modes(out: Path, small: bool) -> list[Path]:
    """Mode strengths u_α(t) of D = 2 and D = 3 networks, theory (lines) over simulation (circles)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, depth in zip(axes, (2, 3)):
        theory, sol = saxe_solution(depth, t1=20.0 if depth == 2 else 60.0)
        ts = np.asarray(sol.ts)
        dense = jnp.geomspace(ts[1], ts[-1], 400)
        u_th = np.asarray(theory.evaluate(dense)["mode_strengths"])
        u_sim = np.asarray(sol.observables["mode_strengths"])
        for j in range(u_sim.shape[1]):
            ax.plot(dense, u_th[:, j], "-", color=f"C{j}", label=f"s = {float(theory.singular_values[j]):g}")
            ax.plot(ts[1:], u_sim[1:, j], "o", color=f"C{j}", ms=3, mfc="none")
        err = float(compare(theory, sol)["mode_strengths"])
        ax.set(xscale="log", xlabel="t", ylabel="mode strength u_α(t)",
               title=f"D = {depth} (lines: theory, circles: simulation; max rel. err {err:.1e})")
        ax.title.set_fontsize(9)
        ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    path = out / "saxe-modes.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [path]
