"""gflow.sweep: one compile, members equal to single solves, failures recorded, resumable store."""

import json
import os
import shutil

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import xarray as xr

import gflow as gf
from gflow import SweepError, SweepStoreError, SweepWarning, first_crossing, sweep
from gflow.store import parse_grid

D, WIDTH, N = 8, 4, 16
RTOL, ATOL = 1e-8, 1e-10  # sweep vs single solves: same arithmetic, any tolerance
T1 = 5.0


def _data():
    x = jr.normal(jr.PRNGKey(1), (N, D))
    y = jnp.tanh(x @ jnp.linspace(-1.0, 1.0, D) / 2.0)
    return gf.Dataset(x, y)


DATA = _data()


def make_flow(key, hyper):
    model = gf.TwoLayer(D, WIDTH, "tanh", init_scale=hyper.get("init_scale", 1.0), key=key)
    return gf.GradientFlow(model, gf.squared_error, DATA, time_scale=hyper.get("time_scale", 1.0))


def test_thousand_members_one_compile_equal_one_by_one():
    # make_flow is traced a fixed number of times, never per chunk or per member: once for the
    # sweep's identity (the per-member jaxpr) and once in each of the slot runner's three
    # compiled pieces (start a member, advance the slots, read a finished member out).
    traced = eqx.debug.assert_max_traces(make_flow, max_traces=4)  # identity + the slot runner's start, advance, read (auto: 7)
    ds = sweep(traced, 1000, T1, grid={"init_scale": [0.7]}, num_times=21, rtol=RTOL, atol=ATOL, solver="explicit",
               chunk_size=500, progress=False)  # two chunks, still one trace/compile
    assert ds["loss"].shape == (1, 1000, 21)
    assert bool(ds["succeeded"].all())
    keys = jr.split(jr.PRNGKey(0), 1000)
    for i in (0, 1, 499, 500, 999):
        sol = gf.solve_flow(make_flow(keys[i], {"init_scale": jnp.asarray(0.7)}), T1, ts=jnp.asarray(ds["time"].values),
                            rtol=RTOL, atol=ATOL, max_steps=16_384, solver="explicit")
        member = ds.isel(init_scale=0, member=i)
        # Same arithmetic per member (vmap only batches it): equal to float64 roundoff.
        np.testing.assert_allclose(member["loss"].values, np.asarray(sol.observables["loss"]), rtol=1e-12, atol=1e-15)
        assert int(member["num_steps"]) == int(sol.stats["num_steps"])
        np.testing.assert_allclose(float(member["final_loss"]), float(sol.observables["loss"][-1]), rtol=1e-12)
    # Summaries: the plateau-exit time lies inside the grid and the loss there is half-way down.
    t_exit = ds["plateau_exit_time"].isel(init_scale=0, member=0).item()
    assert 0 < t_exit < T1


def test_failed_members_are_named_and_the_rest_kept():
    # One zipped grid axis: (time_scale, init_scale) vary together; 1e4 is too stiff for 64
    # explicit steps, init_scale 0 gives a NaN init (0/0: a non-finite start; a NaN in the grid
    # itself is refused by parse_grid).
    def nan_at_zero(key, hyper):
        return make_flow(key, {**hyper, "init_scale": hyper["init_scale"] / hyper["init_scale"]})

    grid = {"point": {"time_scale": [1.0, 1e4, 1.0], "init_scale": [1.0, 1.0, 0.0]}}
    with pytest.warns(SweepWarning, match=r"4 of 6 sweep members failed.*run 2 \(member 0, time_scale=10000, "
                                          r"init_scale=1\): max_steps reached.*run 4 .*non-finite initial parameters"):
        # A budget below one member's estimate gives one member per chunk.
        ds = sweep(nan_at_zero, 2, T1, grid=grid, num_times=11, max_steps=64, progress=False, memory_budget=1)
    assert ds.attrs["chunk_size"] == 1
    assert ds["succeeded"].values.tolist() == [[True, True], [False, False], [False, False]]
    assert np.all(np.isfinite(ds["loss"].isel(point=0).values))
    assert np.all(ds["result"].isel(point=2).values == -1)
    assert ds["init_scale"].dims == ("point",)
    with pytest.raises(SweepError, match="4 of 6 sweep members failed"):  # reuses the compile
        sweep(nan_at_zero, 2, T1, grid=grid, num_times=11, max_steps=64, progress=False, memory_budget=1,
              on_failure="raise")


def testfirst_crossing_interpolates_on_the_grid():
    ts = jnp.array([0.0, 1.0, 2.0, 3.0])
    v = jnp.array([4.0, 3.0, 1.0, jnp.inf])
    assert float(first_crossing(ts, v, 2.0)) == pytest.approx(1.5)
    assert float(first_crossing(ts, v, 0.5)) == np.inf
    assert float(first_crossing(ts, v, 5.0)) == 0.0
    batched = jax.jit(jax.vmap(first_crossing, in_axes=(None, 0, None)))(ts, jnp.stack([v, v - 1.0]), 2.0)
    np.testing.assert_allclose(np.asarray(batched), [1.5, 1.0])


def test_bad_sweep_input_is_named():
    with pytest.raises(ValueError, match=r"`grid\['p'\]` must hold values of equal length"):
        parse_grid({"p": {"a": [1.0, 2.0], "b": [1.0]}})
    with pytest.raises(ValueError, match=r"`grid\['a'\]` must be a non-empty 1-D array"):
        parse_grid({"a": [[1.0, 2.0]]})
    with pytest.raises(ValueError, match="`members` must be an array of keys from jax.random.split"):
        sweep(make_flow, jnp.zeros((3,)), T1)
    with pytest.raises(ValueError, match="`on_failure` must be"):
        sweep(make_flow, 2, T1, on_failure="skip")
    with pytest.raises(TypeError, match=r"`make_flow\(key, hyperparameters\)` must return a gflow.GradientFlow"):
        sweep(lambda k, h: 1.0, 2, T1, progress=False)


def test_store_resumes_and_refuses_foreign_or_corrupt(tmp_path):
    calls = []

    def counted(key, hyper):
        calls.append(1)
        return make_flow(key, hyper)

    out = tmp_path / "store"
    kwargs = dict(grid={"init_scale": [0.5, 1.0]}, num_times=11, chunk_size=2, out=out, progress=False,
                  solver="explicit")
    ds = sweep(counted, 3, T1, **kwargs)  # 6 runs, 3 chunks
    assert sorted(os.listdir(out / "done")) == ["chunk_000000", "chunk_000001", "chunk_000002"]
    assert ds.attrs["dtype"] == "float64" and ds.attrs["jax_version"] == jax.__version__
    assert json.loads(ds.attrs["config"])["members"] == 3
    raw = xr.open_zarr(out / "data.zarr")  # the store is a plain xarray/Zarr dataset
    assert raw["loss"].dims == ("run", "time")

    # A lost chunk (marker gone, as after a kill mid-write) is recomputed with the cached
    # compile; done chunks are reused.
    os.remove(out / "done" / "chunk_000001")
    ds.loss.values[:] = 0.0  # what we return is a copy: the store is re-read
    traces = len(calls)
    again = sweep(counted, 3, T1, **kwargs)
    assert len(calls) == traces  # no new trace, no new compile
    assert np.all(np.isfinite(again["loss"].values)) and not np.all(again["loss"].values == 0.0)
    np.testing.assert_array_equal(again["loss"].values, sweep(counted, 3, T1, **kwargs)["loss"].values)

    manifest = (out / "gflow_sweep.json").read_bytes()
    with pytest.raises(SweepStoreError, match="another sweep's results"):
        sweep(counted, 4, T1, **kwargs)  # another config
    assert (out / "gflow_sweep.json").read_bytes() == manifest

    other = tmp_path / "not_a_store"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(SweepStoreError, match="has no gflow_sweep.json"):
        sweep(counted, 3, T1, **{**kwargs, "out": other})
    assert (other / "notes.txt").read_text() == "mine"

    shutil.rmtree(out / "data.zarr" / "loss")
    with pytest.raises(SweepStoreError, match=r"intact data.zarr .*missing data\.zarr/loss"):
        sweep(counted, 3, T1, **kwargs)
    (out / "gflow_sweep.json").write_text("{not json")
    with pytest.raises(SweepStoreError, match="corrupt"):
        sweep(counted, 3, T1, **kwargs)


def test_width_and_data_size_are_grid_axes_by_padding():
    # Widths 2..8 padded to 8 units, data sizes 6..16 the first n of 16 samples: one trace and
    # one compile for all 3 × 2 grid points, and every member is the flow of its real sizes.
    def padded_flow(key, hyper):
        model = gf.TwoLayer(D, 8, "tanh", scaling="ntk", key=key, active_width=hyper["width"])
        return gf.GradientFlow(model, gf.squared_error, DATA.first(hyper["n"]))

    traced = eqx.debug.assert_max_traces(padded_flow, max_traces=4)  # as above
    ds = sweep(traced, 3, T1, grid={"width": [2, 5, 8], "n": [6, 16]}, num_times=11, rtol=RTOL, atol=ATOL,
               solver="explicit",
               chunk_size=9, progress=False)  # two chunks, one compile
    assert ds["loss"].dims == ("width", "n", "member", "time") and bool(ds["succeeded"].all())
    keys = jr.split(jr.PRNGKey(0), 3)
    for width, n, member in ((2, 6, 0), (5, 16, 2), (8, 6, 1)):
        flow = padded_flow(keys[member], {"width": width, "n": n}).unpadded()
        assert flow.model0.width == width and flow.data.n == n
        sol = gf.solve_flow(flow, T1, ts=jnp.asarray(ds["time"].values), rtol=RTOL, atol=ATOL)
        got = ds.sel(width=width, n=n).isel(member=member)
        # Same steps as the unpadded solve (solve_flow's error norm counts only real entries),
        # so only summation-order round-off separates them.
        assert int(got["num_steps"]) == int(sol.stats["num_steps"])
        np.testing.assert_allclose(got["loss"].values, np.asarray(sol.observables["loss"]), rtol=1e-11)
    # The axes matter: a member at width 2 is not the width-8 member (the check can fail).
    assert not np.allclose(ds["loss"].sel(width=2).values, ds["loss"].sel(width=8).values, rtol=1e-3)


def test_gradient_descent_sweep_equals_solve_discrete_and_keeps_its_store(tmp_path):
    # One zipped grid axis: the learning rate (traced: one trace of optax.sgd for every η) and
    # the time scale κ; the third point (GD step ηκ = 10⁴) diverges: a member with a result code,
    # not a crash. 3 points × 2 members in two vmapped chunks.
    import optax

    grid = {"point": {"learning_rate": [0.1, 0.25, 0.1], "time_scale": [1.0, 1.0, 1e5]}}
    sgd = lambda h: optax.sgd(h["learning_rate"])  # noqa: E731
    out = tmp_path / "gd"
    kwargs = dict(grid=grid, optimizer=sgd, num_times=11, chunk_size=3, out=out, progress=False)
    with pytest.warns(SweepWarning, match=r"2 of 6 sweep members failed.*learning_rate=0.1, time_scale=100000\): "
                                          r"diverged"):
        ds = sweep(make_flow, 2, T1, **kwargs)
    assert ds["loss"].dims == ("point", "member", "time")
    assert ds["succeeded"].values.tolist() == [[True, True], [True, True], [False, False]]
    assert json.loads(ds.attrs["config"])["optimizer"]["learning_rate"] == {"grid": "learning_rate"}
    keys = jr.split(jr.PRNGKey(0), 2)

    @jax.jit  # one compile for the six single solves (η traced, as in the sweep)
    def single(key, eta, kappa):
        return gf.solve_discrete(make_flow(key, {"time_scale": kappa}), optax.sgd(eta), T1, learning_rate=eta,
                                 ts=jnp.asarray(ds["time"].values), throw=False)

    for i, (eta, kappa) in enumerate(zip(*grid["point"].values())):
        for m in range(2):
            sol = single(keys[m], jnp.asarray(eta), jnp.asarray(kappa))
            got = ds.isel(point=i, member=m)
            # the same steps, vmapped: equal to float64 round-off (inf after a divergence)
            np.testing.assert_allclose(got["loss"].values, np.asarray(sol.observables["loss"]), rtol=1e-12)
            assert int(got["num_steps"]) == int(sol.stats["num_steps"]) and int(got["result"]) == int(sol.result._value)
    assert int(ds["num_steps"].isel(point=0, member=0)) == round(T1 / 0.1)

    # The store is this optimizer's at these η: the same call resumes (nothing recomputed);
    # another η, another optimizer (heavy ball) or a gradient-flow sweep into it are refused.
    marker = (out / "done" / "chunk_000000").read_bytes()
    again = sweep(make_flow, 2, T1, **{**kwargs, "on_failure": "ignore"})
    assert (out / "done" / "chunk_000000").read_bytes() == marker
    np.testing.assert_array_equal(again["loss"].values, ds["loss"].values)
    other_eta = {"point": {**grid["point"], "learning_rate": [0.1, 0.2, 0.1]}}
    with pytest.raises(SweepStoreError, match=r"`grid` changed"):
        sweep(make_flow, 2, T1, **{**kwargs, "grid": other_eta})
    with pytest.raises(SweepStoreError, match=r"the computation .* changed"):
        sweep(make_flow, 2, T1, **{**kwargs, "optimizer": lambda h: optax.sgd(h["learning_rate"], momentum=0.5)})
    with pytest.raises(SweepStoreError, match=r"`optimizer` removed"):
        sweep(make_flow, 2, T1, grid=grid, num_times=11, chunk_size=3, out=out, progress=False, solver="explicit")
