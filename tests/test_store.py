"""The sweep store: its identity is what the sweep computes, damage is named and repaired, two
writers share the work, stale leftovers are cleaned, bad paths and grids are named."""

import json
import os
import socket
import threading
import time

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import gflow as gf
from gflow import SweepStoreError, SweepWarning, load_sweep, plot_sweep, sweep
from gflow.store import ZarrStore, computation_fingerprint, parse_grid

D, WIDTH, N, T1 = 4, 2, 8, 2.0
X = jr.normal(jr.PRNGKey(1), (N, D))
DATA = gf.Dataset(X, jnp.tanh(X[:, 0]))
KW = dict(grid={"init_scale": [0.5, 1.0]}, num_times=5, chunk_size=2, progress=False,  # 6 runs, 3 chunks
          solver="explicit")  # the store, not the solver, is under test (auto: test_runner)


def make_flow(key, hyper):
    model = gf.TwoLayer(D, WIDTH, "tanh", init_scale=hyper["init_scale"], key=key)
    return gf.GradientFlow(model, gf.squared_error, DATA)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A complete store (one compile, reused by every sweep of `make_flow` below)."""
    out = tmp_path_factory.mktemp("ref") / "store"
    return out, sweep(make_flow, 3, T1, out=out, **KW)


def _fresh(tmp_path, name="store"):
    out = tmp_path / name
    sweep(make_flow, 3, T1, out=out, **KW)
    return out


def test_identity_is_the_computation_and_diffs_are_named(reference, tmp_path):
    out, _ = reference
    # The README's edit: same function name, other targets closed over. Today's results must not
    # be returned for it (nor mixed with it after a kill).
    data2 = gf.Dataset(X, 10 * jnp.sin(X[:, 0]))

    def make_flow(key, hyper):  # noqa: F811 (the same qualified name on purpose)
        model = gf.TwoLayer(D, WIDTH, "tanh", init_scale=hyper["init_scale"], key=key)
        return gf.GradientFlow(model, gf.squared_error, data2)

    with pytest.raises(SweepStoreError, match=r"another sweep's results: the computation \(make_flow's code or "
                                              r"the data it closes over"):
        sweep(make_flow, 3, T1, out=out, **KW)

    # A static field (the activation) is part of the computation too.
    def relu_flow(key, hyper):
        model = gf.TwoLayer(D, WIDTH, "relu", init_scale=hyper["init_scale"], key=key)
        return gf.GradientFlow(model, gf.squared_error, DATA)

    with pytest.raises(SweepStoreError, match="the computation"):
        sweep(relu_flow, 3, T1, out=out, **KW)

    # Settings are named key by key, nested config keys by their path.
    with pytest.raises(SweepStoreError, match=r"`max_steps` changed: 16384 -> 100"):
        sweep(globals()["make_flow"], 3, T1, out=out, max_steps=100, **KW)
    with pytest.raises(SweepStoreError, match=r"`config` changed: null -> \{\"solve\""):
        sweep(globals()["make_flow"], 3, T1, out=out, config={"solve": {"t1": 20.0}}, **KW)
    cfg = tmp_path / "cfg"
    sweep(globals()["make_flow"], 3, T1, out=cfg, config={"solve": {"t1": 10.0}}, **KW)
    with pytest.raises(SweepStoreError, match=r"`config.solve.t1` changed: 10.0 -> 20.0"):
        sweep(globals()["make_flow"], 3, T1, out=cfg, config={"solve": {"t1": 20.0}}, **KW)
    manifest = json.loads((out / "gflow_sweep.json").read_text())
    assert manifest["config"]["gflow_version"] == gf.__version__
    assert manifest["context"]["make_flow"].endswith("make_flow")


def test_fingerprint_covers_constants_and_is_address_free():
    a, b = jnp.arange(3.0), np.arange(3.0)

    def fp(fn):
        return computation_fingerprint(jax.make_jaxpr(fn)(jnp.ones(3)))

    base = fp(lambda x: x * a)
    assert fp(lambda x: x * b) == base  # an equal constant (another array), another function object
    assert fp(lambda x: x * (a + 1.0)) != base  # another closed-over array
    inner = jax.jit(lambda x: x * a)  # a constant inside a nested jaxpr
    assert fp(lambda x: inner(x) + 1.0) != fp(lambda x: jax.jit(lambda x: x * (a + 2.0))(x) + 1.0)
    assert fp(jnp.tanh) != fp(jnp.sin)


def test_damage_is_named_and_a_rerun_repairs_it(reference, tmp_path):
    _, ref = reference
    out = _fresh(tmp_path)
    (out / "data.zarr" / "result" / "c" / "1").unlink()
    with pytest.raises(SweepStoreError, match=r"`DIR` must hold intact data .*variable `result`, chunk 1 "
                                              r"\(runs 2–3\) is damaged \(missing file data.zarr/result/c/1\)"):
        load_sweep(out, name="DIR")
    loss_file = next((out / "data.zarr" / "loss" / "c" / "2").rglob("*"))  # truncated (an interrupted copy)
    loss_file.write_bytes(loss_file.read_bytes()[:7])
    with pytest.raises(SweepStoreError, match=r"chunk 1 .*; variable `loss`, chunk 2 \(runs 4–5\) is damaged "
                                              r"\(file data.zarr/loss/c/2/0 has 7 bytes"):
        load_sweep(out)
    with pytest.warns(SweepWarning, match=r"2 damaged chunk\(s\) dropped and to be recomputed"):
        ds = sweep(make_flow, 3, T1, out=out, **KW)
    np.testing.assert_array_equal(ds["loss"].values, ref["loss"].values)
    np.testing.assert_array_equal(load_sweep(out)["result"].values, ref["result"].values)

    # Same size, other bytes: only the checksum sees it; loading names it, a rerun repairs it.
    f = out / "data.zarr" / "final_loss" / "c" / "0"
    raw = bytearray(f.read_bytes())
    raw[-1] ^= 0xFF
    f.write_bytes(bytes(raw))
    with pytest.raises(SweepStoreError, match=r"variable `final_loss`, chunk 0 \(runs 0–1\) is damaged \("
                                              r"(unreadable|its data does not match the checksum)"):
        load_sweep(out)
    with pytest.warns(SweepWarning, match="1 damaged chunk"):
        ds = sweep(make_flow, 3, T1, out=out, **KW)
    np.testing.assert_array_equal(ds["final_loss"].values, ref["final_loss"].values)


def test_bad_stores_are_named(reference, tmp_path):
    out = _fresh(tmp_path)
    manifest = out / "gflow_sweep.json"
    spec = json.loads(manifest.read_text())
    f = tmp_path / "a_file"
    f.write_text("x")
    with pytest.raises(SweepStoreError, match=r"`DIR` must be a gflow sweep store directory; got '.*a_file', "
                                              r"which is a file, not a directory"):
        load_sweep(f, name="DIR")
    with pytest.raises(SweepStoreError, match="which is a file, not a directory"):
        sweep(make_flow, 3, T1, out=f, **KW)
    manifest.write_text(json.dumps({k: v for k, v in spec.items() if k != "chunk_size"}))
    with pytest.raises(SweepStoreError, match=r"lacking the keys \['chunk_size'\]"):
        load_sweep(out)
    manifest.write_text(json.dumps({**spec, "format": "gflow-sweep/1"}))
    with pytest.raises(SweepStoreError, match=r"'gflow-sweep/1', written by an older gflow. Read it with the gflow"):
        sweep(make_flow, 3, T1, out=out, **KW)
    manifest.write_text(json.dumps(spec))
    (out / "done" / "chunk_000001").write_text("done\n")  # an unreadable marker
    with pytest.raises(SweepStoreError, match=r"chunk 1 \(runs 2–3\) is damaged \(unreadable marker"):
        load_sweep(out)


def test_two_writers_share_the_chunks(reference, tmp_path, monkeypatch):
    # Two stores on one directory: a chunk one holds is refused to the other until released.
    out = _fresh(tmp_path, "claims")
    a, b = ZarrStore(out, json.loads((out / "gflow_sweep.json").read_text())), None
    b = ZarrStore(out, a.spec)
    assert a.claim(0) and not b.claim(0) and b.claim(1)
    a.release(0)
    assert b.claim(0)
    b.release_all()

    # Two concurrent sweeps into one new directory: every chunk is computed once, and both
    # return the whole result.
    writes, lock = [], threading.Lock()
    original = ZarrStore.write_chunk

    def slow_write(self, chunk, data):
        time.sleep(0.3)  # a chunk takes a while: the writers overlap
        with lock:
            writes.append((self.writer_id, chunk))
        original(self, chunk, data)

    monkeypatch.setattr(ZarrStore, "write_chunk", slow_write)
    shared = tmp_path / "shared"
    results, errors = [], []

    def writer():  # (compiled already, by `reference`)
        try:
            results.append(sweep(make_flow, 3, T1, out=shared, **KW))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert sorted(c for _, c in writes) == [0, 1, 2], writes  # each chunk once
    assert len(results) == 2
    for ds in results:
        np.testing.assert_array_equal(ds["loss"].values, results[0]["loss"].values)
        assert bool(ds["succeeded"].all())
    markers = [json.loads((shared / "done" / f"chunk_{c:06d}").read_text()) for c in range(3)]
    assert {m["writer"]["pid"] for m in markers} == {os.getpid()}
    assert [m["runs"] for m in markers] == [[0, 2], [2, 4], [4, 6]]


def test_resume_warns_about_chunk_size_and_cleans_stale_creations(reference, tmp_path):
    out = _fresh(tmp_path)
    with pytest.warns(SweepWarning, match=r"`chunk_size` 3 ignored: the store .* was written with chunk_size 2"):
        ds = sweep(make_flow, 3, T1, out=out, **{**KW, "chunk_size": 3})
    assert ds.attrs["chunk_size"] == 2

    # A creator killed mid-creation left its temporary directory; a live one's is kept.
    dead = tmp_path / ".new.0123.creating"
    dead.mkdir()
    (dead / "creator.json").write_text(json.dumps({"pid": 2**22 + 12345, "host": socket.gethostname(),
                                                   "time": time.time()}))
    live = tmp_path / ".new.4567.creating"
    live.mkdir()
    (live / "creator.json").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                                   "time": time.time()}))
    sweep(make_flow, 3, T1, out=tmp_path / "new", **KW)
    assert not dead.exists() and live.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".creating") and p != live]


def test_plot_of_an_incomplete_store_says_so(tmp_path):
    out = _fresh(tmp_path)
    (out / "done" / "chunk_000002").unlink()
    with pytest.warns(SweepWarning, match=r"incomplete: 4 of 6 runs done"):
        paths = plot_sweep(out, tmp_path / "plots")
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)


def test_grid_values_must_be_finite():
    with pytest.raises(ValueError, match=r"`grid\['init_scale'\]\[2\]` must be finite; got nan"):
        parse_grid({"init_scale": [0.5, 1.0, float("nan")]})
    with pytest.raises(ValueError, match=r"`grid\['p'\]\['b'\]\[0\]` must be finite; got inf"):
        parse_grid({"p": {"a": [1.0], "b": [float("inf")]}})
