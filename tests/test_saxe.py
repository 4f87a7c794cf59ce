"""DeepLinearModes (classic.md §A) against float64 simulations of the finite network."""

import re

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import pytest
from helpers import (
    SAXE_TIMES,
    SOLVER_ATOL,
    SOLVER_RTOL,
    saxe_balanced_problem,
    saxe_deep_problem,
    saxe_unbalanced_problem,
)

import gflow as gf

# The closed forms are exact to round-off (t(u) matches quadrature to < 1e-15), so the error is the
# ODE solver's: at rtol 1e-10 it accumulates to ~10–100 × rtol over 6 decades with saddle plateaus
# (measured ≤ 1.5e-8 in classic.md §A.7). 1e-7 leaves ≥ 7× headroom and meets the 1e-6 goal.
SAXE_TOL = 1e-7
OBSERVABLES = ("loss", "mode_strengths", "mode_projection")


def _solve(flow, rtol=SOLVER_RTOL, atol=SOLVER_ATOL):
    return gf.solve_flow(flow, 100.0, ts=SAXE_TIMES, observables=OBSERVABLES, rtol=rtol, atol=atol)


PROBLEMS = {
    "A1-balanced-whitened": saxe_balanced_problem,
    "A2-unbalanced-nonwhitened": saxe_unbalanced_problem,
    "A3-deep-balanced-nonwhitened": saxe_deep_problem,
}


@pytest.fixture(scope="module", params=list(PROBLEMS))
def case(request):
    flow = PROBLEMS[request.param]()
    return request.param, flow, _solve(flow), gf.DeepLinearModes.from_flow(flow)


def test_theory_matches_simulation(case):
    name, flow, sol, theory = case
    errors = gf.compare(theory, sol)
    assert float(errors["mode_strengths"]) < SAXE_TOL, (name, errors)
    assert float(errors["loss"]) < SAXE_TOL, (name, errors)
    # Decoupling: off-diagonal entries of U_rᵀ W V_r stay at round-off.
    proj = sol.observables["mode_projection"]
    off = proj - jnp.einsum("tii->ti", proj)[..., None] * jnp.eye(proj.shape[-1])[None]
    assert float(jnp.max(jnp.abs(off))) < 1e-9


def test_zero_time_exact_and_fixed_point(case):
    name, flow, sol, theory = case
    out0 = theory.evaluate(jnp.zeros(1))
    # t = 0: the theory reproduces the network's own strengths and loss to round-off.
    assert jnp.allclose(out0["mode_strengths"][0], sol.observables["mode_strengths"][0], rtol=1e-12, atol=1e-15)
    assert jnp.allclose(out0["loss"][0], flow.loss_value(flow.params0), rtol=1e-12)
    # t → ∞: every represented mode reaches s/λ (an s = 0 mode decays algebraically, u0/(1 + 2u0 t):
    # hence the very late time); the loss reaches ½ tr Syy − ½ Σ s²/λ.
    late = theory.evaluate(jnp.array([1e13]))
    s, lam = theory.singular_values, theory.input_variances
    learned = theory.initial_strengths != 0
    target = jnp.where(learned, s / lam, 0.0)
    assert jnp.allclose(late["mode_strengths"][0], target, rtol=1e-12, atol=1e-12)
    l_inf = 0.5 * jnp.trace(flow.data.output_covariance()) - 0.5 * jnp.sum(jnp.where(learned, s**2 / lam, 0.0))
    assert jnp.allclose(late["loss"][0], l_inf, rtol=1e-10, atol=1e-12)


def test_restart_equals_single_solve():
    flow = saxe_balanced_problem()
    ts1 = jnp.linspace(0.0, 2.0, 5)
    first = gf.solve_flow(flow, 2.0, ts=ts1, observables=["mode_strengths"], rtol=SOLVER_RTOL, atol=SOLVER_ATOL)
    second = gf.solve_flow(flow, 6.0, start=first, ts=jnp.linspace(2.0, 6.0, 5), observables=["mode_strengths"],
                           rtol=SOLVER_RTOL, atol=SOLVER_ATOL)
    whole = gf.solve_flow(flow, 6.0, ts=jnp.linspace(0.0, 6.0, 13), observables=["mode_strengths"],
                          rtol=SOLVER_RTOL, atol=SOLVER_ATOL)
    # Two solves with different step sequences: they agree to the solver's accuracy (≈100 × rtol).
    assert jnp.allclose(second.observables["mode_strengths"][-1], whole.observables["mode_strengths"][-1],
                        rtol=1e-8, atol=1e-10)
    assert float(second.ts[0]) == 2.0 and float(second.t_final) == 6.0


def test_error_shrinks_with_rtol():
    flow = saxe_balanced_problem()
    theory = gf.DeepLinearModes.from_flow(flow)
    loose = gf.compare(theory, _solve(flow, rtol=1e-7, atol=1e-9))["mode_strengths"]
    tight = gf.compare(theory, _solve(flow))["mode_strengths"]
    assert float(tight) < float(loose) / 10


def test_half_time():
    theory = gf.DeepLinearModes(jnp.array([3.0, 1.2]), jnp.array([1e-3, 2e-2]))
    t_half = theory.half_time()
    u = jax.vmap(lambda t: theory.evaluate(t[None])["mode_strengths"][0])(t_half)
    assert jnp.allclose(jnp.diagonal(u), theory.singular_values / 2, rtol=1e-13)


# ---------------------------------------------------------------- negative controls
def _theory_error(theory, sol):
    return float(gf.compare(theory, sol)["mode_strengths"])


def test_negative_control_misaligned_init():
    """An aligned init misaligned by 1e-2 (one mode rotated) breaks agreement by ≥ 100× the tolerance."""
    flow = saxe_balanced_problem()
    theory = gf.DeepLinearModes.from_flow(flow)
    W1, W2 = flow.params0.weights
    V = flow.data.modes.V
    angle = 1e-2
    rot = jnp.eye(6) + (jnp.cos(angle) - 1) * (jnp.outer(V[:, 0], V[:, 0]) + jnp.outer(V[:, 3], V[:, 3])) \
        + jnp.sin(angle) * (jnp.outer(V[:, 3], V[:, 0]) - jnp.outer(V[:, 0], V[:, 3]))
    perturbed = eqx.tree_at(lambda m: m.weights, flow.model0, (W1 @ rot, W2))
    bad_flow = gf.GradientFlow(perturbed, gf.squared_error, flow.data)
    with pytest.raises(ValueError, match="aligned init"):
        gf.DeepLinearModes.from_flow(bad_flow)
    assert _theory_error(theory, _solve(bad_flow)) > 100 * SAXE_TOL


def test_negative_control_gaussian_perturbation():
    flow = saxe_balanced_problem()
    theory = gf.DeepLinearModes.from_flow(flow)
    W1, W2 = flow.params0.weights
    noise = 1e-3 * jnp.linalg.norm(W1) / jnp.sqrt(W1.size) * jr.normal(jr.PRNGKey(7), W1.shape)
    bad = gf.GradientFlow(eqx.tree_at(lambda m: m.weights, flow.model0, (W1 + noise, W2)), gf.squared_error, flow.data)
    assert _theory_error(theory, _solve(bad)) > 100 * SAXE_TOL


def test_negative_control_whitening_wrongly_assumed():
    flow = saxe_unbalanced_problem()
    sol = _solve(flow)
    theory = gf.DeepLinearModes.from_flow(flow)
    wrong = eqx.tree_at(lambda t: t.input_variances, theory, jnp.ones_like(theory.input_variances))
    assert _theory_error(wrong, sol) > 100 * SAXE_TOL


def test_negative_control_wrong_depth():
    flow = saxe_deep_problem()
    sol = _solve(flow)
    theory = gf.DeepLinearModes.from_flow(flow)
    two_layer = gf.DeepLinearModes(theory.singular_values, theory.initial_strengths, depth=2,
                                   input_variances=theory.input_variances, output_trace=theory.output_trace)
    assert _theory_error(two_layer, sol) > 100 * SAXE_TOL


def test_negative_control_random_init():
    flow = saxe_balanced_problem()
    theory = gf.DeepLinearModes.from_flow(flow)
    norms = [jnp.linalg.norm(w) for w in flow.params0.weights]
    rand = gf.DeepLinear((6, 4, 3), key=jr.PRNGKey(3))
    rand = eqx.tree_at(lambda m: m.weights, rand, tuple(w * n / jnp.linalg.norm(w) for w, n in zip(rand.weights, norms)))
    assert _theory_error(theory, _solve(gf.GradientFlow(rand, gf.squared_error, flow.data))) > 100 * SAXE_TOL


# ---------------------------------------------------------------- regime errors and transforms
def test_regime_error_inputs_not_eigenvectors():
    flow = saxe_balanced_problem()
    x = flow.data.x
    mix = jnp.eye(6).at[0, 1].set(0.5)
    data = gf.Dataset(x @ mix, flow.data.y)  # Sxx no longer diagonal in the modes of Syx
    with pytest.raises(ValueError, match=re.escape("eigenvector of Sxx")):
        gf.DeepLinearModes.from_flow(gf.GradientFlow(flow.model0, gf.squared_error, data))


def test_regime_error_wrong_model_or_loss():
    flow = saxe_balanced_problem()
    with pytest.raises(ValueError, match="squared_error"):
        gf.DeepLinearModes.from_flow(gf.GradientFlow(flow.model0, gf.logistic, flow.data))
    two = gf.GradientFlow(gf.TwoLayer(6, 4, "relu", out_dim=3, key=jr.PRNGKey(0)), gf.squared_error, flow.data)
    with pytest.raises(ValueError, match="DeepLinear"):
        gf.DeepLinearModes.from_flow(two)


def test_regime_error_deep_outside_formula():
    with pytest.raises(ValueError, match=re.escape("0 < λ u0 < s")):
        gf.DeepLinearModes(jnp.array([1.0]), jnp.array([2.0]), depth=3)
    with pytest.raises(ValueError, match="balanced"):
        gf.DeepLinearModes(jnp.array([1.0]), jnp.array([0.1]), depth=3, imbalance=jnp.array([0.1]))


def test_regime_error_under_vmap():
    """A traced misaligned init raises at run time (eqx.error_if) with the same assumption named."""
    flow = saxe_balanced_problem()

    def seeded(scale):
        W1, W2 = flow.params0.weights
        model = eqx.tree_at(lambda m: m.weights, flow.model0, (W1 + scale * jnp.ones_like(W1), W2))
        return gf.DeepLinearModes.from_flow(gf.GradientFlow(model, gf.squared_error, flow.data)).initial_strengths

    jax.vmap(seeded)(jnp.zeros(2))  # aligned: fine
    with pytest.raises(Exception, match="aligned init"):
        jax.vmap(seeded)(jnp.array([0.0, 1e-2]))


def test_theory_transforms():
    flow = saxe_unbalanced_problem()
    theory = gf.DeepLinearModes.from_flow(flow)
    plain = theory.evaluate(SAXE_TIMES)
    jitted = eqx.filter_jit(lambda th: th.evaluate(SAXE_TIMES))(theory)
    batched = jax.vmap(lambda th: th.evaluate(SAXE_TIMES))(jax.tree_util.tree_map(lambda x: jnp.stack([x, x]), theory))
    both = jax.jit(jax.vmap(lambda th: th.evaluate(SAXE_TIMES)))(jax.tree_util.tree_map(lambda x: jnp.stack([x, x]), theory))
    for other in (jitted, jax.tree_util.tree_map(lambda x: x[1], batched), jax.tree_util.tree_map(lambda x: x[0], both)):
        assert jnp.allclose(plain["mode_strengths"], other["mode_strengths"], rtol=1e-13, atol=1e-15)
    # from_flow itself vmaps over inits (aligned strengths batched).
    deep = gf.DeepLinearModes(jnp.array([2.0, 0.8]), jnp.array([1e-3, 1e-2]), depth=3)
    u = jax.vmap(lambda u0: gf.DeepLinearModes(deep.singular_values, u0, depth=3).evaluate(SAXE_TIMES)["mode_strengths"])(
        jnp.array([[1e-3, 1e-2], [1e-3, 1e-2]]))
    assert jnp.allclose(u[0], deep.evaluate(SAXE_TIMES)["mode_strengths"], rtol=1e-13)
