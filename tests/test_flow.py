"""The engine: GradientFlow, solve_flow, observables, events, errors, transforms."""

import functools
import re

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import tree_allclose

import gflow as gf

#: The engine's solver choice (auto / explicit / implicit, and auto's switching) is tested in
#: test_solvers.py and test_runner.py; the flow mechanics here (events, saves, restarts, errors,
#: transforms) run on the explicit solver: one compiled segment instead of auto's two.
solve_flow = functools.partial(gf.solve_flow, solver="explicit")

T1 = 5.0


def _data(n=16, d=4, labels="regression"):
    teacher = gf.TwoLayer(d, 3, "tanh", key=jr.PRNGKey(42))
    return gf.teacher_student(d, n, teacher, key=jr.PRNGKey(1), labels=labels)


DATA = _data()


def make_flow(key, data=DATA, loss=gf.squared_error, **kw):
    return gf.GradientFlow(gf.TwoLayer(4, 8, "tanh", key=key), loss, data, **kw)


def losses(key):
    return solve_flow(make_flow(key), T1, num_times=9, observables=["loss"]).observables["loss"]


def test_plain_jit_vmap_agree():
    keys = jr.split(jr.PRNGKey(0), 3)
    plain = jnp.stack([losses(k) for k in keys])
    jitted = jnp.stack([jax.jit(losses)(k) for k in keys])
    vmapped = jax.vmap(losses)(keys)
    both = jax.jit(jax.vmap(losses))(keys)
    # Same arithmetic up to XLA fusion differences: agreement far below the solver tolerance.
    for other in (jitted, vmapped, both):
        assert jnp.allclose(plain, other, rtol=1e-12, atol=1e-14)
    assert bool(jnp.all(jnp.diff(plain, axis=1) <= 1e-12))  # gradient flow never raises the loss


def test_sweep_of_64_inits_compiles_once():
    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def sweep(keys):
        return jax.vmap(losses)(keys)

    a = sweep(jr.split(jr.PRNGKey(1), 64))
    b = sweep(jr.split(jr.PRNGKey(2), 64))
    assert a.shape == b.shape == (64, 9)
    assert bool(jnp.all(jnp.isfinite(a)))


def test_default_grid_and_stats():
    sol = solve_flow(make_flow(jr.PRNGKey(0)), 10.0, observables=["loss", "weight_norms", "gradient_norm"])
    assert sol.ts.shape == (121,)
    assert float(sol.ts[0]) == 0.0
    assert jnp.allclose(sol.ts[1], 10.0 * 1e-6) and jnp.allclose(sol.ts[-1], 10.0)
    assert sol.observables["weight_norms"].shape == (121, 2)
    assert sol.observables["gradient_norm"].shape == (121,)
    steps = int(sol.stats["num_steps"])
    assert steps == int(sol.stats["num_accepted_steps"]) + int(sol.stats["num_rejected_steps"])
    assert int(sol.stats["rhs_evaluations"]) == 6 * steps + 1  # Tsit5: 7 stages, FSAL
    assert bool(sol.succeeded) and float(sol.t_final) == 10.0 and bool(jnp.isinf(sol.event_time))


def test_time_scale_and_rates_rescale_the_clock():
    ts = jnp.linspace(0.0, 2.0, 5)
    base = solve_flow(make_flow(jr.PRNGKey(0)), 2.0, ts=ts, rtol=1e-10, atol=1e-12)
    fast = solve_flow(make_flow(jr.PRNGKey(0), time_scale=2.0), 1.0, ts=ts / 2, rtol=1e-10, atol=1e-12)
    assert jnp.allclose(base.observables["loss"], fast.observables["loss"], rtol=1e-8)
    flow = make_flow(jr.PRNGKey(0))
    rates = jax.tree_util.tree_map(lambda p: 2.0 * jnp.ones_like(p), flow.params0)
    rated = solve_flow(make_flow(jr.PRNGKey(0), rates=rates), 1.0, ts=ts / 2, rtol=1e-10, atol=1e-12)
    assert jnp.allclose(base.observables["loss"], rated.observables["loss"], rtol=1e-8)


def test_frozen_layer_stays_out_of_the_state():
    model = gf.TwoLayer(4, 8, "tanh", train_second=False, key=jr.PRNGKey(0))
    flow = gf.GradientFlow(model, gf.squared_error, DATA)
    assert flow.params0.a is None and flow.params0.w is not None
    sol = solve_flow(flow, 1.0, num_times=3, save_params=True)
    assert sol.observables["params"].w.shape == (3, 8, 4)
    assert jnp.array_equal(flow.model(sol.params_final).a, model.a)


def test_events_exact_time_and_vmap():
    eps = 0.05
    flow = make_flow(jr.PRNGKey(0))
    sol = solve_flow(flow, 1e3, event=gf.loss_below(eps), rtol=1e-10, atol=1e-12)
    t_event = float(sol.event_time)
    assert 0 < t_event < 1e3 and bool(sol.event_mask[0])
    assert jnp.allclose(flow.loss_value(sol.params_final), eps, rtol=1e-6)
    # Entries past the event are inf (diffrax's convention) and the result says "event".
    assert bool(diffrax.is_event(sol.result))
    assert bool(jnp.all(jnp.isinf(sol.observables["loss"][sol.ts > t_event + 1e-9])))

    def event_time(key):
        return solve_flow(make_flow(key), 1e3, num_times=5, event=gf.loss_below(eps)).event_time

    keys = jr.split(jr.PRNGKey(3), 3)
    batched = jax.vmap(event_time)(keys)
    assert jnp.allclose(batched, jnp.stack([event_time(k) for k in keys]), rtol=1e-9)


def test_classification_events():
    data = _data(labels="sign")
    flow = make_flow(jr.PRNGKey(0), data=data, loss=gf.logistic)
    sol = solve_flow(flow, 1e4, event=[gf.all_correct(), gf.gradient_norm_below(1e-12)],
                        observables=["classification_error", "margins"], rtol=1e-10, atol=1e-12)
    assert bool(sol.event_mask[0]) and not bool(sol.event_mask[1])
    margins = gf.OBSERVABLES["margins"](sol.t_final, sol.params_final, flow)
    assert jnp.allclose(jnp.min(margins), 0.0, atol=1e-8)
    sol2 = solve_flow(flow, 1e4, event=gf.margins_at_least(1.0), rtol=1e-10, atol=1e-12)
    margins = gf.OBSERVABLES["margins"](sol2.t_final, sol2.params_final, flow)
    assert jnp.allclose(jnp.min(margins), 1.0, atol=1e-8) and float(sol2.event_time) > float(sol.event_time)


def test_max_steps_throw_and_keep():
    flow = make_flow(jr.PRNGKey(0))
    with pytest.raises(Exception, match=re.escape("maximum number of solver steps (`max_steps`)")):
        solve_flow(flow, 100.0, max_steps=8, rtol=1e-10, atol=1e-12)
    ts = jnp.linspace(0.0, 100.0, 201)
    partial = solve_flow(flow, 100.0, ts=ts, max_steps=30, throw=False, rtol=1e-10, atol=1e-12)
    assert partial.result == diffrax.RESULTS.max_steps_reached
    full = solve_flow(flow, 100.0, ts=ts, rtol=1e-10, atol=1e-12)
    done = jnp.isfinite(partial.observables["loss"])
    assert 1 < int(jnp.sum(done)) < 201  # what was computed before the failure is kept
    assert jnp.allclose(partial.observables["loss"][done], full.observables["loss"][done], rtol=1e-8)
    assert 0 < float(partial.t_final) < 100.0


def test_bad_input():
    flow = make_flow(jr.PRNGKey(0))
    with pytest.raises(ValueError, match=re.escape("`t1` must be > t0 = 0.0; got -1.0")):
        solve_flow(flow, -1.0)
    with pytest.raises(ValueError, match=re.escape("`ts` must be non-decreasing")):
        solve_flow(flow, 1.0, ts=jnp.array([0.0, 0.5, 0.2, 1.0]))
    with pytest.raises(ValueError, match=re.escape("`ts` must be non-decreasing and lie in [t0, t1]")):
        solve_flow(flow, 1.0, ts=jnp.array([0.0, 2.0]))
    with pytest.raises(ValueError, match="`observables` must name observables from"):
        solve_flow(flow, 1.0, observables=["los"])
    with pytest.raises(TypeError, match="`flow` must be a gflow.GradientFlow|parameter .flow."):
        solve_flow(flow.params0, 1.0)
    with pytest.raises(TypeError, match="`event\\[0\\]` must be a TrainingEvent|parameter .event."):
        solve_flow(flow, 1.0, event=[lambda *a: 0.0])
    nan_model = eqx.tree_at(lambda m: m.w, flow.model0, flow.model0.w.at[0, 0].set(jnp.nan))
    with pytest.raises(ValueError, match=re.escape("`initial parameters` must contain only finite values; got NaN or inf")):
        solve_flow(gf.GradientFlow(nan_model, gf.squared_error, DATA), 1.0)


def test_bad_input_under_vmap():
    flow = make_flow(jr.PRNGKey(0))

    def run(scale, t1):
        model = eqx.tree_at(lambda m: m.w, flow.model0, flow.model0.w * scale)
        return solve_flow(gf.GradientFlow(model, gf.squared_error, DATA), t1, num_times=3).observables["loss"]

    ok = jax.vmap(run)(jnp.ones(2), jnp.ones(2))
    assert ok.shape == (2, 3)
    with pytest.raises(Exception, match="`initial parameters` must contain only finite values"):
        jax.vmap(run)(jnp.array([1.0, jnp.nan]), jnp.ones(2))
    with pytest.raises(Exception, match="`t1` must be > t0"):
        jax.vmap(run)(jnp.ones(2), jnp.array([1.0, -1.0]))


def test_gradient_flow_input_errors():
    with pytest.raises(TypeError, match="`model` must be a gflow AbstractModel|parameter .model."):
        gf.GradientFlow(lambda x: x, gf.squared_error, DATA)
    with pytest.raises(TypeError, match="`data` must be a gflow Dataset|parameter .data."):
        gf.GradientFlow(gf.TwoLayer(4, 8, key=jr.PRNGKey(0)), gf.squared_error, (DATA.x, DATA.y))
    frozen = gf.TwoLayer(4, 8, train_first=False, train_second=False, key=jr.PRNGKey(0))
    with pytest.raises(ValueError, match="`model` must have at least one trainable array"):
        gf.GradientFlow(frozen, gf.squared_error, DATA)
    with pytest.raises(ValueError, match="`rates` must have the structure of the trainable parameters"):
        gf.GradientFlow(gf.TwoLayer(4, 8, key=jr.PRNGKey(0)), gf.squared_error, DATA, rates=(1.0, 2.0))


def test_restart_continues_trajectory():
    flow = make_flow(jr.PRNGKey(0))
    kw = dict(rtol=1e-10, atol=1e-12, save_params=True)
    first = solve_flow(flow, 1.0, num_times=3, **kw)
    second = solve_flow(flow, 3.0, start=first, num_times=3, **kw)
    whole = solve_flow(flow, 3.0, num_times=3, **kw)
    assert tree_allclose(second.params_final, whole.params_final, rtol=1e-8, atol=1e-10)
    assert jnp.allclose(second.ts[0], 1.0) and jnp.allclose(second.ts[-1], 3.0)


def test_padded_flow_is_the_unpadded_flow():
    # Width 5 of 12 stored units, 11 of 16 samples: solve_flow scales rtol/atol by √(5/12) so the
    # error norm is the RMS over the real entries, hence the same steps as the unpadded solve and
    # agreement to round-off (not merely to rtol).
    x = jr.normal(jr.PRNGKey(1), (16, 8))
    data = gf.Dataset(x, jnp.tanh(x[:, 0]))
    model = gf.TwoLayer(8, 12, "tanh", scaling="ntk", key=jr.PRNGKey(0), active_width=5)
    padded = gf.GradientFlow(model, gf.squared_error, data.first(11))
    real = padded.unpadded()
    assert padded.is_padded and not real.is_padded and real.model0.width == 5 and real.data.n == 11
    sols = [solve_flow(f, 10.0, num_times=11, rtol=1e-8, atol=1e-10) for f in (padded, real)]
    assert int(sols[0].stats["num_steps"]) == int(sols[1].stats["num_steps"])
    np.testing.assert_allclose(sols[0].observables["loss"], sols[1].observables["loss"], rtol=1e-12)
    np.testing.assert_allclose(sols[0].params_final.w[:5], sols[1].params_final.w, rtol=1e-11, atol=1e-14)
    assert jnp.all(sols[0].params_final.w[5:] == 0)  # padding never moves
    # The control: the same solve without the tolerance scaling takes other steps and misses
    # the unpadded trajectory by far more than round-off.
    unscaled = diffrax.diffeqsolve(
        diffrax.ODETerm(padded.vector_field), diffrax.Tsit5(), 0.0, 10.0, None, padded.params0, padded,
        saveat=diffrax.SaveAt(ts=sols[0].ts, fn=lambda t, y, f: f.loss_value(y)),
        stepsize_controller=diffrax.PIDController(rtol=1e-8, atol=1e-10), max_steps=4096)
    assert int(unscaled.stats["num_steps"]) != int(sols[1].stats["num_steps"])
    assert float(gf.relative_error(unscaled.ys, sols[1].observables["loss"])) > 1e-11
    # Theories read sizes off array shapes: a padded flow is refused, by name, with the fix.
    with pytest.raises(ValueError, match=r"LinearizedMSE assumes a flow at its real sizes.*flow.unpadded\(\)"):
        gf.ntk.LinearizedMSE.from_flow(padded)
    gf.ntk.LinearizedMSE.from_flow(real)
