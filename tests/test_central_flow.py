"""The central flow (Cohen, Damian et al., ICLR 2025, arXiv:2410.24206) against gradient descent
at the edge of stability, float64.

The before-the-edge agreement with gradient flow, t = 0, the transforms and the regime errors
are the THEORY_CASES row in tests/cases_central_flow.py. Here: the expansion behind the flow,
and GD on `edge_of_stability_problem()` with η = 1/S(θ0): the central flow's sharpness sits at
2/η, its predicted time-averaged loss L + ½σ²S tracks GD's loss averaged over a sliding window
while gradient flow is off by far more, and a central flow at a wrong η misses.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from helpers import THEORY_CASES
from jax.flatten_util import ravel_pytree

import gflow as gf
import gflow.central_flow as cf

STEPS = 1000  # GD steps: the edge at k ≈ 70, a catapult, then the edge-of-stability phase
WINDOW = 100  # sliding-window length (GD steps) of the time average
PHASE_START = 750  # first GD step of the compared phase (the catapult's wake has died out)
EVERY = 10  # GD sharpness every EVERY steps


def _gd(flow, eta, steps):
    """Plain GD θ ← θ − ηκ∇L as one lax.scan: the loss at every step (θ_0 … θ_{steps−1}) and the
    sharpness every EVERY steps."""

    @jax.jit
    def run(params):
        def step(p, _):
            loss, grad = jax.value_and_grad(flow.loss_value)(p)
            return jax.tree_util.tree_map(lambda a, g: a - eta * flow.time_scale * g, p, grad), loss

        def block(p, _):
            s = cf.sharpness(0.0, p, flow, num_iterations=24)
            p, losses = jax.lax.scan(step, p, None, length=EVERY)
            return p, (losses, s)

        return jax.lax.scan(block, params, None, length=steps // EVERY)

    _, (losses, s) = run(flow.params0)
    return np.asarray(losses).ravel(), np.asarray(s)


@functools.cache
def _runs():
    flow = cf.edge_of_stability_problem()
    eta = 1.0 / float(cf.sharpness(0.0, flow.params0, flow))
    loss, s_gd = _gd(flow, eta, STEPS)
    ks = np.arange(0, STEPS - WINDOW // 2 + 1, EVERY)  # save steps (centres of the windows)
    ts = jnp.asarray(eta * ks)
    opts = dict(ts=ts, rtol=1e-5, atol=1e-9, max_steps=50_000)
    central = cf.CentralFlow.from_flow(flow, learning_rate=eta, num_iterations=12)
    central_sol = central.solve(ts[-1], **opts)
    # negative control: the central flow of a 20 % smaller step (edge at 2/(0.8η))
    wrong = cf.CentralFlow.from_flow(flow, learning_rate=0.8 * eta, num_iterations=12)
    wrong_sol = wrong.solve(ts[-1], **opts)
    gflow_sol = gf.solve_flow(flow, ts[-1], ts=ts, observables=("loss", "sharpness"), rtol=1e-6, atol=1e-9,
                              solver="explicit")  # one compile (Tsit5), not the auto solver's two
    avg = np.array([loss[max(k - WINDOW // 2, 0): k + WINDOW // 2].mean() for k in ks])
    return dict(flow=flow, eta=eta, ks=ks, loss=loss, s_gd=s_gd, avg=avg, central=central_sol.observables,
                wrong=wrong_sol.observables, gradient_flow=gflow_sol.observables)


def _phase(r):
    return r["ks"] >= PHASE_START


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


def test_gd_reaches_the_edge_and_oscillates():
    r = _runs()
    eta_s = r["eta"] * r["s_gd"]
    assert eta_s[0] < 1.01  # η = 1/S(θ0): GD starts halfway to the edge (progressive sharpening)
    assert eta_s.max() > 2.0
    late = eta_s[PHASE_START // EVERY:]
    assert np.all(np.abs(late - 2.0) < 0.02), late  # GD's sharpness hovers at 2/η …
    loss = r["loss"][PHASE_START:]
    rises = np.mean(np.diff(loss) > 0)
    assert rises > 0.2, rises  # … while its loss goes up on a good share of the steps (oscillation)


def test_central_flow_sharpness_stays_at_the_edge():
    r = _runs()
    threshold = 2.0 / r["eta"]
    s_cf = np.asarray(r["central"]["sharpness"])
    sigma2 = np.asarray(r["central"]["oscillation_variance"])
    at_edge = sigma2 > 0
    first = int(np.argmax(at_edge))
    assert 0 < r["ks"][first] <= 200  # the central flow joins the edge near where GD does
    # within 2 % of 2/η at the edge (the stabilising term holds it to ~rtol; 2 % is the bar)
    assert np.all(np.abs(s_cf[first + 1:] / threshold - 1.0) < 0.02)
    # before the edge the central flow is gradient flow: σ² = 0, same loss (to the two solves' rtol)
    before = slice(0, first)
    assert np.all(sigma2[before] == 0.0)
    np.testing.assert_allclose(np.asarray(r["central"]["loss"])[before],
                               np.asarray(r["gradient_flow"]["loss"])[before], rtol=1e-3)
    # gradient flow keeps sharpening past the edge
    assert float(np.asarray(r["gradient_flow"]["sharpness"])[-1]) > 1.5 * threshold


def test_central_flow_tracks_the_time_averaged_loss():
    """Over the edge-of-stability phase the predicted time-averaged loss L + ½σ²S is within
    10 % of GD's loss averaged over a WINDOW-step sliding window; gradient flow and the central
    flow of a wrong η (0.8η) are off by more than 3 × that."""
    r = _runs()
    phase = _phase(r)
    avg = r["avg"][phase]

    def error(obs):
        return float(np.max(np.abs(np.asarray(obs["loss"])[phase] / avg - 1.0)))

    tol = 0.10
    central, gradient_flow, wrong = error(r["central"]), error(r["gradient_flow"]), error(r["wrong"])
    assert central <= tol, (central, gradient_flow, wrong)
    assert gradient_flow > 3 * tol, gradient_flow
    assert wrong > 3 * tol, wrong
