"""Smoke test of the benchmark suite (issue 13): P1 at `--tiny` size writes a record with the
documented schema, every method that ran has its accuracy measured, and the PNG exists.
torch peers are skipped (with a recorded reason) when torch is not installed."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"gflow_bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_curve_error_scores_and_flags_early_stops():
    common = _load("common")
    ref = np.array([[1.0, 0.5, 0.0]])
    # floor: the 0 entry is scaled by 1e-3 · max|ref|
    assert common.curve_error(ref + np.array([[0.0, 0.0, 1e-6]]), ref) == pytest.approx(1e-3)
    assert common.curve_error(np.array([[1.0, 0.5, np.inf]]), ref) == math.inf
    with pytest.raises(ValueError, match="must have the reference's shape"):
        common.curve_error(ref[:, :2], ref)


@pytest.fixture
def restore_jax_config():
    """The suite sets `jax_default_matmul_precision` (and the suite's dtype) process-wide, as a
    benchmark run should; later tests in this worker must see the defaults again."""
    import jax

    saved = {k: getattr(jax.config, k) for k in ("jax_default_matmul_precision", "jax_enable_x64")}
    yield
    for k, v in saved.items():
        jax.config.update(k, v)


def test_p1_tiny_record(tmp_path, monkeypatch, restore_jax_config):
    p1 = _load("p1_uniform")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # GD peers only at the searched η (one point) and one tolerance: the tiny size's plan
    paths = p1.main(["--tiny", "--out", str(tmp_path), "--dtype", "float64", "--repeats", "1"])
    assert len(paths) == 1
    path = Path(paths[0])
    assert path.name.startswith("p1-uniform-tiny-cpu-float64-") and path.suffix == ".json"
    assert path.with_suffix(".png").stat().st_size > 0
    rec = json.loads(path.read_text())
    for key in ("device", "backend", "dtype", "jax_default_matmul_precision", "versions", "roofline",
                "reference", "methods", "targets", "flops_per_rhs"):
        assert key in rec, key
    assert rec["jax_default_matmul_precision"] == "highest"
    assert rec["reference"]["solver"] == "Dopri8" and rec["reference"]["rtol"] == 1e-12
    assert rec["reference"]["ok"]
    assert rec["roofline"]["flop_s"] > 0
    try:
        import torch  # noqa: F401

        has_torch = True
    except ImportError:
        has_torch = False
    expected = {"gflow", "diffrax-naive", "jax-gd", "torchdiffeq", "torch-gd"}
    assert set(rec["methods"]) == expected
    for name, entry in rec["methods"].items():
        if name.startswith("torch") and not has_torch:
            assert entry["status"] == "skipped" and "torch" in entry["reason"]
            continue
        assert entry["status"] == "ok", (name, entry.get("reason"))
        assert entry["points"], name
        for p in entry["points"]:
            assert isinstance(p["error"], float) and math.isfinite(p["error"]), (name, p)
            assert p["run_s"] > 0 and p["compile_s"] >= 0 and p["steps"] > 0, (name, p)
            assert p["rhs_evaluations"] > 0, (name, p)
    # the ODE solves at rtol 1e-6 are accurate; GD's searched η meets its 1e-4 criterion
    assert rec["methods"]["gflow"]["points"][0]["error"] < 1e-4
    jax_gd = rec["methods"]["jax-gd"]
    assert jax_gd["points"][-1]["error"] <= 1e-4
    assert jax_gd["lr_search"][0]["lr"] == p1.LR0 and jax_gd["lr"] < p1.LR0
    # gflow and the hand-written peer take the same steps (same solver, controller, tolerances)
    assert rec["methods"]["gflow"]["points"][0]["steps"] == rec["methods"]["diffrax-naive"]["points"][0]["steps"]
    names = {t["name"] for t in rec["targets"]}
    assert {"gflow vs diffrax-naive", "gflow vs torchdiffeq", "gflow vs torch-gd", "gflow compile"} <= names
