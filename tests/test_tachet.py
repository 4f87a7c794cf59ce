"""Tachet des Combes et al. 2018 (shared/theory/tachet.md): theory vs float64 simulation.

Every comparison solves the finite network with Dopri8 at rtol 1e-10 / atol 1e-12. The per-mode
theories are exact, so the error is the solver's global error: smooth flows accumulate 10–100 ×
rtol over several decades of log-time, hence the 1e-6 tolerance (≥ 30× headroom, tachet.md §3).
The hinge kinks (stop at z = 1, unit death at u = 0) are passed as `jump_ts`, so the solver never
steps across a discontinuity of the vector field.
"""

import re

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import SOLVER_ATOL, SOLVER_RTOL

import gflow as gf
from gflow._data.tachet import orthogonal_features, proper_init
from gflow._special import wrightomega as gf_wrightomega
from gflow._theory.tachet import (
    REGION_D,
    REGION_F,
    REGION_R,
    REGION_S,
    BalancedCEMargins,
    ChainModes,
    SoftmaxModes,
    FrequencyStarvation,
    LinearCEMargins,
    TwoLayerModes,
    TwoLayerModesCE,
    clock_delay,
    crossing_time,
    death_time,
    ensemble_error,
    phase_region,
)

TOL = 1e-6
SOLVER = diffrax.Dopri8()
S4, COUNTS4, LABELS4 = (1.0, 2.0, 0.5, 1.5), (1, 2, 3, 2), (1.0, -1.0, 1.0, -1.0)


def mode_flow(u0, vt0, loss, *, norms=S4, counts=COUNTS4, labels=LABELS4, key=jr.PRNGKey(0)):
    data = orthogonal_features(norms, counts, labels, len(norms))
    w, a = proper_init(jnp.asarray(u0), jnp.asarray(vt0), jnp.asarray(labels), len(norms), key=key)
    model = gf.TwoLayer(len(norms), len(norms), "relu", w=w, a=a)
    return gf.GradientFlow(model, loss, data)


def simulate(flow, theory, ts, jump_ts=None, **kw):
    return gf.solve_flow(flow, ts[-1], ts=ts, observables=theory.simulation_observables(), solver=SOLVER,
                         rtol=SOLVER_RTOL, atol=SOLVER_ATOL, jump_ts=jump_ts, max_steps=200_000, **kw)


def finite(x):
    x = np.asarray(x)
    return jnp.asarray(x[np.isfinite(x)])


# --- T1, T2: hinge closed form -------------------------------------------------------------------

@pytest.fixture(scope="module")
def hinge_case():
    flow = mode_flow((0.1, 0.1, 0.2, 0.05), (0.1, 0.05, -0.1, 0.15), gf.hinge)
    theory = TwoLayerModes.from_flow(flow)
    ts = jnp.logspace(-3, 3, 61)
    sol = simulate(flow, theory, ts, jump_ts=finite(theory.kink_times()), save_params=False)
    return flow, theory, sol


def test_T1_off_diagonal_frozen(hinge_case):
    flow, theory, sol = hinge_case
    w0, w1 = np.asarray(flow.params0.w), np.asarray(sol.params_final.w)
    off = ~np.eye(4, dtype=bool)
    assert np.max(np.abs(w1[off] - w0[off])) <= 1e-12


def test_T2_hinge_closed_form(hinge_case):
    flow, theory, sol = hinge_case
    err = gf.compare(theory, sol)
    for name in ("margins", "first_layer_strengths", "output_weights", "loss"):
        assert float(err[name]) < TOL, (name, err)
    # The closed-form stop time t_h = ln X/(2λ), X = [2/s + √(4/s² + A²B²)]/A² (one unit per mode).
    s, lam = theory.s, theory.rates
    A, B = theory.u0 + theory.vt0, theory.u0 - theory.vt0
    X = (2 / s + jnp.sqrt(4 / s**2 + A**2 * B**2)) / A**2
    assert np.allclose(theory.stop_times(), jnp.log(X) / (2 * lam), rtol=1e-13)
    # Negative control: frequencies ignored (p = 1/4).
    wrong = eqx.tree_at(lambda t: t.p, theory, jnp.full(4, 0.25))
    assert float(gf.compare(wrong, sol, ["margins"])["margins"]) > 100 * TOL


# --- T4: cross-entropy, general init (reduced clock ODE) ----------------------------------------

def test_T4_cross_entropy_general_init():
    flow = mode_flow((0.1, 0.3, 0.2, 0.05), (-0.04, 0.05, -0.15, 0.2), gf.logistic)
    theory = TwoLayerModesCE.from_flow(flow)
    ts = jnp.geomspace(6e-3, 9e7, 60)
    sol = simulate(flow, theory.modes, ts)
    predicted = theory.evaluate(ts, solver=SOLVER, rtol=1e-13, atol=1e-14)
    for name in ("margins", "first_layer_strengths", "output_weights"):
        err = gf.relative_error(sol.observables[name], predicted[name])
        assert float(err) < TOL, (name, float(err))
    # Negative control: ṽ0 × 0.98.
    wrong = eqx.tree_at(lambda t: t.modes.vt0, theory, theory.modes.vt0 * 0.98)
    err = gf.relative_error(sol.observables["margins"], wrong.evaluate(ts, solver=SOLVER, rtol=1e-12, atol=1e-14)["margins"])
    assert float(err) > 100 * TOL


# --- T3, T3b: balanced cross-entropy, Ei implicit form and W₋₁ asymptotics -----------------------

def test_T3_balanced_ei_form():
    u0 = jnp.array([0.1, 0.1, 0.2, 0.05])
    flow = mode_flow(u0, u0, gf.logistic)
    theory = BalancedCEMargins.from_flow(flow)
    ts = jnp.logspace(-2, 5, 50)
    sol = gf.solve_flow(flow, ts[-1], ts=ts, observables=["margins", "loss"], solver=SOLVER,
                        rtol=SOLVER_RTOL, atol=SOLVER_ATOL)
    err = gf.compare(theory, sol)
    assert float(err["margins"]) < TOL and float(err["loss"]) < TOL, err
    wrong = BalancedCEMargins.from_flow(mode_flow(u0 * 1.01, u0 * 1.01, gf.logistic))
    assert float(gf.compare(wrong, sol, ["margins"])["margins"]) > 100 * TOL  # table: 2e-2


def test_R6_depth_late_time_asymptotics():
    """R6: the late-time CE form z ≈ −αW₋₁(−(Ct)^{−1/α}/α) of a depth-3 chain approaches the exact
    t(z) quadrature (itself checked against simulation in T8); the depth-2 form (α = 1) does not."""
    kw = dict(p=jnp.array([0.25]), s=jnp.array([2.0]), mode_of_sample=jnp.array([0]), time_scale=jnp.asarray(1.0))
    theory = ChainModes(z0=jnp.array([0.01]), depth=3, loss="logistic", **kw)
    ts = jnp.array([1e3, 1e6, 1e12])
    exact = theory.mode_margins(ts)[:, 0]
    late = theory.late_time_margins(ts)[:, 0]
    rel = np.abs(np.asarray(late / exact) - 1)
    assert np.all(np.diff(rel) < 0) and rel[-1] < 3e-3  # measured 2.2e-2, 5.1e-3, 1.4e-3
    wrong = ChainModes(z0=jnp.array([0.01]), depth=2, loss="logistic", **kw).late_time_margins(ts)[:, 0]
    assert abs(float(wrong[-1] / exact[-1]) - 1) > 10 * rel[-1]  # measured 4.1e-2


def test_T3b_lambert_asymptotics_improve():
    theory = BalancedCEMargins(jnp.array([0.01]), jnp.array([0.125]), jnp.array([1.0]), jnp.array([0]),
                               jnp.asarray(1.0))
    ts = jnp.array([1e2, 1e3, 1e5, 1e12])
    exact = theory.mode_margins(ts)[:, 0]
    first = np.abs(theory.late_time_margins(ts, refined=False)[:, 0] / exact - 1)
    second = np.abs(theory.late_time_margins(ts)[:, 0] / exact - 1)
    assert np.all(np.diff(first) < 0) and np.all(np.diff(second) < 0)
    assert second[-1] < 1e-3 and np.all(second < first)
    assert np.all(exact[exact > 12] > 0) and second[np.asarray(exact) > 12].max() < 1e-3


# --- T5, T6: crossing times, the failed region -------------------------------------------------

@pytest.fixture(scope="module", params=["hinge", "logistic"])
def twin_case(request):
    loss = request.param
    u0 = jnp.array([0.1, 0.1])
    vt0 = jnp.array([-0.98, -1.02]) * u0  # mode 0 in R, mode 1 in F
    flow = mode_flow(u0, vt0, getattr(gf, loss), norms=(1.0, 1.0), counts=(1, 1), labels=(1.0, 1.0))
    lam = jnp.array([0.5, 0.5])
    t_c = float(crossing_time(u0[0], vt0[0], 1.0, lam[0], loss))
    t_d = float(death_time(u0[1], vt0[1], 1.0, lam[1], loss))
    control = 1.1 * t_c if loss == "hinge" else 0.5 * float(jnp.log((u0[0] - vt0[0]) / (u0[0] + vt0[0])) / lam[0])
    before = jnp.geomspace(1e-2, 0.99 * t_d, 30)
    ts = jnp.sort(jnp.concatenate([before, jnp.array([t_c, control, t_d * 1.5, 1e4])]))
    theory = (TwoLayerModes if loss == "hinge" else TwoLayerModesCE).from_flow(flow)
    modes = theory if loss == "hinge" else theory.modes
    jumps = finite(modes.kink_times()) if loss == "hinge" else jnp.array([t_d])
    sol = simulate(flow, modes, ts, jump_ts=jumps)
    return loss, theory, modes, sol, ts, dict(t_c=t_c, t_d=t_d, control=control)


def test_T5_crossing_time(twin_case):
    loss, theory, modes, sol, ts, times = twin_case
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
        t_h = float(crossing_time(0.1, -0.098, 1.0, 0.5, "hinge"))
        assert t_h < times["t_c"] < 2 * t_h


def test_R7_clock_delay(twin_case):
    """R7: CE follows hinge's weight-space path on a slower clock. The delay at the crossing point
    τ_c must equal the gap between the two simulated crossing times (each checked against the
    simulation in T5 to 1e-8), and at small margins CE runs at exactly half speed."""
    loss, theory, modes, sol, ts, times = twin_case
    u0, vt0, lam = 0.1, -0.098, 0.5
    tau_c = 0.5 * np.log((u0 - vt0) / (u0 + vt0))
    gap = float(crossing_time(u0, vt0, 1.0, lam, "logistic") - crossing_time(u0, vt0, 1.0, lam, "hinge"))
    assert abs(float(clock_delay(u0, vt0, 1.0, lam, tau_c)) - gap) <= 1e-12 * gap
    taus = jnp.linspace(0.0, tau_c, 6)
    assert bool(jnp.all(jnp.diff(clock_delay(u0, vt0, 1.0, lam, taus)) > 0))
    # Tiny init: z ≈ 0 along the path, so the delay is t_H = τ/λ up to (1/λ)∫z dτ; here
    # |z| ≤ (s/4)A²e² = 2.3e-8, so the deviation is ≤ 4.6e-8.
    tiny = clock_delay(1e-4, 1e-5, 1.0, lam, 1.0)
    assert abs(float(tiny) - 1.0 / lam) < 5e-8
    # Negative control: a delay computed with the wrong sign of B (a region-S start) differs by ≫ tol.
    assert abs(float(clock_delay(u0, -vt0, 1.0, lam, tau_c)) - gap) > 100 * 1e-12 * gap


def test_T6_failed_region(twin_case):
    loss, theory, modes, sol, ts, times = twin_case
    before = np.asarray(ts) < times["t_d"]
    pred = modes.evaluate(ts) if loss == "hinge" else theory.evaluate(ts, solver=SOLVER, rtol=1e-13, atol=1e-14)
    u_sim = np.asarray(sol.observables["first_layer_strengths"])[before, 1]
    u_th = np.asarray(pred["first_layer_strengths"])[before, 1]
    assert np.max(np.abs(u_sim - u_th) / np.abs(u_th)) < TOL
    z_final = np.asarray(sol.observables["margins"])[-1]
    assert abs(z_final[1]) < 1e-8  # dead: f = 0 on the mode
    assert np.all(np.abs(np.asarray(sol.observables["first_layer_strengths"])[np.asarray(ts) > times["t_d"], 1]) < 1e-10)
    twin = 1.0 if loss == "hinge" else 11.55
    assert abs(z_final[0] - twin) < (1e-6 if loss == "hinge" else 1e-2)
    # Negative control: the twin's margin is far from 0.
    assert abs(z_final[0]) > 100 * 1e-8


def test_regions_and_ensemble():
    u = jnp.array([-0.1, 0.1, 0.1, 0.1, 0.0])
    v = jnp.array([0.3, -0.2, -0.05, 0.2, 0.1])
    assert phase_region(u, v).tolist() == [REGION_D, REGION_F, REGION_R, REGION_S, REGION_D]
    # Monte Carlo of the isotropic-Gaussian ensemble (hinge): P(wrong at t).
    key = jr.PRNGKey(1)
    u0, v0 = jr.normal(key, (2, 200_000))
    lam_t = jnp.array([0.05, 0.3, 1.0, 3.0])
    tc = crossing_time(u0, v0, 1.0, 1.0, "hinge")
    region = phase_region(u0, v0)
    wrong = jnp.mean((region <= REGION_F)[None, :] | (tc[None, :] > lam_t[:, None]), axis=1)
    err = np.max(np.abs(np.asarray(wrong) / np.asarray(ensemble_error(lam_t)) - 1))
    assert err < 1e-2
    assert np.max(np.abs(np.asarray(wrong) / np.asarray(ensemble_error(lam_t / 2)) - 1)) > 1e-2


# --- T7, T9a: linear classifier (Wright omega), gradient starvation ------------------------------

def _linear_weights(t, params, flow):
    return flow.model(params).v[0]


def test_T7_linear_wright_omega():
    data = orthogonal_features(S4, COUNTS4, LABELS4, 4)
    _, v = gf.proper_chain_init(jnp.array([[0.1, -0.2, 0.3, 0.0]]), jnp.asarray(LABELS4), 4)
    flow = gf.GradientFlow(gf.ReLUChain((), v), gf.logistic, data)
    theory = LinearCEMargins.from_flow(flow)
    ts = jnp.logspace(-3, 6, 40)
    sol = gf.solve_flow(flow, ts[-1], ts=ts, observables={"margins": "margins", "weights": _linear_weights},
                        solver=SOLVER, rtol=SOLVER_RTOL, atol=SOLVER_ATOL)
    err = gf.compare(theory, sol)
    assert float(err["margins"]) < TOL and float(err["weights"]) < TOL, err
    wrong = eqx.tree_at(lambda t: t.s, theory, jnp.sqrt(theory.s))  # rate p·s instead of p·s²
    assert float(gf.compare(wrong, sol, ["margins"])["margins"]) > 100 * TOL


def test_T9a_starvation_linear():
    data = gf.cooccurring_features((2.0, 0.5), (1, 0), 2)
    flow = gf.GradientFlow(gf.ReLUChain((), jnp.zeros((1, 2))), gf.logistic, data)
    theory = LinearCEMargins.from_flow(flow)
    ts = jnp.logspace(-2, 7, 40)
    sol = gf.solve_flow(flow, ts[-1], ts=ts, observables={"weights": _linear_weights}, solver=SOLVER,
                        rtol=SOLVER_RTOL, atol=SOLVER_ATOL)
    w_th = theory.evaluate(ts)["weights"]
    assert float(gf.relative_error(sol.observables["weights"], w_th)) < TOL
    # Feature 2 gets s₂²/|x|² = 1/17 of the margin; control: feature 2 trained alone (rate s₂²).
    alone = jnp.log(gf_wrightomega(0.25 * ts + 1.0)) / 0.5  # w₂ with z₂ = 0.5 w₂ alone
    assert float(gf.relative_error(sol.observables["weights"][:, 1], alone)) > 100 * TOL


# --- T11: the 0-1 error staircase; the phase map on a 64×64 grid ---------------------------------

def staircase_flow(loss):
    key = jr.PRNGKey(7)
    k1, k2, k3, k4, k5 = jr.split(key, 5)
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
    data = orthogonal_features(tuple(float(x) for x in s), counts, labels, K)
    w, a = proper_init(u0, vt0, labels, K, key=jr.PRNGKey(8))
    return gf.GradientFlow(gf.TwoLayer(K, K, "relu", w=w, a=a), loss, data)


@pytest.mark.parametrize("loss", ["hinge", "logistic"])
def test_T11_error_staircase(loss):
    flow = staircase_flow(getattr(gf, loss))
    modes = TwoLayerModes.from_flow(flow) if loss == "hinge" else TwoLayerModesCE.from_flow(flow).modes
    ts = jnp.logspace(-2, 4, 300)
    jumps = finite(modes.kink_times()) if loss == "hinge" else None
    sol = gf.solve_flow(flow, ts[-1], ts=ts, observables=["classification_error"], solver=SOLVER,
                        rtol=SOLVER_RTOL, atol=SOLVER_ATOL, jump_ts=jumps)
    lam = modes.rates[modes.unit_mode]
    s_unit = modes.s[modes.unit_mode]
    p_unit = modes.p[modes.unit_mode]
    region = phase_region(modes.u0, modes.vt0)
    t_c = crossing_time(modes.u0, modes.vt0, s_unit, lam, loss)

    def staircase(t_c):
        wrong = (region <= REGION_F)[None, :] | (ts[:, None] < t_c[None, :])
        return wrong.astype(ts.dtype) @ p_unit

    assert np.array_equal(np.asarray(region), [REGION_R] * 8 + [REGION_S] * 2 + [REGION_D, REGION_F])
    away = np.all(np.abs(np.asarray(ts)[:, None] / np.asarray(t_c)[None, :8] - 1) > 1e-6, axis=1)
    sim = np.asarray(sol.observables["classification_error"])
    assert np.array_equal(sim[away], np.asarray(staircase(t_c))[away])  # exact
    other = 2.0 * t_c if loss == "hinge" else 0.5 * t_c  # the other loss's clock
    assert np.max(np.abs(sim - np.asarray(staircase(other)))) > 0.05


def test_phase_map_matches_simulation_on_64x64_grid():
    """One vmapped solve over 4096 inits (u₀, ṽ₀) of a single unit on one mode (s = p = 1, CE):
    the final margin is > 0 exactly where R4/R5 predict learning (S, or R with t_c < T)."""
    grid = jnp.linspace(-1.0, 1.0, 64)
    U, V = jnp.meshgrid(grid + 0.0071, grid + 0.013, indexing="ij")
    data = orthogonal_features((1.0,), (1,), (1.0,), 1)
    T = 100.0

    def final_margin(u0, v0):
        model = gf.TwoLayer(1, 1, "relu", w=u0.reshape(1, 1), a=v0.reshape(1, 1))
        flow = gf.GradientFlow(model, gf.logistic, data)
        sol = gf.solve_flow(flow, T, ts=jnp.array([T]), observables=["margins"], rtol=1e-8, atol=1e-10)
        return sol.observables["margins"][-1, 0]

    z = jax.jit(jax.vmap(final_margin))(U.ravel(), V.ravel())
    region = phase_region(U.ravel(), V.ravel())
    t_c = crossing_time(U.ravel(), V.ravel(), 1.0, 1.0, "logistic")
    learned = (region == REGION_S) | ((region == REGION_R) & (t_c < T))
    assert np.array_equal(np.asarray(z > 0), np.asarray(learned))
    assert np.all(np.asarray(z)[np.asarray(region <= REGION_F)] == 0.0)  # dead units: f = 0 exactly
    assert 0 < int(jnp.sum(region == REGION_F)) and 0 < int(jnp.sum(region == REGION_R))


# --- Regime errors (R10) and transforms ------------------------------------------------------------

def _flow(x, y, w, a, loss=gf.hinge, **kw):
    x, y = jnp.asarray(x), jnp.asarray(y)
    model = gf.TwoLayer(x.shape[1], jnp.asarray(w).shape[0], "relu", w=jnp.asarray(w), a=jnp.asarray(a), **kw)
    return gf.GradientFlow(model, loss, gf.Dataset(x, y))


W2 = [[0.1, -0.2], [-0.3, 0.2]]
A2 = [[0.1, 0.1]]


@pytest.mark.parametrize("x, y, w, kw, match", [
    ([[1.0, 0.0], [0.6, 0.8]], [1.0, 1.0], W2, {}, "samples 0 and 1 have cosine 0.6"),
    ([[1.0, 1.0], [1.0, -1.0]], [1.0, 1.0], W2, {"features": jnp.eye(2)}, "sample 0 carries features 0 and 1"),
    ([[1.0, 0.0], [0.0, 2.0]], [1.0, 1.0], [[0.1, 0.2], [-0.3, 0.2]], {}, "unit 0 is positive on modes 0 and 1"),
    ([[1.0, 0.0], [2.0, 0.0]], [1.0, 1.0], W2, {}, "samples 0 and 1 of mode 0 have norms 1 and 2"),
    ([[1.0, 0.0], [1.0, 0.0]], [1.0, -1.0], W2, {}, "samples 0 and 1 of mode 0 have labels +1 and -1"),
])
def test_regime_errors(x, y, w, kw, match):
    flow = _flow(x, y, w, A2)
    with pytest.raises(ValueError, match=re.escape(match)):
        TwoLayerModes.from_flow(flow, **kw)


def test_regime_errors_bias_balance_and_jit():
    x, y = [[1.0, 0.0], [0.0, 2.0]], [1.0, -1.0]
    with pytest.raises(ValueError, match="TwoLayerModes assumes a network without biases"):
        TwoLayerModes.from_flow(_flow(x, y, W2, A2, bias=True))
    with pytest.raises(ValueError, match="unit 0 has u0 = 0.1, ṽ0 = 0.2"):
        BalancedCEMargins.from_flow(_flow(x, [1.0, 1.0], W2, [[0.2, 0.2]], loss=gf.logistic))
    with pytest.raises(ValueError, match="TwoLayerModes assumes the loss hinge"):
        TwoLayerModes.from_flow(_flow(x, y, W2, A2, loss=gf.logistic))
    flow = _flow(x, y, W2, A2)
    with pytest.raises(ValueError, match="`from_flow` must be called outside jit/vmap"):
        jax.jit(lambda f: TwoLayerModes.from_flow(f).s)(flow)


def test_theories_under_jit_and_vmap(hinge_case):
    _, theory, _ = hinge_case
    ts = jnp.logspace(-2, 2, 7)
    plain = theory.evaluate(ts)["margins"]
    assert np.allclose(jax.jit(lambda th: th.evaluate(ts)["margins"])(theory), plain, rtol=1e-13)
    batch = jax.tree_util.tree_map(lambda a: jnp.stack([a, a]), theory)
    stacked = jax.vmap(lambda th: th.evaluate(ts)["margins"])(batch)
    assert np.allclose(stacked[1], plain, rtol=1e-13)
    one = crossing_time(0.1, -0.05, 1.0, 0.5, "logistic")
    many = jax.jit(jax.vmap(lambda v: crossing_time(0.1, v, 1.0, 0.5, "logistic")))(jnp.array([-0.05, -0.02]))
    assert np.isclose(many[0], one, rtol=1e-14)


def _first_two_weights(t, params, flow):
    return flow.model(params).v[0, :2]


def test_R8c_frequency_starvation_reduced_ode():
    # The reduced ODE is exact for this flow: agreement at solver tolerance (both at rtol 1e-10).
    data = gf.cooccurring_features((1.0, 1.0), (1, 3), 3)  # q = 1/4
    flow = gf.GradientFlow(gf.ReLUChain((), jnp.array([[0.05, -0.1, 0.3]])), gf.logistic, data)
    theory = FrequencyStarvation.from_flow(flow)
    ts = jnp.logspace(-2, 4, 30)
    sol = gf.solve_flow(flow, ts[-1], ts=ts, observables={"weights": _first_two_weights}, solver=SOLVER,
                        rtol=SOLVER_RTOL, atol=SOLVER_ATOL)
    pred = theory.evaluate(ts, solver=SOLVER, rtol=1e-12, atol=1e-14)
    assert float(gf.relative_error(sol.observables["weights"], pred["weights"])) < TOL
    w = np.asarray(pred["weights"])
    assert np.all(np.diff(w[:, 0] - w[:, 1]) > 0)  # feature 2 always falls further behind
    wrong = eqx.tree_at(lambda t: t.q, theory, jnp.asarray(0.5))
    err = gf.relative_error(sol.observables["weights"], wrong.evaluate(ts, solver=SOLVER, rtol=1e-12, atol=1e-14)["weights"])
    assert float(err) > 100 * TOL
    with pytest.raises(ValueError, match="sample 1 is"):
        FrequencyStarvation.from_flow(gf.GradientFlow(gf.ReLUChain((), jnp.zeros((1, 3))), gf.logistic,
                                                      orthogonal_features((1.0, 1.0), (1, 1), (1.0, 1.0), 3)))


def test_T9b_starvation_two_layer():
    s1, s2 = 2.0, 0.5
    data = gf.cooccurring_features((s1, s2), (1, 0), 2)
    xhat = jnp.array([s1, s2]) / jnp.hypot(s1, s2)
    alpha = jnp.array([0.2, 0.1, 0.15])
    model = gf.TwoLayer(2, 3, "relu", w=alpha[:, None] * xhat[None, :], a=alpha[None, :])
    flow = gf.GradientFlow(model, gf.logistic, data)
    theory = TwoLayerModesCE.from_flow(flow)
    ts = jnp.logspace(-2, 6, 30)
    probe = jnp.array([[0.0, s2], [s1, 0.0]])
    sol = gf.solve_flow(flow, ts[-1], ts=ts, observables={"margins": "margins", "probe": gf.outputs_at(probe)},
                        solver=SOLVER, rtol=SOLVER_RTOL, atol=SOLVER_ATOL)
    z = theory.evaluate(ts, solver=SOLVER, rtol=1e-12, atol=1e-14)["margins"][:, 0]
    assert float(gf.relative_error(sol.observables["margins"][:, 0], z)) < TOL
    response = jnp.stack([s2**2, s1**2])[None, :] / (s1**2 + s2**2) * z[:, None]
    assert float(gf.relative_error(sol.observables["probe"][:, :, 0], response)) < TOL
    # Control: feature 2 trained alone would follow R3a with s = s₂ (balanced, z₀ = s₂ Σα²).
    alone = BalancedCEMargins(jnp.array([s2 * float(jnp.sum(alpha**2))]), jnp.array([s2]), jnp.array([1.0]),
                              jnp.array([0]), jnp.asarray(1.0)).mode_margins(ts)[:, 0]
    assert float(gf.relative_error(sol.observables["probe"][:, 0, 0], alone)) > 100 * TOL


def test_notebook_runs_small(tmp_path):
    from helpers import REPO, run_notebook

    ns = run_notebook(REPO / "notebooks" / "tachet2018.ipynb", GFLOW_OUT=str(tmp_path))
    assert ns["SMALL"] and all(p.exists() for p in ns["paths"]) and len(ns["paths"]) == 2


@pytest.mark.parametrize("loss, t0, t1", [("hinge", 1e-2, 1e3), ("logistic", 11.0, 5e4)])
def test_T8_depth_three(loss, t0, t1):
    def flow_for(a0):
        data = orthogonal_features((1.0, 2.0), (1, 3), (1.0, -1.0), 2)
        weights, v = gf.proper_chain_init(jnp.stack([a0] * 3), jnp.array([1.0, -1.0]), 2)
        return gf.GradientFlow(gf.ReLUChain(weights, v), getattr(gf, loss), data)

    a0 = jnp.array([0.2, 0.1])
    flow = flow_for(a0)
    theory = ChainModes.from_flow(flow)
    ts = jnp.geomspace(t0, t1, 30)
    jumps = None
    if loss == "hinge":  # the stop times t_h = (z0^{−1/3} − 1)/(p s^{2/3})
        jumps = (theory.z0 ** (-1 / 3) - 1) / (theory.p * theory.s ** (2 / 3))
    sol = gf.solve_flow(flow, t1, ts=ts, observables=["margins"], solver=SOLVER, rtol=SOLVER_RTOL,
                        atol=SOLVER_ATOL, jump_ts=jumps)
    assert float(gf.compare(theory, sol, ["margins"])["margins"]) < TOL
    wrong = ChainModes.from_flow(flow_for(a0 * 1.01))
    assert float(gf.compare(wrong, sol, ["margins"])["margins"]) > 100 * TOL


def _logit_gaps(t, params, flow):
    F = jax.vmap(flow.model(params))(flow.data.x)
    c = jnp.argmax(flow.data.y, axis=1)
    other = (c + 1) % F.shape[1]
    return jnp.take_along_axis(F, c[:, None], 1)[:, 0] - jnp.take_along_axis(F, other[:, None], 1)[:, 0]


def test_T10_softmax_three_classes():
    K, s = 3, 1.5
    counts = (1, 2, 3)
    c = np.repeat(np.arange(K), counts)
    x = jnp.asarray(s * np.eye(K)[c])
    y = jnp.asarray(np.eye(K)[c])
    u0 = jnp.array([0.1, 0.2, 0.15])
    w = jnp.where(jnp.eye(K, dtype=bool), jnp.diag(u0), -0.3)
    a = jnp.diag(jnp.sqrt(K / (K - 1)) * u0)  # b0 = 0, a0 = m0 = √κ u0 (balanced)
    flow = gf.GradientFlow(gf.TwoLayer(K, K, "relu", out_dim=K, w=w, a=a), gf.cross_entropy, gf.Dataset(x, y))
    theory = SoftmaxModes.from_flow(flow)
    ts = jnp.logspace(-2, 5, 30)
    sol = gf.solve_flow(flow, ts[-1], ts=ts, observables={"logit_gaps": _logit_gaps, "loss": "loss"},
                        solver=SOLVER, rtol=SOLVER_RTOL, atol=SOLVER_ATOL)
    err = gf.compare(theory, sol)
    assert float(err["logit_gaps"]) < TOL and float(err["loss"]) < TOL, err
    # Control: the binary formula (K = 2 in the Ei term and κ).
    binary = BalancedCEMargins(theory.z0, theory.p * theory.s, theory.p, theory.mode_of_sample, jnp.asarray(1.0))
    assert float(gf.relative_error(sol.observables["logit_gaps"], binary.evaluate(ts)["margins"])) > 100 * TOL


def test_data_helpers_bad_input():
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
        gf.cooccurring_features((1.0, 1.0), (0, 3), 2)
    data = orthogonal_features((1.0, 2.0), (2, 1), (1.0, -1.0), 3)
    assert np.array_equal(np.asarray(data.x), [[1, 0, 0], [1, 0, 0], [0, 2, 0]])
    assert np.array_equal(np.asarray(data.y)[:, 0], [1, 1, -1])
