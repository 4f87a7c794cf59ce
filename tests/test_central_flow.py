"""The central flow (Cohen, Damian et al., ICLR 2025, arXiv:2410.24206) against gradient descent
at the edge of stability, float64.

The before-the-edge agreement with gradient flow, t = 0, the transforms and the regime errors
are the THEORY_CASES row in tests/cases_central_flow.py. Here: the expansion behind the flow,
and GD on `edge_of_stability_problem()` with η = 1/S(θ0).

GD crosses the edge at k ≈ 70 and catapults (η S up to ≈ 3.3; at k = 100 three Hessian eigenvalues
are past 2/η, outside the flow's one-eigenvalue derivation) before it settles. The central flow
describes the time-averaged trajectory *after* GD has settled at the edge (the paper's §3; it does
not model the onset transient), and the catapult leaves GD on another part of the edge than the
flow from θ0 reaches: that flow joins the edge where GD does and sits on it, but its loss is off
GD's by up to 84 % over the onset and, measured over 1500 steps, by up to 29 % in k = 400–700; it
crosses GD's curve near k ≈ 800 and drifts away again (+41 % at k = 1450). So the compared phase
is defined from the GD run, not a hand-picked step: k_s = the first step after GD's arrival from
which GD's sharpness stays within 2 % of 2/η over a whole WINDOW of steps (k_s ≈ 400), and the
central flow is seeded there at GD's time average θ̄ = (θ_{k_s} + θ_{k_s+1})/2
(`from_flow(at_edge=True)`, the same formulas). The loss is compared on windows that lie wholly in
[k_s, STEPS). GD still cycles slowly about the edge there (period ≈ 150–250 steps > WINDOW, so the
window does not average them), with an amplitude that decays (about ±10 % at k_s + WINDOW/2, ±4 %
by k = 950) and that the chaotic catapult sets: a 1e-12 relative change of θ0, or XLA's
optimisation level, moves the maximum error from k_s + WINDOW/2 on between 9.5 % and 13.6 %. From
k_s + 2·WINDOW on it is 7.3–9.3 % in all eight realisations measured, within the issue's 10 %;
those two bounds are asserted. Gradient flow, seeded at the same θ̄, is off by 95 %. The negative
control, the central flow of 0.8η from the same θ̄, starts at 0.8 of its own edge 2/(0.8η) and
stays below it over the phase, so it is gradient flow there and misses by as much.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from helpers import THEORY_CASES
from jax.flatten_util import ravel_pytree

import gflow as gf
import gflow.central_flow as cf

STEPS = 1000  # GD steps: the edge at k ≈ 70, a catapult, then GD settled at the edge
WINDOW = 100  # sliding-window length (GD steps) of the time average
BAND = 0.02  # GD has settled once η S stays within 2 % of 2 over a whole window
EVERY = 10  # GD sharpness every EVERY steps
# Lanczos steps per evaluation in the theory solves: 12, 24 and 32 give the seeded phase's error to
# 1e-3; 24 costs 3.6x the time of 12 at the tests' XLA optimisation level 0 (41 s vs 11 s)
NUM_ITERATIONS = 12
SAVES = 31  # save times of each theory solve (the same count: the solves share compiles)


def _gd(flow, eta, steps):
    """Plain GD θ ← θ − ηκ∇L as one lax.scan: the loss and θ at every step (θ_0 … θ_{steps−1})
    and the sharpness every EVERY steps."""

    @jax.jit
    def run(params):
        def step(p, _):
            loss, grad = jax.value_and_grad(flow.loss_value)(p)
            return jax.tree_util.tree_map(lambda a, g: a - eta * flow.time_scale * g, p, grad), (loss, p)

        def block(p, _):
            s = cf.sharpness(0.0, p, flow, num_iterations=24)
            p, (losses, ps) = jax.lax.scan(step, p, None, length=EVERY)
            return p, (losses, ps, s)

        return jax.lax.scan(block, params, None, length=steps // EVERY)

    _, (losses, params, s) = run(flow.params0)
    params = jax.tree_util.tree_map(lambda a: a.reshape(steps, *a.shape[2:]), params)
    return np.asarray(losses).ravel(), params, np.asarray(s)


def settled_step(eta_s, window=WINDOW, band=BAND):
    """The first sampled step at or after GD's first arrival at the edge (η S ≥ 2) from which η S
    stays within `band` of 2 for a whole `window` of steps (`eta_s` sampled every EVERY steps)."""
    n = window // EVERY
    arrival = int(np.argmax(eta_s >= 2.0))
    inside = np.abs(eta_s / 2.0 - 1.0) < band
    for i in range(arrival, eta_s.size - n + 1):
        if inside[i:i + n].all():
            return i * EVERY
    raise AssertionError("GD never settles at the edge")


def _window_mean(loss, ks):
    return np.array([loss[k - WINDOW // 2: k + WINDOW // 2].mean() for k in ks])


@functools.cache
def _runs():
    flow = cf.edge_of_stability_problem()
    eta = 1.0 / float(cf.sharpness(0.0, flow.params0, flow))
    loss, params, s_gd = _gd(flow, eta, STEPS)
    k_s = settled_step(eta * s_gd)
    opts = dict(rtol=1e-5, atol=1e-9, max_steps=50_000)
    gf_opts = dict(observables=("loss", "sharpness"), rtol=1e-6, atol=1e-9, solver="explicit")  # Tsit5: one compile

    # From θ0, up to the settled step: the onset (before the edge, the join, the catapult).
    onset = np.round(np.linspace(0, k_s, SAVES)).astype(int)
    central = cf.CentralFlow.from_flow(flow, learning_rate=eta, num_iterations=NUM_ITERATIONS)
    onset_sol = central.solve(eta * onset[-1], ts=jnp.asarray(eta * onset), **opts).observables
    onset_gf = gf.solve_flow(flow, eta * onset[-1], ts=jnp.asarray(eta * onset), **gf_opts).observables

    # Seeded at GD's time average at k_s: the settled phase (windows wholly inside [k_s, STEPS)).
    mean = jax.tree_util.tree_map(lambda a: 0.5 * (a[k_s] + a[k_s + 1]), params)
    seeded = gf.GradientFlow(flow.model(mean), flow.loss, flow.data)
    phase = np.round(np.linspace(k_s + WINDOW // 2, STEPS - WINDOW // 2, SAVES)).astype(int)
    ts = jnp.asarray(eta * (phase - k_s))  # the seeded solves' clock starts at GD's step k_s
    seeded_cf = cf.CentralFlow.from_flow(seeded, learning_rate=eta, at_edge=True, num_iterations=NUM_ITERATIONS).solve(ts[-1], ts=ts, **opts)
    # negative control: the central flow of a 20 % smaller step (edge at 2/(0.8η)), same seed
    wrong = cf.CentralFlow.from_flow(seeded, learning_rate=0.8 * eta, num_iterations=NUM_ITERATIONS).solve(ts[-1], ts=ts, **opts)
    seeded_gf = gf.solve_flow(seeded, ts[-1], ts=ts, **gf_opts)
    return dict(flow=flow, eta=eta, loss=loss, s_gd=s_gd, k_s=k_s, onset=onset, onset_cf=onset_sol,
                onset_gf=onset_gf, phase=phase, avg=_window_mean(loss, phase), central=seeded_cf.observables,
                wrong=wrong.observables, gradient_flow=seeded_gf.observables)


def test_expansion_behind_the_flow():
    """The two expansions the central flow rests on, at a point θ with top eigenpair (S, u):
    the average of ∇L over the two ends θ ± x u of an oscillation is ∇L + ½x²∇S + O(x⁴), with
    ∇S = ∇(uᵀHu)|_u fixed (`sharpness_gradient`), and the average loss is L + ½x²S + O(x⁴)."""
    flow = next(c for c in THEORY_CASES if c.name == "central_flow_before_edge").make_flow()
    p = flow.params0
    s, u, grad_s = cf.sharpness_and_gradient(flow, p)
    flat, unravel = ravel_pytree(p)
    uf, gs = ravel_pytree(u)[0], ravel_pytree(grad_s)[0]
    g0 = ravel_pytree(flow.gradient(p))[0]
    errors = []
    for x in (0.02, 0.01):
        plus, minus = unravel(flat + x * uf), unravel(flat - x * uf)
        mean_grad = 0.5 * (ravel_pytree(flow.gradient(plus))[0] + ravel_pytree(flow.gradient(minus))[0])
        errors.append(float(jnp.linalg.norm(mean_grad - g0 - 0.5 * x**2 * gs) / jnp.linalg.norm(0.5 * x**2 * gs)))
        mean_loss = 0.5 * (flow.loss_value(plus) + flow.loss_value(minus))
        predicted = flow.loss_value(p) + 0.5 * x**2 * s
        # the remainder is (x⁴/24)∇⁴L[u,u,u,u]: relative to ½x²S it is O(x²) ≈ 1e-4
        assert abs(float(mean_loss - predicted)) <= 1e-3 * 0.5 * x**2 * float(s)
    # the relative remainder of the gradient expansion is O(x²): it shrinks 4× when x halves
    assert errors[0] < 1e-2
    assert 3.0 < errors[0] / errors[1] < 5.0, errors


def test_gd_reaches_the_edge_catapults_and_settles():
    r = _runs()
    eta_s = r["eta"] * r["s_gd"]
    assert eta_s[0] < 1.01  # η = 1/S(θ0): GD starts halfway to the edge (progressive sharpening)
    arrival = int(np.argmax(eta_s >= 2.0)) * EVERY
    assert 50 <= arrival <= 100 and eta_s.max() > 3.0  # the catapult
    assert 300 <= r["k_s"] <= 500, r["k_s"]  # the criterion's settled step (350–420 measured)
    late = eta_s[r["k_s"] // EVERY:]
    assert np.all(np.abs(late / 2.0 - 1.0) < BAND), late  # GD's sharpness hovers at 2/η …
    loss = r["loss"][r["k_s"]:]
    rises = np.mean(np.diff(loss) > 0)
    assert rises > 0.2, rises  # … while its loss goes up on a good share of the steps (oscillation)


def test_central_flow_sharpness_stays_at_the_edge():
    r = _runs()
    threshold = 2.0 / r["eta"]
    onset, s_cf, sigma2 = r["onset"], np.asarray(r["onset_cf"]["sharpness"]), np.asarray(
        r["onset_cf"]["oscillation_variance"])
    first = int(np.argmax(sigma2 > 0))
    assert 0 < onset[first] <= 150  # the flow from θ0 joins the edge near where GD does (k ≈ 70)
    # within 2 % of 2/η at the edge (the stabilising term holds it to ~rtol; 2 % is the issue's
    # bar), while GD oscillates (the previous test), from θ0 and seeded at k_s alike
    assert np.all(np.abs(s_cf[first + 1:] / threshold - 1.0) < 0.02)
    assert np.all(np.abs(np.asarray(r["central"]["sharpness"]) / threshold - 1.0) < 0.02)
    assert np.all(np.asarray(r["central"]["oscillation_variance"]) > 0)
    # before the edge the central flow is gradient flow: σ² = 0, same loss (to the two solves' rtol)
    before = slice(0, first)
    assert np.all(sigma2[before] == 0.0)
    np.testing.assert_allclose(np.asarray(r["onset_cf"]["loss"])[before], np.asarray(r["onset_gf"]["loss"])[before],
                               rtol=1e-3)
    # gradient flow keeps sharpening past the edge (to 2 × 2/η by k_s; measured 1.99)
    assert float(np.asarray(r["onset_gf"]["sharpness"])[-1]) > 1.5 * threshold


def test_central_flow_tracks_the_time_averaged_loss():
    """Over the settled edge-of-stability phase (see the module docstring) the predicted
    time-averaged loss L + ½σ²S of the central flow seeded at GD's time average at k_s is within
    10 % of GD's loss averaged over a WINDOW-step sliding window once GD's residual slow cycles
    have had two windows to decay (from k_s + 2·WINDOW), and within 15 % on every window after
    k_s; gradient flow and the central flow of a wrong η (0.8η), seeded alike, are off by more
    than 3 × 10 %. The flow from θ0 does not model the onset: over it, it misses by far more."""
    r = _runs()
    avg, phase = r["avg"], r["phase"]

    def error(obs, start=r["k_s"] + WINDOW // 2):
        keep = phase >= start
        return float(np.max(np.abs(np.asarray(obs["loss"])[keep] / avg[keep] - 1.0)))

    # Measured over eight round-off realisations of the GD run (θ0 · (1 + ε), ε = 0, 1e-12, 1e-9,
    # 1e-6; XLA optimisation level 0 and default): 7.3–9.3 % from k_s + 2·WINDOW, 9.5–13.6 % from
    # k_s + WINDOW/2 (the residual cycles' amplitude is set by the chaotic catapult); gradient flow
    # and 0.8η 0.95–0.96; from θ0 over the onset 0.84.
    tol = 0.10
    central, gradient_flow, wrong = error(r["central"], r["k_s"] + 2 * WINDOW), error(r["gradient_flow"]), error(
        r["wrong"])
    assert central <= tol, (central, gradient_flow, wrong)
    assert error(r["central"]) <= 0.15, error(r["central"])
    assert gradient_flow > 3 * tol, gradient_flow
    assert wrong > 3 * tol, wrong
    # the onset (windows from GD's arrival to k_s), from θ0: the catapult is not modelled
    onset = r["onset"]
    arrival = int(np.argmax(r["eta"] * r["s_gd"] >= 2.0)) * EVERY
    inside = (onset >= arrival + WINDOW // 2) & (onset <= r["k_s"])
    missed = np.abs(np.asarray(r["onset_cf"]["loss"])[inside] / _window_mean(r["loss"], onset[inside]) - 1.0)
    assert missed.max() > 3 * tol, missed
