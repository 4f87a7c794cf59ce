"""gflow.saxe (Saxe, McClelland & Ganguli 2013): what the THEORY_CASES rows (tests/cases_saxe.py)
do not cover — decoupling, the fixed point, restarts, error vs rtol, half times against the
simulation, one compile per shape, the other negative controls and regime errors."""

import functools
import re

import equinox as eqx
import helpers  # noqa: F401  (first: importing it collects the cases_* rows)
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from cases_saxe import SAXE_TOL, balanced, deep, misaligned, rank_deficient, unbalanced, weak_mode, with_weights
from helpers import SAXE_TIMES, SOLVER_ATOL, SOLVER_RTOL

import gflow as gf

DLM = gf.saxe.DeepLinearModes
# Every solve here is configured like the rows' (the theory's observables on a 122-point grid,
# Tsit5 at rtol 1e-10), so all solves of one problem shape share one compile with them.
PROBLEMS = {"A1": balanced, "A2": unbalanced, "A3": deep, "rank-deficient": rank_deficient}


def _solve(flow, ts=SAXE_TIMES, rtol=SOLVER_RTOL, atol=SOLVER_ATOL, t1=100.0):
    return gf.solve_flow(flow, t1, ts=ts, observables=DLM.observables, rtol=rtol, atol=atol, solver="explicit")


@functools.cache
def _solution(name):
    return _solve(PROBLEMS[name]())


@functools.cache
def _theory(name):
    return DLM.from_flow(PROBLEMS[name]())


def _error(theory, sol):
    return float(gf.compare(theory, sol, ["mode_strengths"])["mode_strengths"])


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_modes_decouple_and_fixed_point(name):
    # Decoupling: off-diagonal entries of U_rᵀ W V_r stay at round-off (measured 2e-14 … 1e-10),
    # checked at t = 100, after every mode has been learned.
    flow, sol = PROBLEMS[name](), _solution(name)
    proj = gf.saxe.mode_projection(sol.t_final, sol.params_final, flow)
    assert float(jnp.max(jnp.abs(proj - jnp.diag(jnp.diagonal(proj))))) < 1e-9
    # t → ∞: every represented mode reaches s/λ (an s = 0 mode decays algebraically, u0/(1 + 2u0 t):
    # hence the very late time); the loss reaches ½ tr Syy − ½ Σ s²/λ. (The grid keeps the rows'
    # shape, so the compiled evaluation is reused.)
    theory = _theory(name)
    late = theory.evaluate(SAXE_TIMES.at[-1].set(1e13))
    s, lam = theory.singular_values, theory.input_variances
    learned = theory.initial_strengths != 0
    target = jnp.where(learned, s / lam, 0.0)
    assert jnp.allclose(late["mode_strengths"][-1], target, rtol=1e-12, atol=1e-12)
    l_inf = 0.5 * jnp.trace(flow.data.output_covariance()) - 0.5 * jnp.sum(jnp.where(learned, s**2 / lam, 0.0))
    assert jnp.allclose(late["loss"][-1], l_inf, rtol=1e-10, atol=1e-12)


def test_restart_equals_single_solve():
    # The first and the whole solve share one compile (t1 an array: a Python float is static).
    flow = balanced()
    first = _solve(flow, ts=jnp.linspace(0.0, 2.0, 5), t1=jnp.asarray(2.0))
    second = gf.solve_flow(flow, 6.0, start=first, ts=jnp.linspace(2.0, 6.0, 5), observables=DLM.observables,
                           rtol=SOLVER_RTOL, atol=SOLVER_ATOL, solver="explicit")
    whole = _solve(flow, ts=jnp.linspace(0.0, 6.0, 5), t1=jnp.asarray(6.0))
    # Two solves with different step sequences: they agree to the solver's accuracy (≈100 × rtol).
    assert jnp.allclose(second.observables["mode_strengths"][-1], whole.observables["mode_strengths"][-1],
                        rtol=1e-8, atol=1e-10)
    assert float(second.ts[0]) == 2.0 and float(second.t_final) == 6.0


def test_error_shrinks_with_rtol():
    loose = _error(_theory("A1"), _solve(balanced(), rtol=1e-7, atol=1e-9))
    assert _error(_theory("A1"), _solution("A1")) < loose / 10


# ---------------------------------------------------------------- half times (issue #12, defect 2)
def _crossing_times(name):
    """Per mode with a finite t½: the time where the simulated λu/s crosses ½, by linear
    interpolation on the grid t½·(1 ± 1e-4) (saved next to t½ itself)."""
    theory = _theory(name)
    half = theory.half_time()
    finite = np.nonzero(np.asarray(jnp.isfinite(half) & (half > 0)))[0]
    h = half[finite]
    brackets = jnp.stack([h * (1 - 1e-4), h * (1 + 1e-4)], axis=1)
    grid = jnp.sort(jnp.concatenate([SAXE_TIMES[: SAXE_TIMES.size - brackets.size], brackets.ravel()]))
    sol = _solve(PROBLEMS[name](), ts=grid)  # same shape as every other solve: no new compile
    s = jnp.where(theory.singular_values > 0, theory.singular_values, 1.0)
    ratio = sol.observables["mode_strengths"] * (theory.input_variances / s)[None, :]
    crossings = []
    for j, (lo, hi) in zip(finite, np.asarray(brackets)):
        i_lo, i_hi = int(np.searchsorted(grid, lo)), int(np.searchsorted(grid, hi))
        r_lo, r_hi = float(ratio[i_lo, j]), float(ratio[i_hi, j])
        assert r_lo < 0.5 < r_hi, (name, j, r_lo, r_hi)  # the crossing lies within ±1e-4·t½
        crossings.append(lo + (0.5 - r_lo) / (r_hi - r_lo) * (hi - lo))
    return theory, finite, np.asarray(h), np.asarray(crossings)


@pytest.mark.parametrize("name", ["A1", "A2", "A3"])
def test_half_time_matches_simulation(name):
    """D = 2 balanced (A1), D = 2 unbalanced with u0 < 0 modes (A2) and D = 3 (A3). The simulated u
    carries ~1e-9 relative solver error and λu/s has slope O(1) per unit log t there, so the
    crossing moves by ~1e-9 t½; linear interpolation on a ±1e-4·t½ bracket adds ≲ 1e-8 t½.
    Bound 1e-6. Negative control: the balanced two-layer formula the old half_time used for
    every case misses by ≥ 1e-2 on A2 and A3."""
    theory, finite, predicted, simulated = _crossing_times(name)
    np.testing.assert_allclose(predicted, simulated, rtol=1e-6)
    if name != "A1":
        s, lam, u0 = (np.asarray(a)[finite] for a in (theory.singular_values, theory.input_variances,
                                                        theory.initial_strengths))
        with np.errstate(invalid="ignore"):
            old = np.log(s / (lam * u0) - 1.0) / (2.0 * s * float(theory.time_scale))
        miss = np.where(np.isfinite(old), np.abs(old / simulated - 1.0), np.inf)
        assert np.min(miss) > 1e-2, miss


def test_half_time_special_cases_and_transforms():
    # A1's third mode has s = 0: nothing to learn, t½ = inf (never NaN).
    assert np.isinf(float(_theory("A1").half_time()[2]))
    s = jnp.array([3.0, 1.2, 2.0, 1.0, 0.0])
    u0 = jnp.array([1e-3, -0.2, 0.0, 0.6, 0.1])
    balanced_two = DLM(s, u0)
    # u0 < 0 balanced decays to 0, u0 = 0 is a saddle, s = 0 has nothing to learn: inf; u0 ≥ s/2: 0.
    t = np.asarray(balanced_two.half_time())
    assert np.isinf(t[[1, 2, 4]]).all() and t[3] == 0.0
    np.testing.assert_allclose(t[0], np.log(3.0 / 1e-3 - 1.0) / 6.0, rtol=1e-14)  # Saxe's formula
    # With an imbalance the same u0 < 0 and u0 = 0 modes do grow: finite t½ (checked against the
    # closed form ũ(t½) = s/2 here, and against the simulation above).
    tilted = DLM(s[:3], u0[:3], imbalance=jnp.array([0.0, 0.3, 0.1]))
    th = tilted.half_time()
    assert np.isfinite(np.asarray(th)).all()
    u_half = jax.vmap(lambda t: tilted.evaluate(t[None])["mode_strengths"][0])(th)
    np.testing.assert_allclose(np.diagonal(np.asarray(u_half)), np.asarray(s[:3]) / 2, rtol=1e-10)
    # jit, vmap (over a stack of theories) and jit∘vmap agree with the plain call.
    stacked = jax.tree_util.tree_map(lambda x: jnp.stack([x, x]) if eqx.is_array(x) else x, tilted)
    for got in (eqx.filter_jit(DLM.half_time)(tilted), eqx.filter_vmap(DLM.half_time)(stacked)[1],
                eqx.filter_jit(eqx.filter_vmap(DLM.half_time))(stacked)[0]):
        np.testing.assert_allclose(np.asarray(got), np.asarray(th), rtol=1e-13)


# ---------------------------------------------------------------- compile once (issue #12, defect 6)
def test_evaluate_compiles_once_per_shape(monkeypatch):
    """`evaluate` re-traced on every call (depth 3: ≈ 4 s CPU each). Now a second call, and a call
    from another theory of the same shape, reuse the compiled evaluation."""
    calls = []
    original = DLM.observables_at

    def counted(self, tau, **options):
        calls.append(1)
        return original(self, tau, **options)

    monkeypatch.setattr(DLM, "observables_at", counted)
    ts = jnp.linspace(0.0, 5.0, 13)  # a shape no other test evaluates on, so the first call traces
    one = DLM(jnp.array([2.0, 0.8]), jnp.array([1e-3, 1e-2]), depth=3, input_variances=jnp.array([1.3, 0.6]))
    other = DLM(jnp.array([1.5, 0.5]), jnp.array([2e-3, 3e-2]), depth=3, time_scale=2.0)
    first = one.evaluate(ts)
    assert len(calls) == 1
    again = one.evaluate(ts)
    second = other.evaluate(ts)
    assert len(calls) == 1, "evaluate re-traced for a same-shaped call"
    assert jnp.array_equal(first["mode_strengths"], again["mode_strengths"])
    assert not jnp.allclose(first["mode_strengths"], second["mode_strengths"])


# ---------------------------------------------------------------- rank (issue #12, defect 1)
def test_rank_detected_and_observable_matches():
    """A rank-2 target in a plain Dataset (k = 3): the theory keeps 3 modes with the null one at 0,
    and the simulation observable has the theory's shape (also with rank=2), so compare pairs them
    (the agreement itself is the row saxe-rank-deficient-plain-dataset)."""
    flow = rank_deficient()
    u_sim = gf.saxe.mode_strengths(0.0, flow.params0, flow)
    for theory in (DLM.from_flow(flow), DLM.from_flow(flow, rank=2)):
        assert theory.singular_values.shape == u_sim.shape == (3,)
        assert float(theory.singular_values[2]) == 0.0 and float(theory.initial_strengths[2]) == 0.0
        np.testing.assert_allclose(np.asarray(theory.evaluate(jnp.zeros(1))["mode_strengths"][0]),
                                   np.asarray(u_sim), rtol=1e-12, atol=1e-15)
    assert float(u_sim[2]) == 0.0 and gf.saxe.rank_rtol(jnp.float64) == pytest.approx(1.49e-8, rel=1e-2)


def test_rank_is_the_fix_for_a_weak_uncoupled_mode():
    """A weak real third mode whose input direction is not an eigenvector of Sxx: refused naming
    mode 2 and `rank=2`; with rank=2 the theory holds it at 0 (the init has no weight on it)."""
    flow = weak_mode()
    with pytest.raises(ValueError, match=re.escape("seed with `rank=2`")):
        DLM.from_flow(flow)
    theory = DLM.from_flow(flow, rank=2)
    assert float(theory.initial_strengths[2]) == 0.0
    with pytest.raises(ValueError, match="`rank` must be a non-negative integer"):
        DLM.from_flow(flow, rank=-1)


# ---------------------------------------------------------------- negative controls
def test_negative_control_misaligned_init():
    """An aligned init misaligned by 1e-2 (one mode rotated): refused, and ≥ 100× the tolerance off."""
    bad = misaligned(balanced())
    with pytest.raises(ValueError, match="aligned init"):
        DLM.from_flow(bad)
    assert _error(_theory("A1"), _solve(bad)) > 100 * SAXE_TOL


def test_negative_control_gaussian_perturbation():
    W1 = balanced().params0.weights[0]
    noise = 1e-3 * jnp.linalg.norm(W1) / jnp.sqrt(W1.size) * jr.normal(jr.PRNGKey(7), W1.shape)
    bad = with_weights(balanced(), lambda i, w: w + noise if i == 0 else w)
    assert _error(_theory("A1"), _solve(bad)) > 100 * SAXE_TOL


def test_negative_control_random_init():
    flow = balanced()
    norms = [jnp.linalg.norm(w) for w in flow.params0.weights]
    rand = gf.DeepLinear((6, 4, 3), key=jr.PRNGKey(3))
    weights = tuple(w * n / jnp.linalg.norm(w) for w, n in zip(rand.weights, norms))
    bad = with_weights(flow, lambda i, w: weights[i])
    assert _error(_theory("A1"), _solve(bad)) > 100 * SAXE_TOL


def test_negative_control_whitening_wrongly_assumed():
    theory = _theory("A2")
    wrong = eqx.tree_at(lambda t: t.input_variances, theory, jnp.ones_like(theory.input_variances))
    assert _error(wrong, _solution("A2")) > 100 * SAXE_TOL


def test_negative_control_wrong_depth():
    theory = _theory("A3")
    two_layer = DLM(theory.singular_values, theory.initial_strengths, depth=2,
                    input_variances=theory.input_variances, output_trace=theory.output_trace)
    assert _error(two_layer, _solution("A3")) > 100 * SAXE_TOL


# ---------------------------------------------------------------- regime errors
def test_regime_error_deep_outside_formula():
    with pytest.raises(ValueError, match=re.escape("0 < λ u0 < s (or u0 = 0)")):
        DLM(jnp.array([1.0]), jnp.array([2.0]), depth=3)
    with pytest.raises(ValueError, match="balanced"):
        DLM(jnp.array([1.0]), jnp.array([0.1]), depth=3, imbalance=jnp.array([0.1]))
    with pytest.raises(ValueError, match="`depth` must be an integer ≥ 2"):
        DLM(jnp.array([1.0]), jnp.array([0.1]), depth=1)


def test_regime_error_under_vmap():
    """A traced misaligned init raises at run time (eqx.error_if) with the same assumption named."""
    flow = balanced()

    def seeded(scale):
        bad = with_weights(flow, lambda i, w: w + scale * jnp.ones_like(w) if i == 0 else w)
        return DLM.from_flow(bad).initial_strengths

    batched = jax.jit(jax.vmap(seeded))  # one compile for both calls
    batched(jnp.zeros(2))  # aligned: fine
    with pytest.raises(Exception, match="aligned init"):
        batched(jnp.array([0.0, 1e-2]))
