"""gflow.ntk (Jacot et al. 2018; Lee et al. 2019): what the THEORY_CASES row (tests/cases_ntk.py)
does not cover — test outputs, t → ∞, the loss convention, the width rate of finite networks and
its mean-field negative control, from_flow under vmap, and one compile for `outputs_at`."""

import equinox as eqx
import helpers  # noqa: F401  (first: importing it collects the cases_* rows)
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from cases_ntk import T1, linearized_flow, times
from helpers import SOLVER_ATOL, SOLVER_RTOL, ntk_problem

import gflow as gf

LIN = gf.ntk.LinearizedMSE
X_TEST = jnp.linspace(-1.5, 1.5, 4)[:, None] * jnp.array([[1.0, 0.5, -0.3]])


def _distance(theory, sol):
    """sup_t RMS_μ |f_t(x_μ) − f_t^lin(x_μ)| (Lee et al. 2019, Thm. 2.1)."""
    pred = theory.evaluate(sol.ts)["outputs"]
    return jnp.max(jnp.sqrt(jnp.mean((pred - sol.observables["outputs"]) ** 2, axis=(1, 2))))


@pytest.fixture(scope="module")
def linearized_case():
    # Configured like the row's solve (tests/cases_ntk.py), so the two share one compile.
    flow = linearized_flow()
    sol = gf.solve_flow(flow, T1, ts=times(), observables=LIN.observables, rtol=SOLVER_RTOL, atol=SOLVER_ATOL,
                        solver="explicit")
    return flow, sol, LIN.from_flow(flow, X_TEST)


def test_test_outputs_loss_and_late_time(linearized_case):
    # B1: a linear ODE, so the solver error is ~10–100 × rtol = 1e-9..1e-8 relative to max|Y|
    # (measured 3e-9); the closed form itself is exact. Test outputs at every saved time would
    # need another compiled solve: they are checked at t1 (the most accumulated error) from the
    # final parameters, and at t = 0.
    flow, sol, theory = linearized_case
    pred = theory.evaluate(sol.ts)
    scale = jnp.max(jnp.abs(flow.data.y))
    final = jax.vmap(flow.model(sol.params_final))(X_TEST)
    start = jax.vmap(flow.model0)(X_TEST)
    assert float(jnp.max(jnp.abs(pred["test_outputs"][-1] - final)) / scale) < 1e-8
    assert float(jnp.max(jnp.abs(pred["test_outputs"][0] - start)) / scale) < 1e-13
    assert float(gf.compare(theory, sol, ["loss"])["loss"]) < 1e-8  # pointwise: the loss keeps its sign
    # t → ∞ fits the training targets (Θ is full rank here: p = 320 > nk = 8).
    late = theory.evaluate(sol.ts.at[-1].set(1e6))  # the grid's shape: the compiled evaluation is reused
    assert jnp.allclose(late["outputs"][-1], flow.data.y, atol=1e-10)


def test_negative_control_wrong_loss_convention(linearized_case):
    # B1-NEG: exponent Θt instead of Θt/n (the half-sum loss) misses by ~0.4 ≫ 100 × 1e-8.
    flow, sol, theory = linearized_case
    wrong = eqx.tree_at(lambda t: t.time_scale, theory, theory.time_scale * flow.data.n)
    scale = jnp.max(jnp.abs(flow.data.y))
    err = jnp.max(jnp.abs(wrong.evaluate(sol.ts)["outputs"] - sol.observables["outputs"])) / scale
    assert float(err) > 100 * 1e-8


def _mean_distance(widths, seeds, key, *, scaling="ntk", rtol=1e-7):
    """Mean over `seeds` inits of the network-vs-linearization distance, per width."""

    def distance(key, width):
        flow = ntk_problem(width, key=key, scaling=scaling)
        if scaling == "mean_field":  # f = (1/m) Σ …: the flow sped up by m keeps the kernel O(1)
            flow = gf.GradientFlow(flow.model0, gf.squared_error, flow.data, time_scale=float(width))
        # Tsit5: ~30 steps, far from stiff; the auto solver would compile an implicit phase too.
        sol = gf.solve_flow(flow, T1, num_times=31, observables=["outputs"], rtol=rtol, atol=rtol * 1e-2,
                            solver="explicit")
        return _distance(LIN.from_flow(flow), sol)

    keys = jr.split(key, seeds)
    # One compiled program per width (seeding, solve and closed form), not op-by-op dispatch.
    return [float(jnp.mean(jax.jit(jax.vmap(lambda k: distance(k, m)))(keys))) for m in widths]


def _slope(widths, dist):
    return float(np.polyfit(np.log(widths), np.log(dist), 1)[0])


# B2: a finite NTK-scaled net approaches the linearized flow as the width m grows; the proven rate
# is m^{-1/2}, the typical one m^{-1} (measured slope −1.02 over 64…4096): assert slope < −0.4.
# rtol 1e-7: solver error ~1e-6 relative, far below the smallest distance measured (~1e-4).
def test_width_rate():
    """make test: widths 64 and 1024 (a 16× range; measured distances 7.8e-3 and 3.5e-4, slope
    −1.1), 2 seeds. The full check (3 widths × 3 seeds) is `test_width_rate_full`."""
    widths = (64, 1024)
    dist = _mean_distance(widths, 2, jr.PRNGKey(11))
    assert _slope(widths, dist) < -0.4, dist


@pytest.mark.slow
def test_width_rate_full():
    widths = (64, 256, 1024)
    dist = _mean_distance(widths, 3, jr.PRNGKey(11))
    assert _slope(widths, dist) < -0.4, dist


# B2-NEG: a mean-field net keeps learning features: its distance to its own linearization does not
# shrink with width (measured slope +0.04): slope > −0.2. Distances are ~3e-2: rtol 1e-6 is ample.
def test_negative_control_mean_field_has_no_linear_limit():
    """make test: widths 16 and 64, 1 seed (measured 0.097 and 0.113: slope +0.11)."""
    widths = (16, 64)
    dist = _mean_distance(widths, 1, jr.PRNGKey(12), scaling="mean_field", rtol=1e-6)
    assert _slope(widths, dist) > -0.2, dist


@pytest.mark.slow
def test_negative_control_mean_field_full():
    widths = (32, 128)
    dist = _mean_distance(widths, 2, jr.PRNGKey(12), scaling="mean_field", rtol=1e-6)
    assert _slope(widths, dist) > -0.2, dist


def test_from_flow_under_vmap_and_errors():
    # from_flow under vmap over initialisations (same shapes): one theory per init.
    seeded = jax.jit(jax.vmap(lambda k: LIN.from_flow(ntk_problem(16, key=k)).eigenvalues))
    thetas = seeded(jr.split(jr.PRNGKey(0), 2))
    assert thetas.shape == (2, 8)
    flow = ntk_problem(16)
    with pytest.raises(ValueError, match="LinearizedMSE assumes the loss squared_error"):
        LIN.from_flow(gf.GradientFlow(flow.model0, gf.logistic, flow.data))


def test_empirical_ntk_transforms():
    flow = ntk_problem(16)
    x = flow.data.x
    plain = gf.ntk.empirical_ntk(flow.model0, x, x)
    assert plain.shape == (8, 8) and jnp.allclose(plain, plain.T, rtol=1e-12)
    jitted = eqx.filter_jit(gf.ntk.empirical_ntk)(flow.model0, x, x)
    models = jax.vmap(lambda k: ntk_problem(16, key=k).model0)(jnp.stack([jr.PRNGKey(0), jr.PRNGKey(0)]))
    batched = eqx.filter_vmap(lambda m: gf.ntk.empirical_ntk(m, x, x))(models)
    both = eqx.filter_jit(eqx.filter_vmap(lambda m: gf.ntk.empirical_ntk(m, x, x)))(models)
    for other in (jitted, batched[1], both[0]):
        np.testing.assert_allclose(np.asarray(other), np.asarray(plain), rtol=1e-12, atol=1e-14)


def test_outputs_at_compiles_once(monkeypatch):
    """Issue #12, defect 6: `outputs_at(x)` was a fresh closure per call, so every solve using it
    recompiled. It is now a Module holding x: a second solve with other inputs of the same shape
    traces nothing new."""
    observable = gf.outputs_at(X_TEST)
    cls = type(observable)
    calls = []
    original = cls.__call__

    def counted(self, t, params, flow):
        calls.append(1)
        return original(self, t, params, flow)

    monkeypatch.setattr(cls, "__call__", counted)
    flow = ntk_problem(16)
    # A shape no other test solves with (7 saves, 3 test points), so the first solve traces.
    first = gf.solve_flow(flow, 1.0, num_times=7, observables={"test": gf.outputs_at(X_TEST[:3])},
                          solver="explicit")
    traced = len(calls)
    assert traced > 0
    second = gf.solve_flow(flow, 1.0, num_times=7, observables={"test": gf.outputs_at(X_TEST[1:] + 0.1)},
                           solver="explicit")
    assert len(calls) == traced, "a second solve with same-shaped inputs re-traced"
    # …and it used its own inputs.
    f = jax.vmap(flow.model0)
    np.testing.assert_allclose(np.asarray(second.observables["test"][0]), np.asarray(f(X_TEST[1:] + 0.1)), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(first.observables["test"][0]), np.asarray(f(X_TEST[:3])), rtol=1e-12)
