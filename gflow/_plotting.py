"""Theory-vs-simulation overlays and sweep plots (matplotlib is imported lazily)."""

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

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


def plot_sweep(path: str | os.PathLike, out: str | os.PathLike | None = None, *, name: str = "path") -> list:
    """PNGs of a stored sweep: loss curves (median and 10–90% / 25–75% quantile bands over
    members, one colour per grid point) and histograms of the event times. Written to `out`
    (default: `path/plots`); returns their paths. An incomplete store is plotted as far as it
    goes, with a `SweepWarning` and "N of M runs done" in the title. Errors call the store
    `name`."""
    from ._sweep.member import NOT_RUN
    from ._sweep.store import SweepWarning, load_sweep

    ds = load_sweep(path, allow_partial=True, name=name)
    n_total = int(ds["result"].size)
    n_done = int((ds["result"] != NOT_RUN).sum())
    progress = ""
    if n_done < n_total:
        progress = f" ({n_done} of {n_total} runs done)"
        warnings.warn(f"store {str(path)!r} is incomplete: {n_done} of {n_total} runs done; plotting those "
                      "(rerun the sweep to finish it)", SweepWarning, stacklevel=2)
    out = Path(path) / "plots" if out is None else Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plt = _pyplot()
    grid_dims = [d for d in ds["loss"].dims if d not in ("member", "time")]
    params = [c for c in ds.coords if ds[c].ndim == 1 and ds[c].dims[0] in grid_dims]
    t = ds["time"].values
    keep = t > 0
    written = []
    # One panel per value of the first grid axis (when there are two or more axes), one colour
    # per point of the other axes.
    panel_dim = grid_dims[0] if len(grid_dims) > 1 else None
    panels = range(ds.sizes[panel_dim]) if panel_dim else [None]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels) + 1, 4), squeeze=False, sharey=True)
    for ax, panel in zip(axes[0], panels):
        sub = ds if panel is None else ds.isel({panel_dim: panel})
        dims = [d for d in grid_dims if d != panel_dim]
        for index in np.ndindex(*[sub.sizes[d] for d in dims]):
            point = sub.isel(dict(zip(dims, index)))
            curves = point["loss"].transpose("member", "time").values[:, keep]
            curves = np.where(np.isfinite(curves), curves, np.nan)
            if not np.any(np.isfinite(curves)):
                continue
            with warnings.catch_warnings():  # all-NaN columns (failed members) are expected
                warnings.simplefilter("ignore", RuntimeWarning)
                q = np.nanquantile(curves, [0.1, 0.25, 0.5, 0.75, 0.9], axis=0)
            label = ", ".join(f"{c}={float(point[c]):g}" for c in params if ds[c].dims[0] != panel_dim) or "all"
            (line,) = ax.loglog(t[keep], q[2], label=label)
            ax.fill_between(t[keep], q[0], q[4], color=line.get_color(), alpha=0.12, lw=0)
            ax.fill_between(t[keep], q[1], q[3], color=line.get_color(), alpha=0.25, lw=0)
        if panel is not None:
            ax.set_title(", ".join(f"{c}={float(sub[c]):g}" for c in params if ds[c].dims[0] == panel_dim), fontsize=10)
        ax.set_xlabel("time t (flow clock)")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("loss")
    fig.suptitle(f"{ds.sizes['member']} members per point{progress}: median, 25–75% and 10–90% bands",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(out / "loss_quantiles.png", dpi=120)
    plt.close(fig)
    written.append(out / "loss_quantiles.png")
    if grid_dims:
        written.append(_plot_final_loss(plt, ds, grid_dims, params, out))
    events = [n for n in ("time_to_loss_below", "plateau_exit_time", "time_to_all_correct") if n in ds]
    fig, axes = plt.subplots(1, len(events), figsize=(4 * len(events), 3.5), squeeze=False)
    for ax, name in zip(axes[0], events):
        v = ds[name].where(ds["succeeded"]).values.ravel()  # failed members' times are not shown
        finite = v[np.isfinite(v) & (v > 0)]
        if finite.size:
            bins = np.geomspace(finite.min(), finite.max() * (1 + 1e-9), 30) if finite.max() > finite.min() else 10
            ax.hist(finite, bins=bins)
            ax.set_xscale("log")
        ax.set_title(f"{name}\n({v.size - finite.size} of {v.size} never reached, failed or not run)", fontsize=9)
        ax.set_xlabel("time t")
    fig.tight_layout()
    fig.savefig(out / "event_times.png", dpi=120)
    plt.close(fig)
    written.append(out / "event_times.png")
    return written


def _plot_final_loss(plt, ds, grid_dims, params, out):
    """Median final loss (25–75% bars) against the last grid axis, one line per other point."""
    x_dim = grid_dims[-1]
    x_name = next(c for c in params if ds[c].dims[0] == x_dim)
    x = ds[x_name].values
    others = [d for d in grid_dims if d != x_dim]
    fig, ax = plt.subplots(figsize=(6, 4))
    final = ds["final_loss"].where(ds["succeeded"])
    for index in np.ndindex(*[ds.sizes[d] for d in others]):
        point = final.isel(dict(zip(others, index))).transpose(x_dim, "member").values
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            q = np.nanquantile(point, [0.25, 0.5, 0.75], axis=1)
        at = dict(zip(others, index))
        label = ", ".join(f"{c}={float(ds[c][at[ds[c].dims[0]]]):g}" for c in params if ds[c].dims[0] in at) or None
        ax.errorbar(x, q[1], yerr=[q[1] - q[0], q[2] - q[1]], marker="o", capsize=3, label=label)
    ax.set_xscale("log" if np.all(x > 0) and x.max() / x.min() >= 10 else "linear")
    ax.set_yscale("log")
    ax.set_xlabel(x_name)
    ax.set_ylabel(f"final loss at t = {float(ds['time'].values[-1]):g}")
    ax.set_title("median over members, 25–75% bars (failed members left out)", fontsize=10)
    if others:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "final_loss.png", dpi=120)
    plt.close(fig)
    return out / "final_loss.png"
