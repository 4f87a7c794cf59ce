"""Solver paths (explicit, matrix-free implicit, auto-switching) and the energy audit."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from jaxtyping import Array, Float

import gflow as gf


class _Linear(gf.AbstractModel):
    """f(x) = w·x: with x_μ = √n·s_μ e_μ (n = d) the loss ½ mean (w·x − y)² has Hessian diag(s²)."""

    w: Float[Array, " d"]

    def __call__(self, x):
        return jnp.atleast_1d(self.w @ x)

#: The energy audit's documented bound (`solve_flow`): a residual ≤ 100·rtol is consistent.
ENERGY_TOLERANCE = 100.0


def quadratic_flow(eigenvalues, time_scale=1.0):
    """L(w) = ½ Σ λ_i (w_i − w*_i)² + const: every coordinate relaxes as e^{−κλ_i t}."""
    lam = jnp.asarray(eigenvalues, dtype=float)
    d = lam.shape[0]
    x = jnp.sqrt(d) * jnp.diag(jnp.sqrt(lam))
    y = x @ jnp.linspace(0.5, 1.5, d)
    return gf.GradientFlow(_Linear(jnp.zeros(d)), gf.squared_error, gf.Dataset(x, y), time_scale=time_scale)


def tanh_flow(key=jr.PRNGKey(0), d=3, width=4, n=8):
    kx, ky, km = jr.split(key, 3)
    x = jr.normal(kx, (n, d))
    y = jnp.sin(x @ jr.normal(ky, (d,)))[:, None]
    return gf.GradientFlow(gf.TwoLayer(d, width, "tanh", key=km), gf.squared_error, gf.Dataset(x, y))


SOLVERS = ["explicit", "implicit", "auto"]
# A mildly stiff quadratic (λ = 1, 300): auto switches (near t ≈ 0.05) well inside t1 = 4.
STIFF = (1.0, 300.0)
T1 = 4.0
RTOL, ATOL = 1e-8, 1e-10
TS = jnp.array([0.0, 0.01, 0.1, 1.0, T1])


def _solve(flow, solver):
    return gf.solve_flow(flow, T1, ts=TS, solver=solver, rtol=RTOL, atol=ATOL, throw=False)


@pytest.mark.parametrize("solver", SOLVERS)
def test_plain_jit_vmap_jit_vmap(solver):
    """Every solver path: plain, jit, vmap (over time scales) and jit∘vmap give one answer,
    which is the exact e^{−κλt} relaxation to the tolerance."""
    scales = jnp.array([1.0, 2.0])
    make = lambda k: quadratic_flow(STIFF, time_scale=k)  # noqa: E731
    plain = [_solve(make(k), solver) for k in scales]
    jitted = eqx.filter_jit(lambda k: _solve(make(k), solver))(scales[1])
    vmapped = jax.vmap(lambda k: _solve(make(k), solver))(scales)
    both = jax.jit(jax.vmap(lambda k: _solve(make(k), solver)))(scales)
    lam = jnp.asarray(STIFF)
    w_star = jnp.linspace(0.5, 1.5, 2)
    for i, k in enumerate(scales):
        # Exact loss: ½ Σ λ_i w*_i² e^{−2κλ_i t} (w0 = 0).
        exact = 0.5 * jnp.sum((lam * w_star**2)[None, :] * jnp.exp(-2 * k * TS[:, None] * lam[None, :]), axis=1)
        # Global error of an rtol-controlled solve over this horizon: ≲ 10³·rtol relative.
        np.testing.assert_allclose(plain[i].observables["loss"], exact, rtol=1e3 * RTOL, atol=1e3 * ATOL)
        # Negative control: the exact curve for a 1 % wrong stiff eigenvalue misses by ≫ 10³·rtol.
        off = lam * jnp.array([1.0, 1.01])
        wrong = 0.5 * jnp.sum((lam * w_star**2)[None, :] * jnp.exp(-2 * k * TS[:, None] * off[None, :]), axis=1)
        miss = jnp.max(jnp.abs(plain[i].observables["loss"] - wrong) / jnp.abs(wrong))
        assert float(miss) > 100 * 1e3 * RTOL
        for other in (vmapped, both):
            np.testing.assert_allclose(other.observables["loss"][i], plain[i].observables["loss"],
                                       rtol=1e-10, atol=1e-14)
            assert int(other.stats["num_steps"][i]) == int(plain[i].stats["num_steps"])
    np.testing.assert_allclose(jitted.observables["loss"], plain[1].observables["loss"], rtol=1e-10, atol=1e-14)
    if solver == "auto":
        assert bool(jnp.all(vmapped.stats["switch_time"] < T1))
        assert bool(jnp.all(vmapped.stats["num_steps_implicit"] > 0))
        # κ = 2 halves every time scale, so it becomes stiffness-limited about twice as early.
        ratio = float(vmapped.stats["switch_time"][0] / vmapped.stats["switch_time"][1])
        assert 1.3 < ratio < 3.0


TANH_T1 = 30.0
TANH_TS = jnp.array([0.0, 0.1, 1.0, 10.0, TANH_T1])


@pytest.fixture(scope="module")
def tanh_solves():
    """One explicit and one implicit solve of the tiny tanh net, shared by the tests below."""
    flow = tanh_flow()
    explicit = gf.solve_flow(flow, TANH_T1, ts=TANH_TS, rtol=RTOL, atol=ATOL)
    implicit = gf.solve_flow(flow, TANH_T1, ts=TANH_TS, solver=gf.MatrixFreeImplicit(), rtol=RTOL, atol=ATOL)
    return flow, explicit, implicit


def test_implicit_agrees_with_explicit_on_a_tanh_net(tanh_solves):
    """Both paths at rtol 1e-8 in float64 on a nonlinear flow: each is within ≲ 10²·rtol of the
    exact trajectory (relative), so they agree to 10³·rtol = 1e-5."""
    _, explicit, implicit = tanh_solves
    np.testing.assert_allclose(implicit.observables["loss"], explicit.observables["loss"], rtol=1e3 * RTOL)
    for a, b in zip(jax.tree_util.tree_leaves(implicit.params_final), jax.tree_util.tree_leaves(explicit.params_final)):
        np.testing.assert_allclose(a, b, rtol=1e3 * RTOL, atol=1e3 * ATOL)
    assert bool(jnp.isnan(implicit.stats["rhs_evaluations"]))


def test_auto_switches_only_when_stiff():
    """λ = (1, 1000): the explicit step is stability-capped at ≈ 3.5e-3 once the fast mode has
    relaxed to the tolerance (e^{−1000 t} ≈ 1e-8 → t ≈ 0.02), so the switch falls in
    [2e-3, 0.2] and auto takes far fewer steps than Tsit5. λ = (1, 2) is never stiff on
    t ≤ 4: no switch, no implicit steps, and exactly Tsit5's steps. (Same shapes, t1 and
    tolerances as the path test: no new compiles.)"""
    stiff = quadratic_flow((1.0, 1000.0))
    auto, explicit = _solve(stiff, "auto"), _solve(stiff, "explicit")
    assert 2e-3 < float(auto.stats["switch_time"]) < 0.2
    assert int(auto.stats["num_steps_implicit"]) > 0
    assert int(auto.stats["num_steps"]) == int(auto.stats["num_steps_explicit"] + auto.stats["num_steps_implicit"])
    assert int(auto.stats["num_steps"]) < int(explicit.stats["num_steps"]) / 3
    # The record: one explicit segment, then implicit to t1 (λ_max = 1000 never collapses).
    assert auto.stats["segment_solvers"].tolist()[:3] == [0, 1, -1]
    assert float(auto.stats["segment_start_times"][1]) == float(auto.stats["switch_time"])
    np.testing.assert_allclose(auto.observables["loss"], explicit.observables["loss"], rtol=1e3 * RTOL, atol=1e3 * ATOL)

    mild = quadratic_flow((1.0, 2.0))
    auto, explicit = _solve(mild, "auto"), _solve(mild, "explicit")
    assert float(auto.stats["switch_time"]) == float("inf")
    assert int(auto.stats["num_steps_implicit"]) == 0
    assert auto.stats["segment_solvers"].tolist()[:2] == [0, -1]
    assert int(auto.stats["num_steps"]) == int(explicit.stats["num_steps"])
    np.testing.assert_array_equal(auto.observables["loss"], explicit.observables["loss"])


def test_audit_leaves_step_counts_unchanged(tanh_solves):
    """The energy integral rides outside the error norm: Tsit5 + PID on the bare vector field
    takes exactly the steps `solve_flow` takes, and lands on the same θ."""
    flow, sol, _ = tanh_solves
    bare = diffrax.diffeqsolve(
        diffrax.ODETerm(flow.vector_field), diffrax.Tsit5(), 0.0, TANH_T1, None, flow.params0, flow,
        stepsize_controller=diffrax.PIDController(rtol=RTOL, atol=ATOL),
    )
    assert int(sol.stats["num_steps"]) == int(bare.stats["num_steps"])
    for a, b in zip(jax.tree_util.tree_leaves(sol.params_final), jax.tree_util.tree_leaves(bare.ys)):
        np.testing.assert_allclose(a, b[-1], rtol=1e-12, atol=1e-15)


def test_energy_audit_passes_on_ordinary_flows(tanh_solves):
    """Explicit and implicit solves (which ran under filterwarnings=error: no warning) and the
    quadratic flows: residual ≤ ENERGY_TOLERANCE·rtol."""
    _, explicit, implicit = tanh_solves
    quadratic = _solve(quadratic_flow(STIFF), "explicit")
    for sol in (explicit, implicit, quadratic):
        assert 0.0 <= float(sol.stats["energy_residual"]) <= ENERGY_TOLERANCE * RTOL


def _inconsistent_loss(prediction, target):
    # The reported loss has a term the gradient never sees.
    return gf.squared_error(prediction, target) + 0.5 * jnp.sum(jax.lax.stop_gradient(prediction) ** 2)


def test_energy_audit_flags_a_stop_gradient_loss():
    # The audit is the same for every solver (it rides in `solve_flow`'s state); Tsit5 keeps the
    # jitted solve to one solver's compile (jitted "auto" compiles the implicit solver too).
    flow = tanh_flow()
    bad = gf.GradientFlow(flow.model0, _inconsistent_loss, flow.data)
    kw = dict(ts=TANH_TS, solver="explicit", rtol=RTOL, atol=ATOL)
    with pytest.warns(RuntimeWarning, match="stop_gradient"):
        sol = gf.solve_flow(bad, TANH_T1, **kw)
    assert float(sol.stats["energy_residual"]) > 1e-2
    # Under jit nothing is concrete: the residual is only reported, never warned about.
    jitted = eqx.filter_jit(lambda f: gf.solve_flow(f, TANH_T1, **kw))(bad)
    np.testing.assert_allclose(jitted.stats["energy_residual"], sol.stats["energy_residual"], rtol=1e-8)


def _walk_shapes(jaxpr, out):
    for eqn in jaxpr.eqns:
        for v in eqn.outvars:
            out.append(tuple(getattr(v.aval, "shape", ())))
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    _walk_shapes(sub.jaxpr, out)
                elif isinstance(sub, jax.extend.core.Jaxpr):
                    _walk_shapes(sub, out)
    return out


def test_implicit_path_never_builds_a_jacobian():
    """P ≈ 1e5 parameters: the traced implicit solve (shapes only, nothing runs) holds no array
    bigger than `restart` + a few copies of θ (GMRES keeps `restart` Krylov vectors); a dense
    Jacobian would be P² ≈ 1e10 entries."""
    d, width, n = 100, 1000, 4
    flow = gf.GradientFlow(
        gf.TwoLayer(d, width, "tanh", key=jr.PRNGKey(0)), gf.squared_error,
        gf.Dataset(jnp.ones((n, d)), jnp.ones((n, 1))),
    )
    size = sum(p.size for p in jax.tree_util.tree_leaves(flow.params0))
    assert size > 1e5
    solver = gf.MatrixFreeImplicit()
    jaxpr = jax.make_jaxpr(lambda f: gf.solve_flow(f, 10.0, solver=solver, throw=False))(flow)
    shapes = _walk_shapes(jaxpr.jaxpr, [])
    biggest = max(int(np.prod(s)) for s in shapes)
    assert biggest <= (solver.restart + 4) * size
    assert not any(s.count(size) >= 2 for s in shapes)


def test_bad_solver_names_are_refused():
    flow = quadratic_flow((1.0, 2.0))
    with pytest.raises(ValueError, match="`solver` must"):
        gf.solve_flow(flow, 1.0, solver="stiff")
    with pytest.raises(TypeError):
        gf.solve_flow(flow, 1.0, solver=3)
    with pytest.raises(ValueError, match="`order` must"):
        gf.MatrixFreeImplicit(order=2)


class _Valley(gf.AbstractModel):
    """Outputs (√A(u)·v, √β·u) on the two unit inputs: L = ¼(A(u)v² + β(u − 3)²), with
    A(u) = 1000·exp(−u²/w²). The top Hessian eigenvalue A(u)/2 ≈ 500 is stiff while u ≈ 0;
    v relaxes at once and u then drifts to 3 as u(t) ≈ 3(1 − e^{−βt/2}) (v ≈ 0), so with w = 1
    the stiff eigenvalue collapses (A(2)/2 ≈ 9) as the flow leaves the valley; with w = 10³ it
    stays ≈ 500 (the negative control)."""

    u: Float[Array, ""]
    v: Float[Array, ""]
    w: Float[Array, ""]

    def __call__(self, x):
        a = 1000.0 * jnp.exp(-((self.u / jax.lax.stop_gradient(self.w)) ** 2))
        return jnp.atleast_1d(x[0] * jnp.sqrt(a) * self.v + x[1] * jnp.sqrt(VALLEY_BETA) * self.u)


VALLEY_BETA, VALLEY_T1 = 0.1, 100.0
VALLEY_TS = jnp.array([0.0, 0.1, 1.0, 10.0, VALLEY_T1])


def valley_flow(w):
    data = gf.Dataset(jnp.eye(2), jnp.array([[0.0], [3.0 * jnp.sqrt(VALLEY_BETA)]]))
    model = _Valley(jnp.asarray(0.0), jnp.asarray(1.0), jnp.asarray(w, dtype=float))
    # w is a parameter whose gradient is stopped: it stays constant along the flow.
    return gf.GradientFlow(model, gf.squared_error, data)


def test_auto_switches_back_when_the_flow_leaves_the_stiff_region():
    """Stiff early, non-stiff later (`_Valley`, w = 1): explicit → implicit once the fast mode has
    relaxed (t < 1), implicit → explicit once λ_max has collapsed (the explicit step bound
    3.5/λ_max is then within `back_ratio` of the implicit step), and no third switch. Asserted
    from the per-segment record; the loss agrees with Tsit5's to 10³·rtol (each ≲ 10²·rtol off
    the exact flow). Under vmap each member keeps its own record: the control member (w = 10³,
    λ_max stays ≈ 500) switches to implicit and never back."""
    flow = valley_flow(1.0)
    kw = dict(ts=VALLEY_TS, rtol=RTOL, atol=ATOL)
    explicit = gf.solve_flow(flow, VALLEY_T1, solver="explicit", **kw)
    auto = gf.solve_flow(flow, VALLEY_T1, **kw)  # the default solver
    np.testing.assert_allclose(auto.observables["loss"], explicit.observables["loss"], rtol=1e3 * RTOL)
    assert auto.stats["segment_solvers"].tolist()[:4] == [0, 1, 0, -1]
    assert int(auto.stats["num_segments"]) == 3
    starts = auto.stats["segment_start_times"]
    assert float(auto.stats["switch_time"]) == float(starts[1]) < 1.0
    # At the switch back, u(t) ≈ 3(1 − e^{−βt/2}) has left the valley: λ_max = 500·e^{−u²}
    # has dropped more than 10× (u > √ln 10), long before the end.
    t_back = float(starts[2])
    u_back = 3 * (1 - np.exp(-VALLEY_BETA * t_back / 2))
    assert u_back > np.sqrt(np.log(10.0)) and t_back < VALLEY_T1 / 2
    assert int(auto.stats["num_steps"]) == int(jnp.sum(auto.stats["segment_steps"]))
    assert int(auto.stats["num_steps"]) < int(explicit.stats["num_steps"]) / 3
    assert float(auto.stats["energy_residual"]) <= ENERGY_TOLERANCE * RTOL

    both = jax.vmap(lambda w: gf.solve_flow(valley_flow(w), VALLEY_T1, throw=False, **kw))(jnp.array([1.0, 1e3]))
    assert both.stats["segment_solvers"][0].tolist() == auto.stats["segment_solvers"].tolist()
    assert int(both.stats["num_steps"][0]) == int(auto.stats["num_steps"])
    np.testing.assert_allclose(both.observables["loss"][0], auto.observables["loss"], rtol=1e-10)
    assert both.stats["segment_solvers"][1].tolist()[:3] == [0, 1, -1]  # control: stays implicit
