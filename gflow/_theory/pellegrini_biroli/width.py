"""The finite-width study: how far random width-M networks are from the M = ∞ theory.

??? cite "Reference"
    F. Pellegrini and G. Biroli, NeurIPS 2020 (arXiv:2006.11209), §4 (finite-M fluctuations,
    Fig. 1d): deviations are CLT fluctuations of population averages, O(M^{-1/2}).

The simulations are one `gflow.sweep` over a padded width axis (one trace, one compile).
"""

import math

import diffrax
import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray, Real

from ..._data.base import Dataset
from ..._models.two_layer import TwoLayer
from ..._sweep import sweep
from .closure import node_paths
from .finite_p import MeanFieldHingeFiniteP, frozen_dataset_gamma
from .observables import WithTeacher, a, loss, unsatisfied_fraction, w_par
from .setup import check_count, mean_field_hinge_flow, teacher_of


class WidthSweep(eqx.Module):
    """Result of `finite_width_sweep`: per-(width, seed) errors (W, S) and the fitted log-log slope."""

    widths: Int[Array, " W"]
    errors: Float[Array, "W S"]
    frozen_errors: Float[Array, "W S"]
    unsatisfied_rms: Float[Array, "W S"]
    num_steps: Int[Array, "W S"]
    slope: Float[Array, ""]
    slope_stderr: Float[Array, ""]


@eqx.filter_jit
def fit_power_law(
    widths: Real[ArrayLike, " W"], errors: Float[ArrayLike, "W S"]
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """Slope of log(mean error) vs log M by weighted least squares, weights from the seed spread
    (σ_log ≈ SEM/mean; 10% when S = 1); returns (slope, its standard error)."""
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
    """Finite-width deviation from the mean-field theory: `num_seeds` random N(0, s²) ReLU
    populations (s = `init_scale`) per width M, on the mean-field clock τ = α t / M up to `t1`.

    Per (width, seed): the relative error |sim − th|/|th| of the node parameters (a_i, w∥_i) at
    τ = `t1` against `MeanFieldHingeFiniteP` with C0 = 0, S0 = s² (the M = ∞ theory on the same
    data), the same for the frozen-dataset control, the RMS over the `num_times` save times of the
    unsatisfied-fraction deviation, and the step count. The slope of log(mean error) vs log M is
    fitted with its standard error (theory: −½). `teacher`: ŵ* (default: the data's own).

    The W·S runs are one `gflow.sweep` (Tsit5, `rtol`/`atol`) along a width axis padded to
    max(widths) (`TwoLayer(active_width=M)`: every width shares one compile; the padding units are
    zero and stay zero). Run (w, s) draws its init from key `jax.random.split(key, W·S)[w·S + s]`
    (independent populations at every width).
    """
    widths = [check_count("widths", m) for m in widths]
    num_seeds = check_count("num_seeds", num_seeds)
    u = teacher_of(data, teacher)
    ts = jnp.linspace(0.0, t1, num_times)
    W, S, padded, d = len(widths), num_seeds, max(widths), data.d
    run_keys = jr.split(key, W * S)

    def make_flow(member_key, hyper):
        kw, ka = jr.split(run_keys[hyper["run"].astype(jnp.int32)])
        real = jnp.arange(padded, dtype=data.x.dtype) < hyper["width"]
        w0 = jnp.where(real[:, None], init_scale * jr.normal(kw, (padded, d)), 0.0)
        a0 = jnp.where(real, init_scale * jr.normal(ka, (padded,)), 0.0)
        model = TwoLayer(d, padded, "relu", scaling="mean_field", alpha=alpha, w=w0, a=a0,
                         active_width=hyper["width"])
        return mean_field_hinge_flow(model, data, margin)

    teacher_t = tuple(float(x) for x in np.asarray(u))
    observables = {"loss": loss, "a": a, "w_par": WithTeacher(w_par, teacher_t),
                   "unsatisfied_fraction": unsatisfied_fraction}
    grid = {"run": {"width": np.repeat(widths, S), "run": np.arange(W * S)}}
    ds = sweep(make_flow, 1, t1, grid=grid, ts=ts, observables=observables, solver=diffrax.Tsit5(), rtol=rtol,
               atol=atol, max_steps=max_steps, on_failure="raise", progress=False)
    sim_a = jnp.asarray(ds["a"].values[:, 0])  # (W·S, T, M)
    sim_par = jnp.asarray(ds["w_par"].values[:, 0])
    sim_u = jnp.asarray(ds["unsatisfied_fraction"].values[:, 0])  # (W·S, T)
    steps = jnp.asarray(ds["num_steps"].values[:, 0]).reshape(W, S)
    out = _errors(sim_a, sim_par, sim_u, data.y[:, 0] * (data.x @ u), ts, d, alpha, margin, init_scale**2)
    errors, frozen, u_rms = (x.reshape(W, S) for x in out)
    slope, stderr = fit_power_law(jnp.asarray(widths), errors)
    return WidthSweep(jnp.asarray(widths), errors, frozen, u_rms, steps, slope, stderr)


@eqx.filter_jit
def _errors(sim_a, sim_par, sim_u, projections, ts, d: int, alpha, margin, S0):
    """(node error, frozen-control error, unsatisfied RMS) per run, from the saved paths."""
    theory = MeanFieldHingeFiniteP(projections, d=d, alpha=alpha, margin=margin, C0=0.0, S0=S0)
    pred = theory.evaluate(ts)
    a0, par0 = sim_a[:, 0], sim_par[:, 0]  # the initial nodes (padding units are 0)
    th = node_paths(a0, par0, pred["gamma"][-1])
    fz = node_paths(a0, par0, frozen_dataset_gamma(theory.margins_sorted, ts[-1], d=d))
    sim = jnp.concatenate([sim_a[:, -1], sim_par[:, -1]], axis=-1)
    th = jnp.concatenate([th["a"], th["w_par"]], axis=-1)
    fz = jnp.concatenate([fz["a"], fz["w_par"]], axis=-1)
    err = jnp.linalg.norm(sim - th, axis=-1) / jnp.linalg.norm(th, axis=-1)
    frozen = jnp.linalg.norm(sim - fz, axis=-1) / jnp.linalg.norm(fz, axis=-1)
    u_rms = jnp.sqrt(jnp.mean((sim_u - pred["unsatisfied_fraction"][None, :]) ** 2, axis=-1))
    return err, frozen, u_rms
