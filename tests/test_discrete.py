"""solve_discrete, modified_flow and the edge-of-stability event (shared/theory/classic.md §C).

Problem: the NTK tanh net of tests/helpers.py with d = 3, width 6, n = 10 (24 parameters, squared
error, λ_max(H(θ0)) = 0.698, rising to 0.87 along the flow: progressive sharpening).
"""

import re

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import REPO, ntk_problem, run_notebook, saxe_balanced_problem, tree_allclose

import gflow as gf
from gflow import edge_of_stability, modified_flow, solve_discrete
from gflow.central_flow import ModifiedLoss, hessian_vector_product, sharpness, unmodified_loss

T = 2.0
GRID = jnp.linspace(0.0, T, 11)  # every 0.2: a whole number of steps for every η below
WINDOW = slice(5, None)  # t ∈ [1, 2]: heavy ball's start-up transient (∝ β^(t/h)) has died out
GD_ETAS = jnp.array([0.2, 0.1, 0.05, 0.025])  # η λ_max ≤ 0.17 (classic.md §C.3)
BETA = 0.5
HB_STEPS = jnp.array([0.05, 0.025, 0.0125, 0.00625])  # h = η/(1−β); h λ_max ≤ 0.05
#: Reference flows: rtol 1e-9 gives θ errors ~1e-9, 10⁴ below the smallest gap measured (2e-5).
RTOL, ATOL = 1e-9, 1e-11


def _flow():
    return ntk_problem(6, n=10, d=3)


def _stack(trees):
    return jax.tree_util.tree_map(lambda *x: jnp.stack(x), *trees)


def _gaps(a, b):
    """max over the window of ‖θ_a(t) − θ_b(t)‖₂, per member (leading axis)."""
    sq = sum(jnp.sum((x - y) ** 2, axis=tuple(range(2, x.ndim)))
             for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))
    return np.asarray(jnp.max(jnp.sqrt(sq)[:, WINDOW], axis=1))


def _slope(x, gaps):
    return float(np.polyfit(np.log(np.asarray(x)), np.log(gaps), 1)[0])


def _as_modified(flow):
    """`flow` as a modified flow with coefficient 0 (the same L): it stacks with modified flows,
    so one vmapped solve (one compile) holds the plain flow and all the modified ones."""
    return eqx.tree_at(lambda f: f.data.coefficient, modified_flow(flow, 1.0), jnp.zeros(()))


@pytest.fixture(scope="module")
def order():
    """GD and heavy ball against the flow and the modified flows. Three compiles: GD and heavy
    ball each vmapped over η, and one vmapped `solve_flow` of the flow and all 16 modified flows
    (solve_flow's compile dominates the test time)."""
    flow = _flow()

    def descend(eta, beta):
        opt = optax.sgd(eta, momentum=beta if beta else None)
        sol = solve_discrete(flow, opt, T, learning_rate=eta, momentum=beta, ts=GRID, save_params=True)
        return sol.observables["params"], sol.ts

    gd, gd_ts = jax.vmap(lambda e: descend(e, 0.0))(GD_ETAS)
    hb, hb_ts = jax.vmap(lambda e: descend(e, BETA))(HB_STEPS * (1 - BETA))
    # the requested grid is on the step grid: the recorded step times are the requested ones
    assert np.allclose(gd_ts, GRID[None], rtol=0, atol=1e-13) and np.allclose(hb_ts, GRID[None], rtol=0, atol=1e-13)

    hb_mod = [modified_flow(flow, h * (1 - BETA), momentum=BETA) for h in HB_STEPS]
    flows = ([modified_flow(flow, e) for e in GD_ETAS]
             + [modified_flow(flow, 2 * e) for e in GD_ETAS]  # NEG: twice the coefficient (η H g)
             + hb_mod
             + [eqx.tree_at(lambda f: f.params0, f, flow.params0) for f in hb_mod]  # NEG: no shift
             + [_as_modified(flow)])
    observables = {"loss": "loss", "unmodified_loss": unmodified_loss}
    sols = jax.vmap(lambda f: gf.solve_flow(f, T, ts=GRID, observables=observables, save_params=True,
                                            rtol=RTOL, atol=ATOL, solver="explicit"))(_stack(flows))
    params = sols.observables["params"]
    part = lambda i: jax.tree_util.tree_map(lambda m: m[4 * i: 4 * i + 4], params)  # noqa: E731
    ref = jax.tree_util.tree_map(lambda m: m[16:], params)
    gaps = {
        "gd/flow": _gaps(gd, ref), "gd/modified": _gaps(gd, part(0)), "gd/modified 2x": _gaps(gd, part(1)),
        "hb/flow": _gaps(hb, ref), "hb/modified": _gaps(hb, part(2)), "hb/modified unshifted": _gaps(hb, part(3)),
    }
    return gaps, sols


# Measured slopes (this problem, window t ∈ [1, 2]): gd/flow 1.017, gd/modified 2.010, NEG 2x
# 0.937; hb/flow 1.036, hb/modified 2.127 (local slopes 2.22, 2.11, 2.06 falling to 2: the O(η³)
# terms), NEG unshifted 1.025. The ±0.2 band of the issue covers those pre-asymptotic terms; a
# negative control must stay below 1.5.
@pytest.mark.parametrize("name, slope, etas", [
    ("gd/flow", 1.0, GD_ETAS), ("gd/modified", 2.0, GD_ETAS),
    ("hb/flow", 1.0, HB_STEPS), ("hb/modified", 2.0, HB_STEPS),
])
def test_order(order, name, slope, etas):
    gaps = order[0][name]
    assert np.all(np.diff(gaps) < 0), gaps
    assert abs(_slope(etas, gaps) - slope) < 0.2, (name, gaps, _slope(etas, gaps))


@pytest.mark.parametrize("name, etas", [("gd/modified 2x", GD_ETAS), ("hb/modified unshifted", HB_STEPS)])
def test_order_negative_controls(order, name, etas):
    """A wrong coefficient, or heavy ball without its time shift, is only O(η)."""
    gaps = order[0]
    assert _slope(etas, gaps[name]) < 1.5, (name, gaps[name])
    good = gaps[name.split(" ")[0]]
    assert np.all(gaps[name] > 5 * good), (gaps[name], good)


def test_modified_field_is_hvp_formula():
    """−κ(∇L + (ηκ/2) H∇L) for GD (κ = 2), heavy ball's coefficient and its shifted start."""
    flow = eqx.tree_at(lambda f: f.time_scale, _flow(), jnp.asarray(2.0))
    eta, kappa, p = 0.05, 2.0, flow.params0
    g = flow.gradient(p)
    hg = hessian_vector_product(flow, p, g)
    expected = jax.tree_util.tree_map(lambda a, b: -kappa * (a + 0.5 * eta * kappa * b), g, hg)
    mod = modified_flow(flow, eta)
    assert isinstance(mod.data, ModifiedLoss) and tree_allclose(mod.params0, p, rtol=0, atol=0)
    assert tree_allclose(mod.vector_field(0.0, p), expected, rtol=1e-12, atol=1e-14)
    # heavy ball: c = ηκ(1+β)/(4(1−β)²), start moved back along the field by τ = ηβ/(1−β)²
    hb = modified_flow(flow, eta, momentum=BETA)
    c = eta * kappa * (1 + BETA) / (4 * (1 - BETA) ** 2)
    assert np.isclose(float(hb.data.coefficient), c, rtol=1e-14)
    tau = eta * BETA / (1 - BETA) ** 2
    # θ̃(−τ) = θ0 − τF + (τ²/2) J_F F with F = −κ(∇L + 2cH∇L) and J_F F ≈ κ²H∇L
    field = jax.tree_util.tree_map(lambda a, b: -kappa * (a + 2 * c * b), g, hg)
    start = jax.tree_util.tree_map(lambda q, f, h: q - tau * f + 0.5 * tau**2 * kappa**2 * h, p, field, hg)
    assert tree_allclose(hb.params0, start, rtol=1e-12, atol=1e-15)
    # the loss of the modified flow is L̃ = L + c‖∇L‖² (c for GD: ηκ/4); unmodified_loss is L
    penalty = sum(jnp.sum(x**2) for x in jax.tree_util.tree_leaves(g))
    assert np.isclose(float(mod.loss_value(p)), float(flow.loss_value(p) + eta * kappa / 4 * penalty), rtol=1e-13)
    assert float(unmodified_loss(0.0, p, mod)) == float(flow.loss_value(p))


def test_modified_flow_energy_audit_holds(order):
    """The audit runs on L̃, whose identity L̃(t) − L̃(0) = −∫κ‖∇L̃‖² does hold: residuals at the
    solver's tolerance, below the warning threshold max(100·rtol, 1e-6) of a concrete solve
    (these solves are vmapped, where the audit does not warn, so the threshold is asserted).
    NEG: the original L's drop differs from L̃'s by O(η), 10³ times that threshold: auditing L
    would warn falsely."""
    _, sols = order
    assert np.all(np.asarray(sols.stats["energy_residual"]) < 1e-6)
    tilde, plain = sols.observables["loss"][:4], sols.observables["unmodified_loss"][:4]
    drop_tilde, drop = tilde[:, 0] - tilde[:, -1], plain[:, 0] - plain[:, -1]
    assert np.all(np.abs(drop - drop_tilde) / drop_tilde > 1e-3)
    # the zero-coefficient member is the plain flow: L̃ = L there
    assert np.array_equal(sols.observables["loss"][16], sols.observables["unmodified_loss"][16])


def test_clock_and_rounding():
    """t = kη (GD), kη/(1−β) (heavy ball), kη (Adam); requested times round to the nearest step."""
    flow = _flow()
    ts = jnp.array([0.0, 0.26, 0.33, 0.5])
    sol = solve_discrete(flow, optax.sgd(0.1), 0.5, learning_rate=0.1, ts=ts)
    assert np.allclose(sol.ts, [0.0, 0.3, 0.3, 0.5], rtol=0, atol=1e-15)
    assert int(sol.stats["num_steps"]) == 5 and float(sol.t_final) == pytest.approx(0.5, abs=1e-15)
    assert sol.event_mask is None and np.isinf(float(sol.event_time))
    hb = solve_discrete(flow, optax.sgd(0.05, momentum=0.5), 0.5, learning_rate=0.05, momentum=0.5, ts=ts)
    assert float(hb.stats["step_time"]) == pytest.approx(0.1) and int(hb.stats["num_steps"]) == 5
    with jax.numpy_dtype_promotion("standard"):  # optax's bias correction mixes int32 and float
        adam = solve_discrete(flow, optax.adam(0.01), 0.5, learning_rate=0.01, ts=ts)
    assert int(adam.stats["num_steps"]) == 50 and bool(adam.succeeded)
    assert float(adam.observables["loss"][-1]) < float(adam.observables["loss"][0])
    capped = solve_discrete(flow, optax.sgd(0.1), 0.5, learning_rate=0.1, ts=ts, max_steps=3, throw=False)
    assert capped.result == diffrax.RESULTS.max_steps_reached and int(capped.stats["num_steps"]) == 3
    # steps 0 and 3 (t = 0, 0.3, 0.3) are within the cap; step 5 (t = 0.5) is not
    assert np.all(np.isfinite(capped.observables["loss"][:3])) and np.isinf(capped.observables["loss"][3])
    with pytest.raises(Exception, match=re.escape("`max_steps` was reached before `t1`")):
        solve_discrete(flow, optax.sgd(0.1), 0.5, learning_rate=0.1, ts=ts, max_steps=3)


def test_time_scale_is_the_flow_clock():
    """GD is explicit Euler on the flow: with κ = 2 one step of η is θ0 − ηκ∇L(θ0) at t = η."""
    flow = eqx.tree_at(lambda f: f.time_scale, _flow(), jnp.asarray(2.0))
    eta = 0.05
    sol = solve_discrete(flow, optax.sgd(eta), eta, learning_rate=eta, ts=jnp.array([0.0, eta]))
    by_hand = jax.tree_util.tree_map(lambda p, g: p - eta * 2.0 * g, flow.params0, flow.gradient(flow.params0))
    assert tree_allclose(sol.params_final, by_hand, rtol=1e-14, atol=1e-16)
    assert float(sol.t_final) == eta and int(sol.stats["num_steps"]) == 1


def test_divergence_named_error():
    """GD far above 2/λ_max on a deep linear net overflows: a named error with step and time;
    `throw=False` keeps the run up to there with RESULTS.nonfinite and inf entries after."""
    flow = saxe_balanced_problem()
    ts = jnp.linspace(0.0, 100.0, 11)
    opt = optax.sgd(5.0)
    sol = solve_discrete(flow, opt, 100.0, learning_rate=5.0, ts=ts, throw=False)
    k = int(sol.stats["num_steps"])
    assert 0 < k < 20 and not bool(sol.succeeded)
    assert float(sol.t_final) == pytest.approx(5.0 * k)
    assert sol.result == diffrax.RESULTS.nonfinite
    loss = np.asarray(sol.observables["loss"])
    assert np.isfinite(loss[0]) and np.all(np.isinf(loss[np.asarray(sol.ts) >= 5.0 * k]))
    expected = f"the loss or its gradient became non-finite at step {k} (t = {5.0 * k:.6g}, on the flow's clock)"
    with pytest.raises(Exception, match=re.escape(expected)):
        solve_discrete(flow, opt, 100.0, learning_rate=5.0, ts=ts)
    with pytest.raises(Exception, match=re.escape(f"non-finite at step {k}")):  # under jit too
        jax.jit(lambda f: solve_discrete(f, opt, 100.0, learning_rate=5.0, ts=ts).t_final)(flow)
    # NEG: a stable step runs to t1
    ok = solve_discrete(flow, optax.sgd(0.05), 1.0, learning_rate=0.05, ts=ts / 100)
    assert bool(ok.succeeded) and np.all(np.isfinite(ok.observables["loss"]))


def test_edge_of_stability_event():
    """η above 2/λ_max fires the event (at step 0 when λ_max(θ0) is already past 2/η; at step 1
    for η = 2.5, as progressive sharpening lifts λ_max above 0.8); below the limit it never fires.
    solve_flow fires where the flow's sharpness crosses 2/η."""
    flow = _flow()
    lam0 = float(sharpness(0.0, flow.params0, flow))
    assert lam0 == pytest.approx(0.6983, abs=1e-4)

    def run(eta):
        sol = solve_discrete(flow, optax.sgd(eta), 20.0, learning_rate=eta, event=edge_of_stability(eta),
                             ts=jnp.array([0.0, 20.0]), throw=False)
        return sol.event_time, sol.stats["num_steps"], sol.event_mask[0], sol.observables["loss"]

    etas = jnp.array([3.0, 2.5, 2.0])  # 2/η = 0.667 (< λ0), 0.8 (< the 0.87 ahead), 1.0 (never)
    times, steps, fired, loss = jax.vmap(run)(etas)
    assert np.array_equal(np.asarray(fired), [True, True, False])
    assert np.allclose(times[:2], [0.0, 2.5]) and np.isinf(float(times[2]))
    assert np.array_equal(np.asarray(steps), [0, 1, 10])
    assert np.isinf(float(loss[0, 1])) and np.isfinite(float(loss[2, 1]))
    # solve_flow: the crossing time, where S(θ(t)) = 2/η = 0.8
    sol = gf.solve_flow(flow, 20.0, event=edge_of_stability(2.5), ts=jnp.array([0.0, 20.0]))
    t_cross = float(sol.event_time)
    assert 0.0 < t_cross < 4.0
    assert float(sharpness(t_cross, sol.params_final, flow)) == pytest.approx(0.8, rel=1e-6)
    # heavy ball's limit is 2(1+β)/η
    assert float(edge_of_stability(1.0, momentum=0.5).threshold) == pytest.approx(3.0)


def test_transforms_and_compare(order):
    """plain / jit / vmap (over initial parameters) / jit∘vmap agree; the FlowSolution goes
    through gf.compare like a flow's, and GD at small η is within O(η) of the flow there."""
    flow = _flow()
    opt = optax.sgd(0.05)
    ts = jnp.linspace(0.0, 1.0, 5)

    def run(f):
        sol = solve_discrete(f, opt, 1.0, learning_rate=0.05, ts=ts, observables=("loss", "gradient_norm"))
        return sol.observables, sol.params_final

    shifted = eqx.tree_at(lambda f: f.params0, flow, jax.tree_util.tree_map(lambda x: 1.1 * x, flow.params0))
    flows = _stack([flow, shifted])
    plain = [run(flow), run(shifted)]
    jitted = eqx.filter_jit(run)(flow)
    vmapped = jax.vmap(run)(flows)
    both = jax.jit(jax.vmap(run))(flows)
    for i in range(2):
        member = jax.tree_util.tree_map(lambda x: x[i], vmapped)
        assert tree_allclose(member, plain[i], rtol=1e-13, atol=1e-15)
        assert tree_allclose(jax.tree_util.tree_map(lambda x: x[i], both), plain[i], rtol=1e-13, atol=1e-15)
    assert tree_allclose(jitted, plain[0], rtol=1e-13, atol=1e-15)

    theory = gf.ntk.LinearizedMSE.from_flow(flow)
    gd = solve_discrete(flow, opt, T, learning_rate=0.05, ts=GRID)
    exact = jax.tree_util.tree_map(lambda x: x[16], order[1])  # the plain flow on the same grid
    err_gd, err_flow = float(gf.compare(theory, gd)["loss"]), float(gf.compare(theory, exact)["loss"])
    assert np.isfinite(err_gd) and np.isfinite(err_flow)
    # GD's loss is within O(η) of the flow's: |ΔL| ≤ ‖∇L‖·gap ≈ 0.6 × (gap 0.005 at η = 0.05)
    assert np.max(np.abs(np.asarray(gd.observables["loss"] - exact.observables["loss"]))) < 0.01


def test_notebook(tmp_path):
    """notebooks/gd_vs_flow.ipynb in small mode writes the gd-vs-flow and central-flow figures."""
    ns = run_notebook(REPO / "notebooks" / "gd_vs_flow.ipynb", GFLOW_OUT=str(tmp_path))
    assert [p.name for p in ns["paths"]] == ["gd-vs-flow.png", "gd-vs-flow-central.png"]
    assert all((tmp_path / p.name).stat().st_size > 0 for p in ns["paths"])
    runs = ns["runs"]
    # the figure's claims: GD at η = 0.5 is within O(η²) of its modified flow and O(η) of the
    # flow (ratio ≈ ηλ/2 ≈ 0.2 at late times); GD at η = 3 sits below 2/η (edge of stability)
    late = runs["ts"][0] >= 5.0
    assert np.max(runs["gap_modified"][0][late]) < 0.3 * np.max(runs["gap_flow"][0][late])
    assert np.max(runs["gd_sharpness"][2][runs["ts"][2] >= 5.0]) < 2 / 3.0
    assert np.min(runs["flow_sharpness"][0]) > 0.69  # NEG: the flow is past 2/η = 0.67 throughout


def test_bad_input():
    flow = _flow()
    with pytest.raises(TypeError, match=re.escape("`optimizer` must be an optax GradientTransformation")):
        solve_discrete(flow, "sgd", 1.0, learning_rate=0.1)
    with pytest.raises(ValueError, match=re.escape("`learning_rate` must be finite and > 0")):
        solve_discrete(flow, optax.sgd(0.1), 1.0, learning_rate=-0.1)
    with pytest.raises(ValueError, match=re.escape("`momentum` must lie in [0, 1)")):
        solve_discrete(flow, optax.sgd(0.1), 1.0, learning_rate=0.1, momentum=1.0)
    with pytest.raises(ValueError, match=re.escape("`t1` must lie at least half a step after t0")):
        solve_discrete(flow, optax.sgd(0.1), 0.04, learning_rate=0.1)
    with pytest.raises(ValueError, match=re.escape("`flow` must be an unmodified GradientFlow")):
        modified_flow(modified_flow(flow, 0.1), 0.1)
    with pytest.raises(ValueError, match=re.escape("`momentum` must lie in [0, 1)")):
        modified_flow(flow, 0.1, momentum=-0.5)
