"""Pellegrini & Biroli 2020 (arXiv:2006.11209): the checks the THEORY_CASES rows
(tests/cases_pellegrini_biroli.py) do not make — invariants of the exact case, the finite-width
rate, the closure's limits (with C0 ≠ 0), τ_sat, finite vs infinite P, the linear-σ moments on
`v` (separable and not), the seeding options, compile-once and bad input."""

import functools
import logging
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import REPO, THEORY_CASES, run_notebook
from problems_pellegrini_biroli import pb_linear_problem, pb_symmetric_problem

import gflow as gf

pb = gf.pellegrini_biroli
D = 8
TEACHER = jnp.eye(D)[0]
ALPHA = 2.0
TAU1 = 10.0


def _row(name):
    return next(c for c in THEORY_CASES if c.name == name)


def _rel(sim, th):
    return float(jnp.max(jnp.abs(sim - th)) / jnp.max(jnp.abs(th)))


@pytest.fixture(scope="module")
def symmetric_case():
    """The exact case of the pb-finite-p-exact row (same flow, grid and options: one compile)."""
    case = _row("pb-finite-p-exact")
    flow = pb_symmetric_problem()
    sol = gf.solve_flow(flow, case.t1, ts=case.times(), observables=case.theory.observables, **case.solve_options)
    return flow, sol


def test_exact_case_invariants(symmetric_case):
    # Agreement, the exact satisfied count and the negative control are the row's; here: w⊥ is
    # frozen (its drive cancels pairwise in exact arithmetic: only round-off, ≲ 1e-12) and
    # a_i² − |w_i|² is conserved (ReLU homogeneity, no bias; the solver's drift ≲ 1e-8
    # relative, measured 1e-12: assert 1e-6), both read off the final parameters.
    flow, sol = symmetric_case
    obs = pb.node_observables()
    start, end = flow.params0, sol.params_final
    perp0, perp1 = obs["w_perp"](0.0, start, flow), obs["w_perp"](TAU1, end, flow)
    assert float(jnp.max(jnp.abs(perp1 - perp0))) < 1e-12
    b0, b1 = pb.balance(0.0, start, flow), pb.balance(TAU1, end, flow)
    assert float(jnp.max(jnp.abs(b1 - b0)) / jnp.max(jnp.abs(b0))) < 1e-6
    theory = pb.MeanFieldHingeFiniteP.from_flow(flow)
    assert int(jnp.sum(theory.crossing_times < TAU1)) > 80  # many kinks crossed (88 of P = 200)
    # The teacher the data records is the one the observables use (teacher= gives the same).
    given = pb.node_observables(teacher=2.0 * TEACHER)
    np.testing.assert_array_equal(given["w_par"](0.0, start, flow), pb.w_par(0.0, start, flow))
    assert given["w_par"] == pb.node_observables(teacher=TEACHER)["w_par"]  # equal: one compile


@functools.cache
def _width_sweep(size):
    """Random N(0, 1) populations vs the M = ∞ theory, one gflow.sweep (one compile). "small": the
    notebook's small width figure (M ∈ {16, 64}, 4 seeds, P = 80: the same computation, so a
    session that runs both compiles it once through the compilation cache); "full" (slow):
    M ∈ {32, 128, 256}, 6 seeds, P = 200."""
    widths, seeds, P = ((16, 64), 4, 80) if size == "small" else ((32, 128, 256), 6, 200)
    data = pb.separable_gaussian(P, D, key=jr.PRNGKey(0), stratified=True, symmetrized=True)
    return pb.finite_width_sweep(widths, seeds, data, key=jr.PRNGKey(2), alpha=ALPHA, t1=TAU1, rtol=1e-5, atol=1e-7)


SIZES = ["small", pytest.param("full", marks=pytest.mark.slow)]


@pytest.mark.parametrize("size", SIZES)
def test_random_population_approaches_mean_field(size):
    # CLT fluctuations of the node population ⇒ error ∝ M^{-1/2}; statistical, so the solver
    # tolerance (1e-5) is irrelevant next to it. Measured mean errors × √M: 0.77, 0.82 (small);
    # 0.96, 1.0, 0.95 (full: 0.17, 0.089, 0.059); slopes −0.45 ± 0.15 (small), −0.50 ± 0.14 (full).
    r = _width_sweep(size)
    mean = jnp.mean(r.errors, axis=1)
    assert bool(jnp.all(mean * jnp.sqrt(r.widths) < 1.3))
    assert abs(float(r.slope) + 0.5) <= 0.25
    assert float(r.slope_stderr) < 0.25
    # RMS over time of |u_sim − u_MF| × √M (measured ≤ 0.38 small, ≤ 0.33 full).
    assert bool(jnp.all(jnp.mean(r.unsatisfied_rms, axis=1) * jnp.sqrt(r.widths) < 0.45))


@pytest.mark.parametrize("size", SIZES)
def test_frozen_dataset_control_does_not_shrink(size):
    # "Every sample stays active" is never right: its error stays ≈ 0.32–0.39 at every M (its
    # log-log slope is 0.13 small, ≈ 0 full, against −0.5 for the theory's error).
    r = _width_sweep(size)
    frozen = jnp.mean(r.frozen_errors, axis=1)
    assert float(frozen[-1]) > 0.8 * float(frozen[0])
    assert float(frozen[-1]) > 3 * float(jnp.mean(r.errors[-1]))
    slope, _ = pb.fit_power_law(r.widths, r.frozen_errors)
    assert abs(float(slope)) < (0.1 if size == "full" else 0.2)


def test_fit_power_law():
    # Exact on a power law (slope −0.5, any seed spread), and plain / jit / vmap / jit∘vmap agree.
    widths = jnp.array([16, 64, 256])
    base = jnp.array([1.0, 1.2, 0.8, 1.1])
    errors = 2.0 * widths[:, None].astype(float) ** -0.5 * base[None, :]
    slope, stderr = pb.fit_power_law(widths, errors)
    assert float(slope) == pytest.approx(-0.5, abs=1e-12) and float(stderr) > 0
    stack = jnp.stack([errors, errors[::-1]])
    plain = jnp.stack([jnp.stack(pb.fit_power_law(widths, e)) for e in stack])
    one = lambda e: jnp.stack(pb.fit_power_law(widths, e))
    for got in (jax.jit(one)(stack[1]), jax.vmap(one)(stack)[1], jax.jit(jax.vmap(one))(stack)[1]):
        np.testing.assert_allclose(got, plain[1], rtol=1e-12)


#: One grid shape for every P = ∞ closure evaluation in this file: one compile of its solve.
GRID = jnp.concatenate([jnp.zeros(1), jnp.logspace(-3, 7, 101)])


@pytest.fixture(scope="module")
def closure_solutions():
    """P = ∞ closure at C0 = 0 and C0 = 0.3 (S0 = 1) on GRID (to τ = 1e7): one compile, two solves."""
    out = []
    for C0 in (0.0, 0.3):
        theory = pb.MeanFieldHinge(d=D, alpha=ALPHA, C0=C0)
        out.append((theory, GRID, theory.evaluate(GRID)))
    return out


def test_closure_long_time_limits(closure_solutions):
    # The asymptotes hold up to O(x_c²) ∝ τ^{-1/2} corrections (≈ 5e-5 at τ = 1e5, measured),
    # far above the solver error of a scalar ODE (1e-10): assert 1e-4 at τ ≥ 1e5.
    theory, ts, obs = closure_solutions[0]
    lt = theory.late_time()
    assert abs(float(lt["gamma_offset"]) - 0.550056) < 1e-6  # the independent check's value
    assert abs(float(lt["u_sqrt_tau"]) - 1.50225) < 1e-5
    late = ts >= 1e5
    offset = obs["gamma"][late] - 0.25 * jnp.log(ts[late])
    assert float(jnp.max(jnp.abs(offset - lt["gamma_offset"]))) < 1e-4
    assert float(jnp.max(jnp.abs(obs["unsatisfied_fraction"][late] * jnp.sqrt(ts[late]) / lt["u_sqrt_tau"] - 1))) < 1e-4
    assert float(jnp.max(jnp.abs(obs["loss"][late] * jnp.sqrt(ts[late]) / lt["loss_sqrt_tau"] - 1))) < 1e-4
    # Early times: all samples active, γ = λ √(2/π) τ (exact while F x_c ≫ 1).
    slope = obs["gamma"][1] / ts[1]
    assert abs(float(slope / (theory.gain * math.sqrt(2 / math.pi))) - 1) < 1e-6
    # Negative control: the linear-σ gain (k = 1 instead of ½) shifts the offset by ¼ ln 2 ≫ 1e-2.
    wrong = pb.MeanFieldHinge(d=D, alpha=ALPHA, activation="linear")
    assert float(jnp.min(jnp.abs(offset - wrong.late_time()["gamma_offset"]))) > 100 * 1e-4


def test_late_time_with_C0(closure_solutions):
    # Issue #12 defect 3: with C0 ≠ 0, F ≈ ½αλ(S0 + C0)e^{2γ} at large γ, so the γ offset is that
    # of S0 + C0 (the old formula used S0 alone and missed by ½ ln(1.3) = 0.13 here). Same
    # bound as above against the reduced ODE; x_c² τ, u √τ and L √τ do not depend on C0.
    theory, ts, obs = closure_solutions[1]
    lt = theory.late_time()
    late = ts >= 1e5
    offset = obs["gamma"][late] - 0.25 * jnp.log(ts[late])
    assert float(jnp.max(jnp.abs(offset - lt["gamma_offset"]))) < 1e-4
    assert float(jnp.max(jnp.abs(obs["unsatisfied_fraction"][late] * jnp.sqrt(ts[late]) / lt["u_sqrt_tau"] - 1))) < 1e-4
    # Negative control: the C0 = 0 offset (S0 alone) misses by 0.13 ≫ 1e-4.
    s0_only = closure_solutions[0][0].late_time()["gamma_offset"]
    assert float(jnp.min(jnp.abs(offset - s0_only))) > 100 * 1e-4
    expected = 0.25 * math.log(16 / (math.sqrt(2 * math.pi) * ALPHA**2 * float(theory.gain) * 1.3**2))
    assert float(lt["gamma_offset"]) == pytest.approx(expected, rel=1e-12)


def test_tau_sat(closure_solutions):
    # τ_sat by quadrature agrees with the ODE's γ(τ) at γ_p, decreases with p, and → √(2π)/(4λp²).
    theory = closure_solutions[0][0]
    p = jnp.array([2.0, 1.0, 0.2, 0.05])
    tsat = theory.tau_sat(p)
    assert bool(jnp.all(jnp.diff(tsat) > 0))
    grid = jnp.sort(jnp.concatenate([GRID[:-4], tsat]))  # GRID's shape: no new compile
    g = theory.evaluate(grid)["gamma"][jnp.searchsorted(grid, tsat)]
    assert _rel(g, theory.gamma_sat(p)) < 1e-8
    assert abs(float(tsat[-1] * p[-1] ** 2 / theory.late_time()["xc2_tau"]) - 1) < 1e-2


def test_finite_p_matches_infinite_p():
    # Stratified half-normal |x∥| quantiles match the Gaussian drive to O(1/P): ≤ 1e-3 at P = 400
    # (measured 2.8e-4); i.i.d. x∥ are O(P^{-1/2}) off (measured 1.7e-2).
    theory = pb.MeanFieldHinge(d=D, alpha=ALPHA)
    ts = jnp.linspace(0.0, TAU1, GRID.shape[0])  # GRID's shape: no new compile
    g_inf = theory.evaluate(ts)["gamma"][1:]
    errs = []
    for stratified in (True, False):
        data = pb.separable_gaussian(400, D, key=jr.PRNGKey(0), stratified=stratified)
        finite = pb.MeanFieldHingeFiniteP(data.y[:, 0] * (data.x @ TEACHER), d=D, alpha=ALPHA)
        errs.append(float(jnp.max(jnp.abs(finite.gamma(ts[1:]) / g_inf - 1))))
    assert errs[0] < 1e-3
    assert errs[1] > 10 * errs[0]
    # Negative control: the frozen-dataset γ misses by ≫ 100 × 1e-3.
    frozen = pb.frozen_dataset_gamma(finite.margins_sorted, ts[1:], d=D)
    assert float(jnp.max(jnp.abs(frozen / g_inf - 1))) > 0.1


@pytest.mark.parametrize("flipped", [0, 3])
def test_linear_moments_v(flipped):
    # The moment ODE is exact at any M, P (the rows check loss and active fraction); both solves
    # localise the same kinks to the local tolerance, so `v` agrees to ~10³·rtol (measured below
    # 1e-8): assert 1e-7. flipped = 3: non-separable labels (issue #12 defect 5: `from_flow`
    # refused them, though for σ linear the labels enter only through G = ⟨y x⟩_U).
    case = _row("pb-linear-moments")
    flow = pb_linear_problem(flipped)
    sol = gf.solve_flow(flow, case.t1, ts=case.times(), observables=case.theory.observables, **case.solve_options)
    theory = pb.LinearMeanFieldMoments.from_flow(flow)
    pred = theory.evaluate(sol.ts)
    assert _rel(sol.observables["v"], pred["v"]) < 1e-7
    assert _rel(sol.observables["loss"], pred["loss"]) < 1e-7
    np.testing.assert_array_equal(sol.observables["unsatisfied_fraction"], pred["unsatisfied_fraction"])
    assert bool(jnp.all((pred["generalization_error"] >= 0) & (pred["generalization_error"] <= 1)))
    assert float(pred["unsatisfied_fraction"][-1]) < 0.7  # several kinks crossed
    if flipped:
        assert int(jnp.sum(jnp.sign(flow.data.x @ TEACHER) != flow.data.y[:, 0])) == flipped
        bare = gf.GradientFlow(flow.model0, flow.loss, gf.Dataset(flow.data.x, flow.data.y), time_scale=flow.time_scale)
        assert pb.LinearMeanFieldMoments.from_flow(bare).teacher is None  # none recorded: no generalisation error
        return
    # Negative control: v0 perturbed by 1e-2 misses by ≫ 100 × 1e-7 (the row's transform checks
    # cover jit/vmap of this evaluate).
    wrong = eqx.tree_at(lambda t: t.v0, theory, theory.v0 * 1.01)
    assert _rel(sol.observables["v"], wrong.evaluate(sol.ts)["v"]) > 100 * 1e-7


def test_moments_seeding_is_explicit():
    # Issue #12 defect 3: "empirical" (default) seeds the nodes' own C0 = ⟨a w∥⟩ ≠ 0 (documented),
    # "population" the paper's C0 = 0, S0 = 1, a pair the given values.
    flow = pb_symmetric_problem()
    a0, par0 = flow.model0.a[0], flow.model0.w @ TEACHER
    for theory in (pb.MeanFieldHinge, pb.MeanFieldHingeFiniteP):
        emp = theory.from_flow(flow)
        assert float(emp.C0) == pytest.approx(float(jnp.mean(a0 * par0)), rel=1e-12)
        assert float(emp.S0) == pytest.approx(float(0.5 * jnp.mean(a0**2 + par0**2)), rel=1e-12)
        assert abs(float(emp.C0)) > 1e-3
        pop = theory.from_flow(flow, moments="population")
        assert (float(pop.C0), float(pop.S0)) == (0.0, 1.0)
        given = theory.from_flow(flow, TEACHER, moments=(0.1, 1.2))
        assert (float(given.C0), float(given.S0)) == (0.1, 1.2)
        with pytest.raises(ValueError, match="`moments` must be one of"):
            theory.from_flow(flow, moments="measured")


def test_repeated_calls_compile_once(caplog):
    # Issue #12 defect 6: evaluate, late_time, gamma_sat and tau_sat of a same-shaped theory with
    # other values reuse the compiled computation (no "Compiling" log on the second theory).
    ts = GRID
    p = jnp.array([0.5, 1.0])

    def calls(theory):
        return (theory.evaluate(ts)["gamma"], theory.late_time()["gamma_offset"], theory.gamma_sat(p),
                theory.tau_sat(p))

    first = calls(pb.MeanFieldHinge(d=D, alpha=0.5, C0=0.1))
    with jax.log_compiles(), caplog.at_level(logging.WARNING, logger="jax"):
        caplog.clear()
        second = calls(pb.MeanFieldHinge(d=D, alpha=1.5, C0=-0.2))
    compiles = [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage()]
    assert not compiles, compiles
    assert not np.allclose(first[1], second[1])  # other values, really


def test_rich_lazy_knob():
    lazy = pb.MeanFieldHinge(d=D, alpha=100.0)
    rich = pb.MeanFieldHinge(d=D, alpha=0.1)
    assert float(lazy.knob) == pytest.approx(100.0 * 0.5 / math.sqrt(D))
    assert (lazy.regime, rich.regime, pb.MeanFieldHinge(d=D).regime) == ("lazy", "rich", "crossover")
    # Lazy: the bulk (p = 1) is fitted at γ ≈ 1/(2A); rich: at γ ≈ ½ ln(2/A).
    assert float(lazy.gamma_sat(1.0)) == pytest.approx(0.5 / float(lazy.knob), rel=1e-3)
    assert float(rich.gamma_sat(1.0)) == pytest.approx(0.5 * math.log(2 / float(rich.knob)), rel=1e-3)


def test_transforms():
    # The THEORY_CASES rows run evaluate plain/jit/vmap/jit∘vmap; here the other public functions:
    # the finite-P solution over C0, τ_sat / γ_sat / late_time over theories, frozen_dataset_gamma.
    ts = jnp.linspace(0.0, 5.0, 6)
    data = pb.separable_gaussian(40, D, key=jr.PRNGKey(3))
    proj = data.y[:, 0] * (data.x @ TEACHER)

    def finite(c0):
        return pb.MeanFieldHingeFiniteP(proj, d=D, alpha=ALPHA, C0=c0).evaluate(ts)["unsatisfied_fraction"]

    c0s = jnp.array([0.0, 0.3])
    plain = jnp.stack([finite(c) for c in c0s])
    assert np.allclose(jax.jit(finite)(c0s[1]), plain[1], rtol=1e-12)
    assert np.allclose(jax.vmap(finite)(c0s), plain, rtol=1e-12)
    assert np.allclose(jax.jit(jax.vmap(finite))(c0s), plain, rtol=1e-12)
    assert float(jnp.max(jnp.abs(plain[0] - plain[1]))) > 0
    p = jnp.array([0.5, 1.0])

    def scalars(alpha):
        th = pb.MeanFieldHinge(d=D, alpha=alpha, C0=0.1)
        return jnp.concatenate([th.tau_sat(p), th.gamma_sat(p), th.late_time()["gamma_offset"][None],
                                pb.frozen_dataset_gamma(proj, ts, d=D) * alpha])

    alphas = jnp.array([0.5, 2.0])
    ref = jnp.stack([scalars(a) for a in alphas])
    for got in (jax.jit(scalars)(alphas[1]), jax.vmap(scalars)(alphas)[1], jax.jit(jax.vmap(scalars))(alphas)[1]):
        np.testing.assert_allclose(got, ref[1], rtol=1e-12)
    # The node observables under jit and vmap over parameter sets.
    flow = pb_symmetric_problem()
    params = jax.tree_util.tree_map(lambda x: jnp.stack([x, 2 * x]), flow.params0)
    for name, fn in pb.node_observables().items():
        one = lambda q: fn(0.0, q, flow)
        ref = jnp.stack([one(jax.tree_util.tree_map(lambda x: x[i], params)) for i in range(2)])
        np.testing.assert_allclose(jax.jit(jax.vmap(one))(params), ref, rtol=1e-12, atol=1e-14, err_msg=name)


def test_bad_input(getkey):
    data = pb.separable_gaussian(40, D, key=getkey())
    model = gf.TwoLayer(D, 4, "relu", scaling="mean_field", key=getkey())
    with pytest.raises(ValueError, match="`margin` must be > 0"):
        pb.hinge_with_margin(0.0)
    with pytest.raises(ValueError, match="`margin` must be > 0"):
        pb.MeanFieldHinge(d=D, margin=-1.0)
    with pytest.raises(ValueError, match="`width` must be an integer ≥ 1"):
        pb.mean_field_time_scale(2.5, 1.0)
    with pytest.raises(ValueError, match="`widths` must be an integer ≥ 1"):
        pb.finite_width_sweep((0, 4), 2, data, key=getkey())
    with pytest.raises(ValueError, match="`activation` must be one of"):
        pb.MeanFieldHinge(d=D, activation="tanh")
    with pytest.raises(ValueError, match="linearly separable labels"):
        pb.MeanFieldHingeFiniteP(jnp.array([1.0, -0.5]), d=D)
    with pytest.raises(ValueError, match="`teacher` must have shape"):
        pb.separable_gaussian(8, D, key=getkey(), teacher=jnp.ones(3))
    with pytest.raises(ValueError, match="`teacher` must be given"):
        bare = pb.mean_field_hinge_flow(model, gf.Dataset(data.x, data.y))
        pb.w_par(0.0, bare.params0, bare)
    assert pb.hinge_with_margin(2.0) is pb.hinge_with_margin(2.0)  # one loss per margin: one compile
    # Any clock: a flow in plain time (time_scale 1) is on τ = α t / M, and the theory says so.
    plain_clock = gf.GradientFlow(model, pb.hinge_with_margin(1.0), data)
    assert float(pb.MeanFieldHinge.from_flow(plain_clock).time_scale) == pytest.approx(1.0 / 4)
    assert float(pb.MeanFieldHinge.from_flow(pb.mean_field_hinge_flow(model, data)).time_scale) == 1.0
    # Non-Gaussian inputs: the P = ∞ theory warns and points to the finite-P variant.
    u = jr.uniform(getkey(), (200, D), minval=-1.0, maxval=1.0)
    uniform = gf.Dataset(u, jnp.sign(u @ TEACHER))
    with pytest.warns(UserWarning, match="MeanFieldHingeFiniteP"):
        pb.MeanFieldHinge.from_flow(pb.mean_field_hinge_flow(model, uniform), TEACHER)


def test_notebook_runs_small(tmp_path):
    ns = run_notebook(REPO / "notebooks" / "pellegrini_biroli2020.ipynb", GFLOW_OUT=str(tmp_path))
    assert ns["SMALL"] is True
    assert len(ns["paths"]) == 6 and all(p.exists() for p in ns["paths"])
