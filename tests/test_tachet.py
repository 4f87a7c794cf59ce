"""Tachet des Combes et al. 2018 (gflow.tachet): the checks beyond the shared THEORY_CASES rows
(tests/cases_tachet.py, run by tests/test_theories.py, hold the theory-vs-simulation agreement,
t = 0, transforms, negative controls and regime errors of every theory).

Every simulation is Dopri8 at rtol 1e-10 / atol 1e-12 unless stated. The per-mode theories are
exact, so the error is the solver's global error: smooth flows accumulate 10–100 × rtol over
several decades of log-time, hence the 1e-6 tolerance (≥ 30× headroom). The hinge kinks (stop at
z = 1, unit death at u = 0) are passed as `jump_ts`.
"""

import contextlib
import functools
import re

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import SOLVER_ATOL, SOLVER_RTOL  # before cases_tachet: helpers collects its rows

import gflow as gf

# isort: split
from cases_tachet import E2, HINGE_TS, HINGE_U0, HINGE_VT0, W2, hinge_stop_times, mode_flow, small_flow, solve_options

tachet = gf.tachet
TOL = 1e-6
SOLVER = diffrax.Dopri8()


@contextlib.contextmanager
def count_traces():
    """Collect JAX's trace events (one per function traced for compilation) inside the block."""
    events = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/jaxpr_trace_duration":
            events.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield events
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def finite(x):
    x = np.asarray(x)
    return jnp.asarray(x[np.isfinite(x)])


@functools.cache
def hinge_problem():
    """The tachet-two-layer-hinge row's problem and simulation (same options: one compile)."""
    flow = mode_flow(HINGE_U0, HINGE_VT0, gf.hinge)
    sol = gf.solve_flow(flow, HINGE_TS[-1], ts=jnp.asarray(HINGE_TS), observables=tachet.TwoLayerModes.observables,
                        **solve_options(hinge_stop_times(HINGE_U0, HINGE_VT0)))
    return flow, tachet.TwoLayerModes.from_flow(flow), sol


def balanced(z0, rate=0.125):
    return tachet.BalancedCEMargins(jnp.array([z0]), jnp.array([rate]), jnp.array([1.0]), jnp.array([0]), 1.0)


def chain(z0, depth):
    return tachet.ChainModes(z0=jnp.array([z0]), p=jnp.array([0.25]), s=jnp.array([2.0]),
                             mode_of_sample=jnp.array([0]), time_scale=jnp.asarray(1.0), depth=depth, loss="logistic")


# --- the hinge closed form ------------------------------------------------------------------------

def test_hinge_stop_times_closed_form():
    # t_h = ln X/(2λ), X = [2/s + √(4/s² + A²B²)]/A² (one unit per mode), against the root found
    # by bracketed Newton on z_k(τ) = 1.
    _, theory, _ = hinge_problem()
    assert np.allclose(theory.stop_times(), hinge_stop_times(HINGE_U0, HINGE_VT0), rtol=1e-13)
    assert np.array_equal(np.asarray(theory.kink_times())[:4], np.sort(np.asarray(theory.stop_times())))
    assert np.all(np.isinf(np.asarray(theory.death_times())))  # every unit starts with A > 0


def test_repeated_calls_compile_once():
    """Issue #12 defect 6: `compare` on TwoLayerModes (≈ 5 s per call), `stop_times` and
    `late_time_margins` re-traced on every call. A second call on a same-shaped theory with
    other values must reuse the compiled code: no trace at all."""
    flow, theory, sol = hinge_problem()
    other = tachet.TwoLayerModes.from_flow(mode_flow(np.asarray(HINGE_U0) * 1.1, HINGE_VT0, gf.hinge))
    ts = jnp.array([1e2, 1e3, 1e5])
    first = (gf.compare(theory, sol), theory.stop_times(), theory.kink_times(),
             balanced(0.01).late_time_margins(ts), balanced(0.01).mode_margins(ts),
             chain(0.01, 3).late_time_margins(ts))
    with count_traces() as traces:
        second = (gf.compare(other, sol), other.stop_times(), other.kink_times(),
                  balanced(0.02).late_time_margins(ts), balanced(0.02).mode_margins(ts),
                  chain(0.02, 3).late_time_margins(ts))
    assert not traces, f"{len(traces)} new traces"
    assert float(second[0]["margins"]) > 100 * float(first[0]["margins"])  # other values, same compile


# --- Lambert-W asymptotics (exact side checked against simulation in the rows) --------------------

def test_R6_depth_late_time_asymptotics():
    """The late-time CE form z ≈ −αW₋₁(−(Ct)^{−1/α}/α) of a depth-3 chain approaches the exact t(z)
    quadrature (checked against simulation in the tachet-chain-ce row); the depth-2 form (α = 1)
    does not."""
    ts = jnp.array([1e3, 1e6, 1e12])
    exact = chain(0.01, 3).mode_margins(ts)[:, 0]
    late = chain(0.01, 3).late_time_margins(ts)[:, 0]
    rel = np.abs(np.asarray(late / exact) - 1)
    assert np.all(np.diff(rel) < 0) and rel[-1] < 3e-3  # measured 2.2e-2, 5.1e-3, 1.4e-3
    wrong = chain(0.01, 2).late_time_margins(ts)[:, 0]
    assert abs(float(wrong[-1] / exact[-1]) - 1) > 10 * rel[-1]  # measured 4.1e-2


def test_T3b_lambert_asymptotics_improve():
    theory = balanced(0.01)
    ts = jnp.array([1e2, 1e3, 1e5, 1e12])
    exact = theory.mode_margins(ts)[:, 0]
    first = np.abs(theory.late_time_margins(ts, refined=False)[:, 0] / exact - 1)
    second = np.abs(theory.late_time_margins(ts)[:, 0] / exact - 1)
    assert np.all(np.diff(first) < 0) and np.all(np.diff(second) < 0)
    assert second[-1] < 1e-3 and np.all(second < first)
    assert np.all(exact[exact > 12] > 0) and second[np.asarray(exact) > 12].max() < 1e-3


# --- crossing times, the failed region, the clock delay ---------------------------------------------

@pytest.fixture(scope="module", params=["hinge", "logistic"])
def twin_case(request):
    loss = request.param
    u0 = jnp.array([0.1, 0.1])
    vt0 = jnp.array([-0.98, -1.02]) * u0  # mode 0 in R, mode 1 in F
    flow = mode_flow(u0, vt0, getattr(gf, loss), norms=(1.0, 1.0), counts=(1, 1), labels=(1.0, 1.0))
    lam = jnp.array([0.5, 0.5])
    t_c = float(tachet.crossing_time(u0[0], vt0[0], 1.0, lam[0], loss))
    t_d = float(tachet.death_time(u0[1], vt0[1], 1.0, lam[1], loss))
    control = 1.1 * t_c if loss == "hinge" else 0.5 * float(jnp.log((u0[0] - vt0[0]) / (u0[0] + vt0[0])) / lam[0])
    before = jnp.geomspace(1e-2, 0.99 * t_d, 30)
    ts = jnp.sort(jnp.concatenate([before, jnp.array([t_c, control, t_d * 1.5, 1e4])]))
    theory = (tachet.TwoLayerModes if loss == "hinge" else tachet.TwoLayerModesCE).from_flow(flow)
    jumps = finite(theory.kink_times()) if loss == "hinge" else jnp.array([t_d])
    sol = gf.solve_flow(flow, ts[-1], ts=ts, observables=theory.observables, solver=SOLVER, rtol=SOLVER_RTOL,
                        atol=SOLVER_ATOL, jump_ts=jumps, max_steps=200_000)
    return loss, theory, sol, ts, dict(t_c=t_c, t_d=t_d, control=control)


def test_T5_crossing_time(twin_case):
    loss, theory, sol, ts, times = twin_case
    g0 = 1.0 if loss == "hinge" else 0.5
    i_c = int(np.argmin(np.abs(np.asarray(ts) - times["t_c"])))
    i_x = int(np.argmin(np.abs(np.asarray(ts) - times["control"])))

    def time_error(i):
        z = float(sol.observables["margins"][i, 0])
        u = float(sol.observables["first_layer_strengths"][i, 0])
        v = float(sol.observables["output_weights"][i, 0])
        return abs(z) / (0.5 * (u**2 + v**2) * g0 * float(ts[i]))  # |z| / (t · λ s (u² + ṽ²) g(0))

    # 1e-8: z(t_c) = 0 to the solver's ~1e-10 relative accuracy at t_c.
    assert time_error(i_c) < 1e-8
    assert time_error(i_x) > 100 * 1e-8
    if loss == "logistic":  # CE recovery takes between 1× and 2× the hinge time, → 2× at small init.
        t_h = float(tachet.crossing_time(0.1, -0.098, 1.0, 0.5, "hinge"))
        assert t_h < times["t_c"] < 2 * t_h


def test_R7_clock_delay(twin_case):
    """CE follows hinge's weight-space path on a slower clock. The delay at the crossing point τ_c
    must equal the gap between the two crossing times (each checked against the simulation in T5
    to 1e-8), and at small margins CE runs at exactly half speed."""
    u0, vt0, lam = 0.1, -0.098, 0.5
    tau_c = 0.5 * np.log((u0 - vt0) / (u0 + vt0))
    gap = float(tachet.crossing_time(u0, vt0, 1.0, lam, "logistic") - tachet.crossing_time(u0, vt0, 1.0, lam, "hinge"))
    assert abs(float(tachet.clock_delay(u0, vt0, 1.0, lam, tau_c)) - gap) <= 1e-12 * gap
    taus = jnp.linspace(0.0, tau_c, 6)
    assert bool(jnp.all(jnp.diff(tachet.clock_delay(u0, vt0, 1.0, lam, taus)) > 0))
    # Tiny init: z ≈ 0 along the path, so the delay is t_H = τ/λ up to (1/λ)∫z dτ; here
    # |z| ≤ (s/4)A²e² = 2.3e-8, so the deviation is ≤ 4.6e-8.
    tiny = tachet.clock_delay(1e-4, 1e-5, 1.0, lam, 1.0)
    assert abs(float(tiny) - 1.0 / lam) < 5e-8
    # Negative control: a delay computed with the wrong sign of B (a region-S start) differs by ≫ tol.
    assert abs(float(tachet.clock_delay(u0, -vt0, 1.0, lam, tau_c)) - gap) > 100 * 1e-12 * gap


def test_T6_failed_region(twin_case):
    loss, theory, sol, ts, times = twin_case
    before = np.asarray(ts) < times["t_d"]
    pred = theory.evaluate(ts)
    u_sim = np.asarray(sol.observables["first_layer_strengths"])[before, 1]
    u_th = np.asarray(pred["first_layer_strengths"])[before, 1]
    assert np.max(np.abs(u_sim - u_th) / np.abs(u_th)) < TOL
    z_final = np.asarray(sol.observables["margins"])[-1]
    assert abs(z_final[1]) < 1e-8  # dead: f = 0 on the mode
    after = np.asarray(ts) > times["t_d"]
    assert np.all(np.abs(np.asarray(sol.observables["first_layer_strengths"])[after, 1]) < 1e-10)
    twin = 1.0 if loss == "hinge" else 11.55
    assert abs(z_final[0] - twin) < (1e-6 if loss == "hinge" else 1e-2)
    # Negative control: the twin's margin is far from 0.
    assert abs(z_final[0]) > 100 * 1e-8


def test_regions_and_ensemble():
    u = jnp.array([-0.1, 0.1, 0.1, 0.1, 0.0])
    v = jnp.array([0.3, -0.2, -0.05, 0.2, 0.1])
    R = tachet
    assert tachet.phase_region(u, v).tolist() == [R.REGION_D, R.REGION_F, R.REGION_R, R.REGION_S, R.REGION_D]
    # Monte Carlo of the isotropic-Gaussian ensemble (hinge): P(wrong at t).
    u0, v0 = jr.normal(jr.PRNGKey(1), (2, 200_000))
    lam_t = jnp.array([0.05, 0.3, 1.0, 3.0])
    tc = tachet.crossing_time(u0, v0, 1.0, 1.0, "hinge")
    region = tachet.phase_region(u0, v0)
    wrong = jnp.mean((region <= R.REGION_F)[None, :] | (tc[None, :] > lam_t[:, None]), axis=1)
    err = np.max(np.abs(np.asarray(wrong) / np.asarray(tachet.ensemble_error(lam_t)) - 1))
    assert err < 1e-2  # sampling noise of 2e5 draws: ~2e-3
    assert np.max(np.abs(np.asarray(wrong) / np.asarray(tachet.ensemble_error(lam_t / 2)) - 1)) > 1e-2


# --- the 0-1 error staircase; the phase map -----------------------------------------------------------

def staircase_flow(loss):
    k1, k2, k3, k4, k5 = jr.split(jr.PRNGKey(7), 5)
    K = 12
    s = jr.uniform(k1, (K,), minval=0.5, maxval=2.0)
    counts = [int(c) for c in jr.randint(k2, (K,), 1, 4)]
    labels = jnp.where(jr.bernoulli(k3, 0.5, (K,)), 1.0, -1.0)
    u0 = 0.1 * jr.uniform(k4, (K,), minval=0.5, maxval=1.5)
    frac = jr.uniform(k5, (K,), minval=0.1, maxval=0.9)
    vt0 = -frac * u0                                   # modes 0–7: R
    vt0 = vt0.at[8:10].set(frac[8:10] * u0[8:10])     # S
    u0 = u0.at[10].set(-0.1)                           # D
    vt0 = vt0.at[11].set(-1.5 * u0[11])                # F
    data = tachet.orthogonal_features(tuple(float(x) for x in s), counts, labels, K)
    w, a = tachet.proper_init(u0, vt0, labels, K, key=jr.PRNGKey(8))
    return gf.GradientFlow(gf.TwoLayer(K, K, "relu", w=w, a=a), loss, data)


@pytest.mark.parametrize("loss", ["hinge", "logistic"])
def test_T11_error_staircase(loss):
    flow = staircase_flow(getattr(gf, loss))
    theory = (tachet.TwoLayerModes if loss == "hinge" else tachet.TwoLayerModesCE).from_flow(flow)
    units = theory.units
    ts = jnp.logspace(-2, 4, 300)
    jumps = finite(theory.kink_times()) if loss == "hinge" else None
    sol = gf.solve_flow(flow, ts[-1], ts=ts, observables=["classification_error"], solver=SOLVER,
                        rtol=SOLVER_RTOL, atol=SOLVER_ATOL, jump_ts=jumps)
    lam = units.rates[units.unit_mode]
    region = tachet.phase_region(units.u0, units.vt0)
    t_c = tachet.crossing_time(units.u0, units.vt0, units.s[units.unit_mode], lam, loss)

    def staircase(t_c):
        wrong = (region <= tachet.REGION_F)[None, :] | (ts[:, None] < t_c[None, :])
        return wrong.astype(ts.dtype) @ units.p[units.unit_mode]

    R = tachet
    assert np.array_equal(np.asarray(region), [R.REGION_R] * 8 + [R.REGION_S] * 2 + [R.REGION_D, R.REGION_F])
    away = np.all(np.abs(np.asarray(ts)[:, None] / np.asarray(t_c)[None, :8] - 1) > 1e-6, axis=1)
    sim = np.asarray(sol.observables["classification_error"])
    assert np.array_equal(sim[away], np.asarray(staircase(t_c))[away])  # exact
    other = 2.0 * t_c if loss == "hinge" else 0.5 * t_c  # the other loss's clock
    assert np.max(np.abs(sim - np.asarray(staircase(other)))) > 0.05
    # Proper init: the off-diagonal first-layer entries get exactly zero gradient (1e-12: round-off).
    w0, w1 = np.asarray(flow.params0.w), np.asarray(sol.params_final.w)
    off = ~np.eye(12, dtype=bool)
    assert np.max(np.abs(w1[off] - w0[off])) <= 1e-12


def _phase_map(n):
    grid = jnp.linspace(-1.0, 1.0, n)
    U, V = jnp.meshgrid(grid + 0.0071, grid + 0.013, indexing="ij")
    u0, v0 = U.ravel(), V.ravel()
    T = 100.0
    z = tachet.phase_map_margins(u0, v0, T)
    region = tachet.phase_region(u0, v0)
    t_c = tachet.crossing_time(u0, v0, 1.0, 1.0, "logistic")
    learned = (region == tachet.REGION_S) | ((region == tachet.REGION_R) & (t_c < T))
    assert np.array_equal(np.asarray(z > 0), np.asarray(learned))
    assert np.all(np.asarray(z)[np.asarray(region <= tachet.REGION_F)] == 0.0)  # dead units: f = 0 exactly
    assert 0 < int(jnp.sum(region == tachet.REGION_F)) and 0 < int(jnp.sum(region == tachet.REGION_R))


def test_phase_map_matches_simulation():
    """One vmapped solve over 16 × 16 inits (u₀, ṽ₀) of a single unit on one mode (s = p = 1, CE):
    the final margin is > 0 exactly where the regions predict learning (S, or R with t_c < T).
    The notebook's small mode draws this grid (one compile)."""
    _phase_map(16)


@pytest.mark.slow
def test_phase_map_matches_simulation_on_64x64_grid():
    _phase_map(64)


# --- gradient starvation ------------------------------------------------------------------------------

def test_R8c_rare_feature_always_lags():
    # d(w₁ − w₂)/dt = (1−q)σ(−m₁) > 0 (s₁ = s₂ = 1): feature 2 falls further behind at every step.
    flow = gf.GradientFlow(tachet.ReLUChain((), jnp.array([[0.05, -0.1, 0.3]])), gf.logistic,
                           tachet.cooccurring_features((1.0, 1.0), (1, 3), 3))
    ts = jnp.concatenate([jnp.zeros(1), jnp.logspace(-2, 4, 30)])  # the row's grid: one compile
    w = np.asarray(tachet.FrequencyStarvation.from_flow(flow).evaluate(ts)["weights"])
    assert np.all(np.diff(w[:, 0] - w[:, 1]) > 0)
    assert np.all(w[:, 2] == 0.3)  # the coordinate outside the features never moves


S1, S2 = 2.0, 0.5
PROBE = np.array([[0.0, S2], [S1, 0.0]])  # single-feature inputs s₂e₂ and s₁e₁


def probe_outputs(t, params, flow):
    return jax.vmap(flow.model(params))(jnp.asarray(PROBE))


def test_T9b_starvation_two_layer():
    """Two-layer ReLU, one sample x = s₁e₁ + s₂e₂, all units along x̂: one mode of norm |x| (the
    balanced CE clock), and the single-feature responses f(s_k e_k) = (s_k²/|x|²) z(t)."""
    s1, s2 = S1, S2
    data = tachet.cooccurring_features((s1, s2), (1, 0), 2)
    xhat = jnp.array([s1, s2]) / jnp.hypot(s1, s2)
    alpha = jnp.array([0.2, 0.1, 0.15])
    model = gf.TwoLayer(2, 3, "relu", w=alpha[:, None] * xhat[None, :], a=alpha[None, :])
    flow = gf.GradientFlow(model, gf.logistic, data)
    theory = tachet.TwoLayerModesCE.from_flow(flow)
    ts = jnp.logspace(-2, 6, 30)
    sol = gf.solve_flow(flow, ts[-1], ts=ts, observables={"margins": "margins", "probe": probe_outputs},
                        solver=SOLVER, rtol=SOLVER_RTOL, atol=SOLVER_ATOL)
    z = theory.evaluate(ts)["margins"][:, 0]
    assert float(gf.relative_error(sol.observables["margins"][:, 0], z)) < TOL
    response = jnp.stack([s2**2, s1**2])[None, :] / (s1**2 + s2**2) * z[:, None]
    assert float(gf.relative_error(sol.observables["probe"][:, :, 0], response)) < TOL
    # Control: feature 2 trained alone would follow the balanced form with s = s₂, z₀ = s₂ Σα².
    alone = tachet.BalancedCEMargins(jnp.array([s2 * float(jnp.sum(alpha**2))]), jnp.array([s2]), jnp.array([1.0]),
                                     jnp.array([0]), 1.0).mode_margins(ts)[:, 0]
    assert float(gf.relative_error(sol.observables["probe"][:, 0, 0], alone)) > 100 * TOL


# --- the public functions under transforms; refusals ------------------------------------------------

U0, VT0 = jnp.array([0.1, 0.1, 0.2, -0.1]), jnp.array([-0.05, -0.12, 0.1, 0.3])  # R, F, S, D

FUNCTIONS = {
    "phase_region": lambda u, v: tachet.phase_region(u, v),
    "crossing_time hinge": lambda u, v: tachet.crossing_time(u, v, 1.0, 0.5, "hinge"),
    "crossing_time logistic": lambda u, v: tachet.crossing_time(u, v, 1.0, 0.5, "logistic"),
    "death_time hinge": lambda u, v: tachet.death_time(u, v, 1.0, 0.5, "hinge"),
    "death_time logistic": lambda u, v: tachet.death_time(u, v, 1.0, 0.5, "logistic"),
    "clock_delay": lambda u, v: tachet.clock_delay(jnp.abs(u), v, 1.0, 0.5, 0.3),
    "ensemble_error": lambda u, v: tachet.ensemble_error(u + v, "logistic", conditional=True),
}


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_functions_plain_jit_vmap(name):
    fn = FUNCTIONS[name]
    plain = np.asarray(fn(U0, VT0))
    one = np.asarray([fn(u, v) for u, v in zip(U0, VT0)])  # scalars, one by one
    for label, got in (("scalars", one), ("jit", jax.jit(fn)(U0, VT0)), ("vmap", jax.vmap(fn)(U0, VT0)),
                       ("jit∘vmap", jax.jit(jax.vmap(fn))(U0, VT0))):
        np.testing.assert_allclose(np.asarray(got), plain, rtol=1e-13, err_msg=label)


def test_theory_methods_under_jit_and_vmap():
    _, theory, _ = hinge_problem()
    ts = jnp.array([1.0, 10.0, 100.0])
    stacked = jax.tree_util.tree_map(lambda x: jnp.stack([x, x]) if eqx.is_array(x) else x, theory)
    for method in (lambda th: th.stop_times(), lambda th: th.kink_times(), lambda th: th.death_times()):
        plain = np.asarray(method(theory))
        np.testing.assert_allclose(eqx.filter_jit(method)(theory), plain, rtol=1e-13)
        np.testing.assert_allclose(eqx.filter_vmap(method)(stacked)[1], plain, rtol=1e-13)
        np.testing.assert_allclose(eqx.filter_jit(eqx.filter_vmap(method))(stacked)[0], plain, rtol=1e-13)
    b = balanced(0.01)
    b2 = jax.tree_util.tree_map(lambda x: jnp.stack([x, x]) if eqx.is_array(x) else x, b)
    for method in (lambda th: th.mode_margins(ts), lambda th: th.late_time_margins(ts)):
        plain = np.asarray(method(b))
        np.testing.assert_allclose(eqx.filter_jit(method)(b), plain, rtol=1e-13)
        np.testing.assert_allclose(eqx.filter_jit(eqx.filter_vmap(method))(b2)[0], plain, rtol=1e-13)


def test_refusals_outside_the_regime():
    with pytest.raises(ValueError, match=re.escape("`from_flow` must be called outside jit/vmap")):
        jax.jit(lambda f: tachet.TwoLayerModes.from_flow(f).units.s)(small_flow(E2, (1.0, -1.0), W2))
    with pytest.raises(ValueError, match=re.escape("`loss` must be 'hinge' or 'logistic'; got 'mse'")):
        tachet.crossing_time(0.1, -0.05, 1.0, 0.5, "mse")


def test_notebook_runs_small(tmp_path):
    from helpers import REPO, run_notebook

    ns = run_notebook(REPO / "notebooks" / "tachet2018.ipynb", GFLOW_OUT=str(tmp_path))
    assert ns["SMALL"] and all(p.exists() for p in ns["paths"]) and len(ns["paths"]) == 2


def test_data_helpers_bad_input():
    orthogonal_features, proper_init = tachet.orthogonal_features, tachet.proper_init
    with pytest.raises(ValueError, match=re.escape("`norms` must be > 0")):
        orthogonal_features((1.0, -1.0), (1, 1), (1.0, 1.0), 2)
    with pytest.raises(ValueError, match=re.escape("`counts` must list 2 integers ≥ 1")):
        orthogonal_features((1.0, 1.0), (1,), (1.0, 1.0), 2)
    with pytest.raises(ValueError, match=re.escape("`labels` must hold 2 labels ±1")):
        orthogonal_features((1.0, 1.0), (1, 1), (1.0, 0.5), 2)
    with pytest.raises(ValueError, match=re.escape("`d` must be an integer ≥ K = 2")):
        orthogonal_features((1.0, 1.0), (1, 1), (1.0, 1.0), 1)
    with pytest.raises(ValueError, match=re.escape("`off_diagonal` must be > 0")):
        proper_init(jnp.ones(2), jnp.ones(2), jnp.ones(2), 2, off_diagonal=0.0)
    with pytest.raises(ValueError, match=re.escape("`counts` must be (n_both ≥ 1, n_first_only ≥ 0)")):
        tachet.cooccurring_features((1.0, 1.0), (0, 3), 2)
    data = orthogonal_features((1.0, 2.0), (2, 1), (1.0, -1.0), 3)
    assert np.array_equal(np.asarray(data.x), [[1, 0, 0], [1, 0, 0], [0, 2, 0]])
    assert np.array_equal(np.asarray(data.y)[:, 0], [1, 1, -1])
