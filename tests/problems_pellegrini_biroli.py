"""Tiny Pellegrini–Biroli problems, cached: the THEORY_CASES rows, their controls and
tests/test_pellegrini_biroli.py share the flows (and so the compiles of their solves). A module of
its own: tests/helpers.py imports the cases files while it is being imported, so the cases cannot
import factories from it."""

import functools

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr

import gflow as gf


@functools.cache
def pb_symmetric_problem(base_samples: int = 50, base_width: int = 16, alpha: float = 2.0):
    """Pellegrini–Biroli exact case: d = 8, P = 4·50 stratified + symmetrized data, the symmetric
    population M = 4·16, α = 2, h = 1 (cached: rows and tests share the flow and its compile)."""
    pb = gf.pellegrini_biroli
    data = pb.separable_gaussian(4 * base_samples, 8, key=jr.PRNGKey(0), stratified=True, symmetrized=True)
    model = pb.symmetric_population(base_width, 8, key=jr.PRNGKey(1), alpha=alpha)
    return pb.mean_field_hinge_flow(model, data, 1.0)


@functools.cache
def pb_linear_problem(flipped: int = 0):
    """Pellegrini–Biroli linear σ: d = 8, P = 40 symmetrized data, M = 8, α = 2, h = 1; `flipped`
    labels (every 5th sample from the first) negated: non-separable data of the same shapes."""
    pb = gf.pellegrini_biroli
    data = pb.separable_gaussian(40, 8, key=jr.PRNGKey(7), symmetrized=True)
    if flipped:
        signs = jnp.where((jnp.arange(40) % 5 == 0) & (jnp.arange(40) < 5 * flipped), -1.0, 1.0)
        data = gf.Dataset(data.x, data.y * signs[:, None], modes=data.modes)
    model = gf.TwoLayer(8, 8, "linear", scaling="mean_field", alpha=2.0, key=jr.PRNGKey(8))
    return pb.mean_field_hinge_flow(model, data, 1.0)


def pb_with_model(flow, **changes):
    """`flow` with its model's fields changed (e.g. a = 1.05 · a): a perturbed start."""
    model = flow.model0
    for name, fn in changes.items():
        model = eqx.tree_at(lambda m, n=name: getattr(m, n), model, fn(getattr(model, name)))
    return gf.GradientFlow(model, flow.loss, flow.data, time_scale=flow.time_scale)
