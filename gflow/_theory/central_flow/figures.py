"""The central flow against gradient descent past the edge of stability (for the gd-vs-flow
notebook and `gflow reproduce gd-vs-flow`).

??? cite "Reference"
    Cohen, Damian, Talwalkar, Kolter & Lee, "Understanding Optimization in Deep Learning with
    Central Flows", ICLR 2025 (arXiv:2410.24206), Fig. 1–3 (gradient descent).
"""

import jax.numpy as jnp
import numpy as np

from ..._flow.problem import GradientFlow
from ..._flow.sharpness import sharpness
from ..._flow.solve import solve_flow
from ..._plotting import _pyplot
from .flow import CentralFlow
from .setup import edge_of_stability_problem


def sliding_mean(values, window: int):
    """Centred moving average over `window` consecutive entries ("valid" part: len − window + 1
    entries; entry j averages values[j : j + window])."""
    values = np.asarray(values)
    return np.convolve(values, np.ones(window) / window, mode="valid")


def central_flow_runs(flow: GradientFlow | None = None, learning_rate: float | None = None,
                      steps: int = 1000, *, window: int = 100, num_saves: int = 101,
                      num_iterations: int = 12, rtol: float = 1e-5) -> dict:
    """GD, the central flow and gradient flow on one problem, on the flow's clock t = η·k.

    Defaults: `edge_of_stability_problem()` and η = 1/S(θ0). GD (`solve_discrete`, optax.sgd(η))
    saves the loss at every step and the sharpness on the save grid; the central flow and
    gradient flow are saved on `num_saves` times from 0 to (steps − window/2)·η. Returns a dict
    of numpy arrays: `eta`, `threshold` (2/(ηκ)), `gd_t`, `gd_loss` (every step), `avg_t`,
    `gd_loss_avg` (sliding mean over `window` steps, centred), `ts`, `gd_sharpness`, and the
    central flow's and gradient flow's `cf_*`, `gf_loss`, `gf_sharpness` on `ts`."""
    import optax

    from ..._discrete import solve_discrete

    flow = edge_of_stability_problem() if flow is None else flow
    if learning_rate is None:
        learning_rate = 1.0 / float(sharpness(0.0, flow.params0, flow))
    eta = float(learning_rate)
    kappa = float(flow.time_scale)
    t1 = steps * eta
    gd = solve_discrete(flow, optax.sgd(eta), t1, learning_rate=eta, ts=eta * jnp.arange(steps + 1.0),
                        observables=("loss",))
    last = (steps - window // 2) * eta
    ts = jnp.linspace(0.0, last, num_saves)
    gd_s = solve_discrete(flow, optax.sgd(eta), t1, learning_rate=eta, ts=ts, observables=("sharpness",))
    theory = CentralFlow.from_flow(flow, learning_rate=eta, num_iterations=num_iterations)
    cf = theory.solve(last, ts=ts, rtol=rtol, atol=1e-9, max_steps=100_000).observables
    gfl = solve_flow(flow, last, ts=ts, observables=("loss", "sharpness"), rtol=1e-6, atol=1e-9).observables
    loss = np.asarray(gd.observables["loss"])
    avg = sliding_mean(loss, window)
    gd_t = np.asarray(gd.ts)
    return {
        "eta": eta, "threshold": 2.0 / (eta * kappa), "gd_t": gd_t, "gd_loss": loss,
        "avg_t": gd_t[window // 2: window // 2 + avg.size], "gd_loss_avg": avg,
        "ts": np.asarray(ts), "gd_sharpness": np.asarray(gd_s.observables["sharpness"]),
        **{f"cf_{k}": np.asarray(v) for k, v in cf.items()},
        "gf_loss": np.asarray(gfl["loss"]), "gf_sharpness": np.asarray(gfl["sharpness"]),
    }


def plot_central_flow(flow: GradientFlow | None = None, learning_rate: float | None = None, *,
                      small: bool = False, steps: int | None = None, window: int = 100, axes=None):
    """Two panels on the flow's clock t = η·k: the loss of GD (every step, faint; and its
    sliding mean over `window` steps) against the central flow's predicted time-averaged loss
    L + ½σ²S and gradient flow's loss; and the sharpness S(θ) of the three with the edge 2/(ηκ).

    Defaults: `edge_of_stability_problem()`, η = 1/S(θ0), 1000 steps (`small`: 250 steps, the
    edge and its catapult only, with a 20-step window). `axes`: two matplotlib axes to draw on
    (default: a new figure). Returns the figure."""
    plt = _pyplot()
    if steps is None:
        steps = 250 if small else 1000
    if small:
        window = min(window, 20)
    runs = central_flow_runs(flow, learning_rate, steps, window=window, num_saves=26 if small else 101)
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    else:
        fig = axes[0].figure
    ax = axes[0]
    ax.plot(runs["gd_t"], runs["gd_loss"], color="C0", alpha=0.25, lw=0.6, label="GD (every step)")
    ax.plot(runs["avg_t"], runs["gd_loss_avg"], color="C0", lw=1.5, label=f"GD, mean over {window} steps")
    ax.plot(runs["ts"], runs["cf_loss"], "--", color="C3", lw=1.5, label="central flow L + ½σ²S")
    ax.plot(runs["ts"], runs["gf_loss"], ":", color="k", lw=1.2, label="gradient flow")
    ax.set(yscale="log", xlabel="t = η·k", ylabel="training loss", title=f"η = {runs['eta']:.3g}")
    ax.legend(frameon=False, fontsize=8)
    ax = axes[1]
    ax.plot(runs["ts"], runs["gd_sharpness"], color="C0", lw=1.2, label="GD")
    ax.plot(runs["ts"], runs["cf_sharpness"], "--", color="C3", lw=1.5, label="central flow")
    ax.plot(runs["ts"], runs["gf_sharpness"], ":", color="k", lw=1.2, label="gradient flow")
    ax.axhline(runs["threshold"], color="gray", lw=0.8, label="2/η")
    ax.set(xlabel="t = η·k", ylabel="sharpness S = λ_max(∇²L)")
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig
