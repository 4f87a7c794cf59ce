"""The slot runner (continuous batching): members continue their own solve a step budget at a
time, equal bit for bit to `solve_flow`, and a sweep pays each member only its own steps."""

import diffrax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

import gflow as gf
from gflow import sweep

D, WIDTH, N = 4, 4, 16
T1 = 50.0
RTOL, ATOL = 1e-8, 1e-10
X = jr.normal(jr.PRNGKey(1), (N, D))
Y = jnp.tanh(X @ jnp.linspace(-1.0, 1.0, D))


def make_flow(key, hyper):
    # time_scale c: the vector field is c × the c = 1 field, so c = 100 is a 100× stiffer
    # member (its explicit steps are capped at 1/100 of the others' near the minimum).
    model = gf.TwoLayer(D, WIDTH, "tanh", init_scale=hyper.get("init_scale", 1.0), key=key)
    return gf.GradientFlow(model, gf.squared_error, gf.Dataset(X, Y), time_scale=hyper["c"])


#: The single-solver tests run Tsit5: they test the slot mechanics with one solver, and their
#: stiff member must stay explicit (under the default "auto" it switches and is no longer slow).
TSIT5 = diffrax.Tsit5()


def _single(key, c, ts, solver=TSIT5, **kw):
    flow = make_flow(key, {"c": jnp.asarray(float(c)), "init_scale": jnp.asarray(1.0)})
    return gf.solve_flow(flow, T1, ts=ts, rtol=RTOL, atol=ATOL, throw=False, solver=solver, **kw)


def test_stiff_member_does_not_slow_the_others_and_results_equal_single_solves():
    # 8 members, one of them 100× stiffer, in 2 slots: each member costs its own steps (plus
    # under one step budget of idling per member), while a plain vmap of the 8 would step
    # all of them until the stiff one finishes.
    cs = [1.0] * 7 + [100.0]
    stats = {}
    ds = sweep(make_flow, 1, T1, grid={"c": cs}, num_times=11, rtol=RTOL, atol=ATOL, slots=2,
               runner_stats=stats, progress=False, solver=TSIT5)
    own = ds["num_steps"].values.ravel()
    assert own[-1] > 10 * own[:-1].max()  # the stiff member really is much slower
    # Counted work (each call costs its slowest slot's steps in both slots). With 2 slots no
    # schedule does better than 2 × max(slowest member, half the total): the stiff member's
    # slot sets the pace while the other slot works through the fast ones. A plain vmap of
    # all 8 steps every member until the stiff one is done: 8 × its steps.
    slots, budget = 2, 64  # the per-call step budget of the default max_steps = 16 384
    ideal = slots * max(own.max(), own.sum() / slots)
    assert stats["slot_steps"] <= 1.2 * ideal + slots * budget
    assert stats["slot_steps"] < len(cs) * own.max() / 3
    # Each member is the same step sequence as one uninterrupted solve.
    ts = jnp.asarray(ds["time"].values)
    key = jr.split(jr.PRNGKey(0), 1)[0]
    for i in (0, 7):  # a fast and the stiff member
        sol = _single(key, cs[i], ts, max_steps=16_384)
        # Batched (vmap) vs single arithmetic: the same steps, equal to round-off (accumulated
        # over ~2,000 steps for the stiff member).
        np.testing.assert_allclose(ds["loss"].isel(c=i, member=0).values, np.asarray(sol.observables["loss"]),
                                   rtol=1e-11)
        assert int(ds["num_steps"].isel(c=i, member=0)) == int(sol.stats["num_steps"])
        # The audit travels with the slot: the same residual up to round-off in its inputs,
        # and within the audit's tolerance (100 × rtol).
        residual = float(ds["energy_residual"].isel(c=i, member=0))
        assert residual < 100 * RTOL
        assert abs(residual - float(sol.stats["energy_residual"])) < 1e-3 * RTOL


def test_budget_boundaries_and_failures_match_single_solves():
    # max_steps = 40 is its own budget; the stiff member (c = 100) stops at exactly 40 steps with
    # max_steps_reached, as a single solve does, and a NaN init is recorded, not solved.
    grid = {"p": {"c": [1.0, 100.0, 1.0], "init_scale": [1.0, 1.0, 0.0]}}
    def nan_at_zero(key, hyper):  # init_scale 0 -> 0/0: a non-finite initial state
        return make_flow(key, {**hyper, "init_scale": hyper["init_scale"] / hyper["init_scale"]})

    ds = sweep(nan_at_zero, 1, T1, grid=grid, num_times=11, rtol=RTOL, atol=ATOL, max_steps=40, slots=2,
               on_failure="ignore", progress=False, solver=TSIT5)
    codes = ds["result"].values.ravel().tolist()
    max_steps_code = int(diffrax.RESULTS.max_steps_reached._value)
    assert codes[1] == max_steps_code
    assert int(ds["num_steps"].values.ravel()[1]) == 40
    assert codes[2] == -1  # 0/0 init_scale: non-finite initial parameters
    ts = jnp.asarray(ds["time"].values)
    sol = _single(jr.split(jr.PRNGKey(0), 1)[0], 100.0, ts, max_steps=40)
    np.testing.assert_allclose(ds["loss"].isel(p=1, member=0).values, np.asarray(sol.observables["loss"]), rtol=1e-11)
    assert bool(ds["succeeded"].values.ravel()[1]) is False


def test_auto_sweep_is_lockstep_free_and_members_equal_single_auto_solves():
    """The default solver ("auto") through the slot runner: two pools (explicit, implicit) of one
    slot each. The 100× stiffer member switches to implicit (and back and forth, by its own
    record) while the other stays explicit; each pool call advances only its own slot, so the
    counted work is exactly the members' own steps, summed, whereas a vmap (lockstep) steps
    both members until the slower is done: ≥ 2 × the larger step count. Each member is the same
    step sequence as its single `solve_flow(solver="auto")`."""
    cs = [1.0, 100.0]
    stats = {}
    ds = sweep(make_flow, 1, T1, grid={"c": cs}, num_times=11, rtol=RTOL, atol=ATOL, slots=1,
               runner_stats=stats, progress=False)
    own = ds["num_steps"].values.ravel()
    assert stats["slot_steps"] == own.sum()
    assert stats["slot_steps"] < 0.7 * len(cs) * own.max()
    ts = jnp.asarray(ds["time"].values)
    key = jr.split(jr.PRNGKey(0), 1)[0]
    records = []
    for i, c in enumerate(cs):
        sol = _single(key, c, ts, solver="auto", max_steps=16_384)
        records.append(sol.stats["segment_solvers"].tolist())
        assert int(ds["num_steps"].isel(c=i, member=0)) == int(sol.stats["num_steps"])
        # The same steps; batched vs single arithmetic differs by round-off only.
        np.testing.assert_allclose(ds["loss"].isel(c=i, member=0).values, np.asarray(sol.observables["loss"]),
                                   rtol=1e-11)
        assert abs(float(ds["energy_residual"].isel(c=i, member=0)) - float(sol.stats["energy_residual"])) < 1e-3 * RTOL
    assert records[0][:2] == [0, -1]  # c = 1: explicit only
    assert 1 in records[1]  # c = 100: switched to implicit
