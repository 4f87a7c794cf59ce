"""Saxe et al. 2013 and the linearised (NTK) flow: figures for the demo and `gflow reproduce`."""

from pathlib import Path

import jax.numpy as jnp
import jax.random as jr
import numpy as np

import gflow as gf

from .._plotting import _pyplot
from .._reproduce import register


def saxe_problem(depth: int = 2, key=jr.PRNGKey(0)):
    """Whitened 8 → 6 → 4 regression with s = (4, 2, 1, 0.5), small balanced aligned init."""
    s = jnp.array([4.0, 2.0, 1.0, 0.5])
    data = gf.whitened_regression(s, 8, 4, 64, key=key)
    u0 = jnp.full((4,), 1e-3)
    a = jnp.stack([u0 ** (1.0 / depth)] * depth)
    model = gf.DeepLinear.aligned(data.modes.V, data.modes.U, a, [6] * (depth - 1), key=jr.PRNGKey(1))
    return gf.GradientFlow(model, gf.squared_error, data)


def saxe_solution(depth: int = 2, t1: float = 20.0):
    flow = saxe_problem(depth)
    ts = jnp.concatenate([jnp.zeros(1), jnp.geomspace(1e-3, t1, 90)])
    sol = gf.solve_flow(flow, t1, ts=ts, observables=["loss", "mode_strengths"], rtol=1e-10, atol=1e-12)
    theory = gf.DeepLinearModes.from_flow(flow)
    return theory, sol


def ntk_solution(width: int = 512, t1: float = 50.0):
    kx, km = jr.split(jr.PRNGKey(3))
    x = jr.normal(kx, (8, 3))
    y = jnp.sin(x @ jnp.array([1.0, -0.5, 0.3]))[:, None]
    x_test = jnp.linspace(-2.0, 2.0, 5)[:, None] * jnp.array([[1.0, -0.5, 0.3]])
    flow = gf.GradientFlow(gf.TwoLayer(3, width, "tanh", scaling="ntk", key=km), gf.squared_error, gf.Dataset(x, y))
    sol = gf.solve_flow(flow, t1, observables={"loss": "loss", "outputs": "outputs",
                                                 "test_outputs": gf.outputs_at(x_test)},
                        rtol=1e-10, atol=1e-12)
    theory = gf.LinearizedMSE.from_flow(flow, x_test)
    return theory, sol


@register("saxe-modes", "Deep linear mode strengths u_α(t): simulation vs Saxe's closed form, D = 2 and 3")
def saxe_modes(out: Path, small: bool) -> list[Path]:
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
        err = float(gf.compare(theory, sol)["mode_strengths"])
        ax.set(xscale="log", xlabel="t", ylabel="mode strength u_α(t)",
               title=f"D = {depth} (lines: theory, circles: simulation; max rel. err {err:.1e})")
        ax.title.set_fontsize(9)
        ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    path = out / "saxe-modes.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [path]


@register("ntk-outputs", "Linearised (NTK) closed form vs a width-512 tanh network: loss and test outputs")
def ntk_outputs(out: Path, small: bool) -> list[Path]:
    theory, sol = ntk_solution(128 if small else 512)
    fig = gf.plot_overlay(theory, sol, ["loss", "test_outputs"], title="Linearised MSE flow vs network (NTK scaling)")
    path = out / "ntk-outputs.png"
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)
    return [path]
