"""Theory-vs-simulation overlays (matplotlib is imported lazily)."""

import os
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np


def _pyplot():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "pdf", "svg", "png"):
        try:
            matplotlib.use("Agg")
        except Exception:
            pass
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, out, name: str, *, dpi: int = 110) -> list:
    """Write `fig` to `out/name.png` (tight layout), close it, and return [path] (the shape a
    `gflow reproduce` figure function returns)."""
    from pathlib import Path

    path = Path(out) / f"{name}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    _pyplot().close(fig)
    return [path]


def plot_overlay(
    theory,
    solution,
    names: Sequence[str] | None = None,
    *,
    path: str | os.PathLike | None = None,
    title: str | None = None,
    dense: int = 400,
):
    """Simulation as markers, theory as lines, one log time axis per observable.

    Scalar observables are one curve; vector observables (e.g. `mode_strengths`) one curve per
    component. The theory is drawn on a dense log grid and also checked on the simulation's
    grid. Returns the figure; writes it to `path` if given.
    """
    plt = _pyplot()
    ts = np.asarray(solution.ts)
    positive = ts > 0
    t_dense = np.geomspace(ts[positive].min(), ts.max(), dense)
    predicted = theory.evaluate(jnp.asarray(t_dense))
    if names is None:
        names = [n for n in solution.observables if n in predicted]
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        sim = np.asarray(solution.observables[name]).reshape(len(ts), -1)
        th = np.asarray(predicted[name]).reshape(len(t_dense), -1)
        for j in range(sim.shape[1]):
            color = f"C{j % 10}"
            ax.plot(t_dense, th[:, j], "-", color=color, lw=1.5, label="theory" if j == 0 else None)
            ax.plot(ts[positive], sim[positive, j], "o", color=color, ms=3.5, mfc="none",
                    label="simulation" if j == 0 else None)
        ax.set_xscale("log")
        ax.set_xlabel("t (flow time = η × steps)")
        ax.set_ylabel(name)
        if name == "loss" and np.all(th > 0):
            ax.set_yscale("log")
        ax.legend(frameon=False, fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
