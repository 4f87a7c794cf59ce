"""LinearizedMSE (classic.md §B) against the linearised model's flow and finite networks."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import SOLVER_ATOL, SOLVER_RTOL, ntk_problem

import gflow as gf

X_TEST = jnp.linspace(-1.5, 1.5, 4)[:, None] * jnp.array([[1.0, 0.5, -0.3]])
T1 = 30.0


def _distance(theory, sol):
    """sup_t RMS_μ |f_t(x_μ) − f_t^lin(x_μ)| (classic.md §B.2)."""
    pred = theory.evaluate(sol.ts)["outputs"]
    return jnp.max(jnp.sqrt(jnp.mean((pred - sol.observables["outputs"]) ** 2, axis=(1, 2))))


@pytest.fixture(scope="module")
def linearized_case():
    flow = ntk_problem(64)
    lin_flow = gf.GradientFlow(gf.LinearizedModel(flow.model0), gf.squared_error, flow.data)
    obs = {"outputs": "outputs", "test_outputs": gf.outputs_at(X_TEST), "loss": "loss"}
    sol = gf.solve_flow(lin_flow, T1, observables=obs, rtol=SOLVER_RTOL, atol=SOLVER_ATOL)
    return flow, sol


def test_closed_form_matches_linearized_flow(linearized_case):
    # B1: the linearised flow is a linear ODE, so the solver error is ~10–100 × rtol = 1e-9..1e-8
    # relative to max|Y| (measured 3e-9 in classic.md §B.3); the closed form itself is exact.
    flow, sol = linearized_case
    theory = gf.LinearizedMSE.from_flow(flow, X_TEST)
    pred = theory.evaluate(sol.ts)
    scale = jnp.max(jnp.abs(flow.data.y))
    for name in ("outputs", "test_outputs"):
        assert float(jnp.max(jnp.abs(pred[name] - sol.observables[name])) / scale) < 1e-8, name
    assert float(gf.compare(theory, sol)["loss"]) < 1e-8
    # t = 0 exact; t → ∞ fits the training targets (Θ is full rank here: p = 320 > nk = 8).
    at0 = theory.evaluate(jnp.zeros(1))
    assert jnp.allclose(at0["outputs"][0], sol.observables["outputs"][0], rtol=1e-13, atol=1e-14)
    late = theory.evaluate(jnp.array([1e6]))
    assert jnp.allclose(late["outputs"][0], flow.data.y, atol=1e-10)


def test_negative_control_wrong_loss_convention(linearized_case):
    # B1-NEG: exponent Θt instead of Θt/n (the half-sum loss) misses by ~0.4 ≫ 100 × 1e-8.
    flow, sol = linearized_case
    theory = gf.LinearizedMSE.from_flow(flow, X_TEST)
    wrong = eqx.tree_at(lambda t: t.time_scale, theory, theory.time_scale * flow.data.n)
    scale = jnp.max(jnp.abs(flow.data.y))
    err = jnp.max(jnp.abs(wrong.evaluate(sol.ts)["outputs"] - sol.observables["outputs"])) / scale
    assert float(err) > 100 * 1e-8


def test_width_rate():
    """B2: the finite NTK-scaled network approaches the linearised flow as width grows; the proven
    rate is m^{-1/2}, the typical one m^{-1}: assert a fitted slope < −0.4 (3 seeds per width)."""
    widths = (64, 256, 1024)

    def distance(key, width):
        flow = ntk_problem(width, key=key)
        # rtol 1e-7: solver error ~1e-6 relative, far below the smallest distance measured (~5e-4).
        sol = gf.solve_flow(flow, T1, num_times=31, observables=["outputs"], rtol=1e-7, atol=1e-9)
        return _distance(gf.LinearizedMSE.from_flow(flow), sol)

    keys = jr.split(jr.PRNGKey(11), 3)
    dist = [float(jnp.mean(jax.vmap(lambda k: distance(k, m))(keys))) for m in widths]
    slope = np.polyfit(np.log(widths), np.log(dist), 1)[0]
    assert slope < -0.4, (dist, slope)


def test_negative_control_mean_field_has_no_linear_limit():
    """B2-NEG: a mean-field net (f = (1/m) Σ ..., flow sped up by m) keeps learning features: its
    distance to its own linearisation does not shrink with width (slope > −0.2)."""
    widths = (32, 128)

    def distance(key, width):
        flow = ntk_problem(width, key=key, scaling="mean_field")
        flow = gf.GradientFlow(flow.model0, gf.squared_error, flow.data, time_scale=float(width))
        # Distances are ~3e-2: rtol 1e-6 is ample.
        sol = gf.solve_flow(flow, T1, num_times=31, observables=["outputs"], rtol=1e-6, atol=1e-8)
        return _distance(gf.LinearizedMSE.from_flow(flow), sol)

    keys = jr.split(jr.PRNGKey(12), 2)
    dist = [float(jnp.mean(jax.vmap(lambda k: distance(k, m))(keys))) for m in widths]
    slope = np.polyfit(np.log(widths), np.log(dist), 1)[0]
    assert slope > -0.2, (dist, slope)


def test_transforms_and_errors(linearized_case):
    flow, sol = linearized_case
    theory = gf.LinearizedMSE.from_flow(flow, X_TEST)
    plain = theory.evaluate(sol.ts)["outputs"]
    jitted = eqx.filter_jit(lambda th: th.evaluate(sol.ts)["outputs"])(theory)
    stacked = jax.tree_util.tree_map(lambda x: jnp.stack([x, x]), theory)
    batched = jax.vmap(lambda th: th.evaluate(sol.ts)["outputs"])(stacked)
    both = jax.jit(jax.vmap(lambda th: th.evaluate(sol.ts)["outputs"]))(stacked)
    for other in (jitted, batched[1], both[0]):
        assert jnp.allclose(plain, other, rtol=1e-12, atol=1e-14)
    # from_flow under vmap over initialisations (same shapes): one theory per init.
    thetas = jax.vmap(lambda k: gf.LinearizedMSE.from_flow(ntk_problem(16, key=k)).eigenvalues)(jr.split(jr.PRNGKey(0), 2))
    assert thetas.shape == (2, 8)
    with pytest.raises(ValueError, match="LinearizedMSE assumes the squared_error loss"):
        gf.LinearizedMSE.from_flow(gf.GradientFlow(flow.model0, gf.logistic, flow.data))
    with pytest.raises(ValueError, match="`x_test` must have d = 3 columns"):
        gf.LinearizedMSE.from_flow(flow, jnp.ones((2, 4)))
