"""THEORY_CASES row of the linearized (NTK) flow (Jacot et al. 2018, arXiv:1806.07572; Lee et al.
2019, arXiv:1902.06720): `LinearizedMSE` against the gradient flow of the network's own
linearization (the exact statement). The problem is cached here and shared with
tests/test_ntk.py."""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from helpers import SOLVER_ATOL, SOLVER_RTOL, TheoryCase, ntk_problem

import gflow as gf

LIN = gf.ntk.LinearizedMSE
T1 = 30.0


@functools.cache
def linearized_flow(width: int = 64):
    """The width-64 tanh net of `ntk_problem`, linearized at θ0: a linear ODE in θ − θ0."""
    flow = ntk_problem(width)
    return gf.GradientFlow(gf.ntk.LinearizedModel(flow.model0), gf.squared_error, flow.data)


def shifted_base(flow, eps=1e-2):
    """Negative control: the linearization point θ0 moved by `eps` relative (Gaussian): another
    kernel and other initial outputs (a miss of ~1e-2, 1e6 × the tolerance)."""
    base = flow.model0.base
    params, static = eqx.partition(base, base.trainable())
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jr.split(jr.PRNGKey(21), len(leaves))
    leaves = [p * (1 + eps * jr.normal(k, p.shape)) for p, k in zip(leaves, keys)]
    moved = eqx.combine(jax.tree_util.tree_unflatten(treedef, leaves), static)
    return gf.GradientFlow(gf.ntk.LinearizedModel(moved), flow.loss, flow.data)


def times():
    return jnp.concatenate([jnp.zeros(1), jnp.logspace(-3, 0, 40) * T1])


CASES = (
    # The linearized flow is a linear ODE, so the solver error is ~10–100 × rtol = 1e-9..1e-8
    # relative to the output scale (measured 3e-9); the closed form is exact. Outputs cross zero,
    # so errors are taken relative to each curve's scale (`scale="curve"`); tolerance 1e-8.
    TheoryCase(
        name="ntk-linearized-width64", make_flow=linearized_flow, theory=LIN, t1=T1, ts=times,
        tolerance=1e-8, perturb=shifted_base, compare_options={"scale": "curve"},
        solve_options={"rtol": SOLVER_RTOL, "atol": SOLVER_ATOL, "solver": "explicit"},
        regime_errors=(
            (lambda: gf.GradientFlow(linearized_flow().model0, gf.logistic, linearized_flow().data), {},
             r"LinearizedMSE assumes the loss squared_error"),
            (lambda: linearized_flow(), {"x_test": jnp.ones((2, 4))}, r"`x_test` must have d = 3 columns"),
        ),
    ),
)
