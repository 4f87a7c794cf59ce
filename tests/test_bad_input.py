"""The bad-input tour (issue #10): every refused input, by name, through the API, TOML and the CLI.

Each row is (name, a callable that triggers the error, the exception type, a regex); the regex
asserts that the message names the argument, the expectation and the value given. Nearly every
row fails before anything is compiled; the few solves and the CLI sweep are tiny.
"""

import copy
import math

import diffrax
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import with_changes

import gflow as gf
from gflow import ConfigError, parse_config
from gflow import pellegrini_biroli as pb
from gflow.__main__ import EXIT_ALL_FAILED, EXIT_SOME_FAILED, EXIT_USAGE, main, sweep_report
from gflow.tachet import TwoLayerModes

KEY = jr.PRNGKey(0)
X = jr.normal(jr.PRNGKey(1), (6, 4))
Y1 = jnp.sin(X[:, 0])


def _data(y=Y1, x=X):
    return gf.Dataset(x, y)


def _flow(d=4, out_dim=1, data=None, loss=gf.squared_error, **kw):
    model_kw = {k: kw.pop(k) for k in ("init_scale", "activation") if k in kw}
    model = gf.TwoLayer(d, 8, model_kw.pop("activation", "tanh"), out_dim=out_dim, key=KEY, **model_kw)
    return gf.GradientFlow(model, loss, _data() if data is None else data, **kw)


FLOW = _flow()


def _tachet_zero_one():
    x = jnp.eye(2)
    model = gf.TwoLayer(2, 2, "relu", w=jnp.array([[0.1, -0.2], [-0.3, 0.2]]), a=jnp.array([[0.1, 0.1]]))
    return TwoLayerModes.from_flow(gf.GradientFlow(model, gf.hinge, gf.Dataset(x, jnp.array([1.0, 0.0]))))


def _pb_zero_one():
    data = pb.separable_gaussian(8, 4, key=KEY)
    model = gf.TwoLayer(4, 4, "relu", scaling="mean_field", key=KEY)
    zero_one = gf.Dataset(data.x, (data.y + 1.0) / 2.0)
    return pb.MeanFieldHinge.from_flow(pb.mean_field_hinge_flow(model, zero_one), jnp.eye(4)[0])


API_ROWS = [
    # (name, trigger, exception, regex: the argument, the expectation, the value)
    ("y with 3 columns, model out_dim 1", lambda: _flow(data=_data(jnp.zeros((6, 3)))), ValueError,
     r"`model` must return one output per column of `data.y`: shape \(k,\) = \(3,\) for y of shape \(6, 3\); "
     r"got an output of shape \(1,\)"),
    ("out_dim 3, y with 1 column", lambda: _flow(out_dim=3), ValueError,
     r"`model` must return one output per column of `data.y`: shape \(k,\) = \(1,\).*got an output of shape \(3,\)"),
    ("model d 8, data d 4", lambda: _flow(d=8), ValueError,
     r"`data.x` must have the model's input size d = 8 as its columns; got x of shape \(6, 4\) \(d = 4\)"),
    ("loss returns a vector", lambda: _flow(loss=lambda f, y: (f - y) ** 2), ValueError,
     r"`loss` must return a scalar per example .*; got an output of shape \(1,\)"),
    ("empty dataset", lambda: gf.Dataset(jnp.zeros((0, 4)), jnp.zeros((0, 1))), ValueError,
     r"`x` must hold at least one example \(n ≥ 1 rows\); got x of shape \(0, 4\)"),
    ("time_scale NaN", lambda: _flow(time_scale=math.nan), ValueError, r"`time_scale` must be finite and > 0; got nan"),
    ("time_scale -1", lambda: _flow(time_scale=-1.0), ValueError, r"`time_scale` must be finite and > 0; got -1.0"),
    ("time_scale 0", lambda: _flow(time_scale=0.0), ValueError, r"`time_scale` must be finite and > 0; got 0.0"),
    ("rtol < 0", lambda: gf.solve_flow(FLOW, 1.0, rtol=-1e-3), ValueError, r"`rtol` must be finite and > 0; got -0.001"),
    ("rtol NaN", lambda: gf.solve_flow(FLOW, 1.0, rtol=math.nan), ValueError, r"`rtol` must be finite and > 0; got nan"),
    ("atol 0", lambda: gf.solve_flow(FLOW, 1.0, atol=0.0), ValueError, r"`atol` must be finite and > 0; got 0.0"),
    ("t1 inf", lambda: gf.solve_flow(FLOW, math.inf), ValueError, r"`t1` must be finite; got inf"),
    ("t1 NaN", lambda: gf.solve_flow(FLOW, math.nan), ValueError, r"`t1` must be finite; got nan"),
    ("t1 = t0", lambda: gf.solve_flow(FLOW, 0.0), ValueError, r"`t1` must be > t0 = 0.0; got 0.0"),
    ("default_times t1 inf", lambda: gf.default_times(0.0, math.inf), ValueError, r"`t1` must be finite; got inf"),
    ("default_times 1 point", lambda: gf.default_times(0.0, 1.0, 1), ValueError,
     r"`num_times` must be an integer ≥ 2 \(the grid holds t0 and t1\); got 1"),
    ("num_times 0", lambda: gf.solve_flow(FLOW, 1.0, num_times=0), ValueError,
     r"`num_times` must be an integer ≥ 2 .*; got 0"),
    ("max_steps 0", lambda: gf.solve_flow(FLOW, 1.0, max_steps=0), ValueError,
     r"`max_steps` must be an integer ≥ 1; got 0"),
    ("init_scale 1e200", lambda: gf.solve_flow(_flow(init_scale=1e200), 1.0), ValueError,
     r"`initial loss` must be finite; got inf at t0\. Lower `init_scale`"),
    ("compare scale", lambda: gf.relative_error(jnp.ones(2), jnp.ones(2), scale="max"), ValueError,
     r"`scale` must be one of \('pointwise', 'curve'\); got 'max'"),
    ("TwoLayerModes 0/1 labels", _tachet_zero_one, ValueError,
     r"TwoLayerModes assumes binary labels y = ±1 of shape \(n, 1\); got 0/1 labels\. Map 0/1 labels to ±1 with `2 \* y - 1`"),
    ("MeanFieldHinge 0/1 labels", _pb_zero_one, ValueError,
     r"MeanFieldHinge assumes binary labels y = ±1; got 0/1 labels\. Map 0/1 labels to ±1 with `2 \* y - 1`"),
]


@pytest.mark.parametrize("name, trigger, error, regex", API_ROWS, ids=[r[0] for r in API_ROWS])
def test_api_refuses_by_name(name, trigger, error, regex):
    with pytest.raises(error, match=regex):
        trigger()


# --- TOML: `parse_config` on dict tables ------------------------------------------------------------

BASE = {
    "name": "tiny", "loss": "squared_error",
    "model": {"name": "two_layer", "d": 2, "width": 2, "activation": "tanh"},
    "data": {"name": "teacher_student", "d": 2, "n": 4, "teacher_width": 2},
    "solve": {"t1": 1.0, "num_times": 3},
    "sweep": {"members": 2, "chunk_size": 2},
}
WHITENED = {"name": "whitened_regression", "singular_values": [1.0], "d_in": 2, "d_out": 2, "n": 4}


def _table(**changes):
    """BASE with `section__key = value` changes (None deletes; a dict value replaces a table)."""
    return with_changes(copy.deepcopy(BASE), **changes)


TOML_ROWS = [
    ("data.d vs model.d", {"data__d": 5}, r"`model.d` must equal the data's input size, `data.d` = 5; got 2"),
    ("out_dim vs scalar teacher", {"model__out_dim": 3},
     r"`model.out_dim` must equal the data's output size, 1 \(data.name = 'teacher_student' has scalar targets\); got 3"),
    ("out_dim vs d_out", {"data": WHITENED},
     r"`model.out_dim` must equal the data's output size, `data.d_out` = 2; got 1"),
    ("whitened n < d_in", {"data": {**WHITENED, "d_out": 1, "n": 1}}, r"`data.n` must be ≥ data.d_in = 2 .*; got 1"),
    ("deep_linear widths[0]", {"model": {"name": "deep_linear", "widths": [3, 2, 1]}},
     r"`model.widths\[0\]` must equal the data's input size, `data.d` = 2; got 3"),
    ("t1 = 0", {"solve__t1": 0.0}, r"`solve.t1` must be > 0; got 0.0"),
    ("t1 < 0", {"solve__t1": -1.0}, r"`solve.t1` must be > 0; got -1.0"),
    ("t1 NaN", {"solve__t1": math.nan}, r"`solve.t1` must be finite; got nan"),
    ("t1 inf", {"solve__t1": math.inf}, r"`solve.t1` must be finite; got inf"),
    ("num_times 0", {"solve__num_times": 0}, r"`solve.num_times` must be ≥ 2; got 0"),
    ("max_steps 0", {"solve__max_steps": 0}, r"`solve.max_steps` must be ≥ 1; got 0"),
    ("rtol < 0", {"solve__rtol": -1e-8}, r"`solve.rtol` must be > 0; got -1e-08"),
    ("atol < 0", {"solve__atol": -1e-10}, r"`solve.atol` must be > 0; got -1e-10"),
    ("time_scale 0", {"solve__time_scale": 0.0}, r"`solve.time_scale` must be > 0; got 0.0"),
    ("chunk_size < 0", {"sweep__chunk_size": -4}, r"`sweep.chunk_size` must be ≥ 0; got -4"),
    ("memory_budget_mb 0", {"sweep__memory_budget_mb": 0.0}, r"`sweep.memory_budget_mb` must be > 0; got 0.0"),
    ("n = 0", {"data__n": 0}, r"`data.n` must be ≥ 1; got 0"),
    ("width 0", {"model__width": 0}, r"`model.width` must be ≥ 1; got 0"),
    ("model d 0", {"model__d": 0}, r"`model.d` must be ≥ 1; got 0"),
    ("deep_linear width 0", {"model": {"name": "deep_linear", "widths": [2, 0, 1]}},
     r"`model.widths` must hold numbers ≥ 1; got \[2, 0, 1\]"),
    ("NaN in a grid axis", {"grid": {"init_scale": [1.0, math.nan]}},
     r"`grid.init_scale` must hold finite numbers; got \[1.0, nan\]"),
    ("time_scale grid < 0", {"grid": {"time_scale": [1.0, -1.0]}},
     r"`grid.time_scale` must hold numbers > 0; got \[1.0, -1.0\]"),
    ("unknown top-level table", {"solver": {"t1": 1.0}},
     r"`solver` must be a known table \['data', 'grid', 'model', 'solve', 'sweep', 'theory'\] or top-level key "
     r"\['loss', 'name', 'precision'\]; got an unknown table or key\. Did you mean \[solve\]\?"),
    ("[solve] typo", {"solve__max_step": 8},
     r"`solve.max_step` must be one of the known keys \['atol', 'loss_threshold', 'max_steps', 'num_times', "
     r"'observables', 'rtol', 'solver', 't1', 'time_scale'\]; got an unknown key\. Did you mean `solve.max_steps`\?"),
    ("[model] typo lists name too", {"model__widht": 8}, r"`model.widht` must be one of the known keys \['activation'.*'name'.*"
     r"'width'\]; got an unknown key\. Did you mean `model.width`\?"),
]


@pytest.mark.parametrize("name, changes, regex", TOML_ROWS, ids=[r[0] for r in TOML_ROWS])
def test_toml_refuses_by_name(name, changes, regex):
    with pytest.raises(ConfigError, match=regex):
        parse_config(_table(**changes))


def test_base_table_is_valid():
    # The rows above fail because of their one change, not because BASE is bad.
    config = parse_config(_table())
    assert config.raw["solve"]["t1"] == 1.0
    assert parse_config(_table(data=WHITENED, model__out_dim=2)).raw["data"]["d_out"] == 2


# --- Solves that go wrong: a named result, not max_steps -----------------------------------------

def _ascent_flow(**kw):
    # Gradient ascent on the square loss of a linear two-layer net: f ~ a·w grows like 1/(t* − t),
    # a finite-time blow-up.
    data = _data()
    model = gf.TwoLayer(4, 8, "linear", key=KEY)
    return gf.GradientFlow(model, lambda f, y: -gf.squared_error(f, y), data, **kw)


def test_divergence_stops_with_a_named_error():
    # Not the max_steps message: the step size collapsed near the blow-up time.
    with pytest.raises(Exception, match=r"The gradient flow diverged: its state or vector field became non-finite"):
        gf.solve_flow(_ascent_flow(), 50.0, num_times=5)


def test_divergence_keeps_per_member_codes_under_vmap():
    # A sweep's time_scale is traced: not checked in GradientFlow, it shows as that member's
    # result code (gradient ascent for −1: a finite-time blow-up; NaN: a non-finite field).
    data = _data()

    def run(time_scale):
        flow = gf.GradientFlow(gf.TwoLayer(4, 8, "linear", key=KEY), gf.squared_error, data, time_scale=time_scale)
        sol = gf.solve_flow(flow, 50.0, num_times=5, throw=False)
        return sol.result._value, sol.stats["num_steps"], sol.t_final

    codes, steps, t_final = jax.jit(jax.vmap(run))(jnp.array([1.0, jnp.nan, -1.0]))
    R = diffrax.RESULTS
    assert codes.tolist() == [R.successful._value, R.nonfinite._value, R.dt_min_reached._value]
    assert int(jnp.max(steps)) < 2_000  # nobody burns the 100 000 default max_steps
    assert float(t_final[0]) == 50.0 and 0 < float(t_final[2]) < 50.0


def test_float32_flow_keeps_float32_under_x64():
    x32 = X.astype(jnp.float32)
    model = gf.TwoLayer(4, 8, "tanh", w=jnp.ones((8, 4), jnp.float32) * 0.1, a=jnp.ones((1, 8), jnp.float32) * 0.1)
    flow = gf.GradientFlow(model, gf.squared_error, gf.Dataset(x32, jnp.sin(x32[:, 0])))
    assert gf.default_times(0.0, 1.0, 5, dtype=jnp.float32).dtype == jnp.float32
    sol = gf.solve_flow(flow, 1.0, num_times=5)
    assert sol.ts.dtype == jnp.float32 and sol.observables["loss"].dtype == jnp.float32
    assert np.all(np.diff(np.asarray(sol.observables["loss"])) < 0)


# --- The command line, in-process ------------------------------------------------------------------

def _write(tmp_path, text):
    path = tmp_path / "c.toml"
    path.write_text(text)
    return str(path)


TINY_TOML = """
name = "tiny"
loss = "squared_error"
[model]
name = "two_layer"
d = 2
width = 2
activation = "tanh"
[data]
name = "teacher_student"
d = 2
n = 4
teacher_width = 2
[solve]
t1 = 10.0
num_times = 3
max_steps = 1
[sweep]
members = 2
chunk_size = 2
"""


def test_cli_run_refuses_a_bad_config(tmp_path):
    path = _write(tmp_path, TINY_TOML.replace("[data]\nname = \"teacher_student\"\nd = 2", "[data]\nname = \"teacher_student\"\nd = 5"))
    with pytest.raises(SystemExit, match=r"`model.d` must equal the data's input size, `data.d` = 5; got 2") as e:
        main(["run", path, "--no-progress"])
    assert e.value.code != 0
    with pytest.raises(SystemExit, match=r"`solve.t1` must be finite; got inf"):
        main(["run", _write(tmp_path, TINY_TOML.replace("t1 = 10.0", "t1 = inf")), "--no-progress"])


def test_cli_run_exits_non_zero_when_the_solve_fails(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", _write(tmp_path, TINY_TOML), "--no-progress"])  # max_steps = 1
    assert e.value.code == EXIT_SOME_FAILED
    err = capsys.readouterr().err
    assert "gflow run: the solve failed at t=" in err and "maximum number of solver steps" in err


@pytest.mark.parametrize("results, code, line", [
    ([0, 1, -100], EXIT_SOME_FAILED, "1 of 2 members failed"),  # one not run yet (another process's)
    ([10, 1, 9], EXIT_ALL_FAILED, "3 of 3 members failed"),
    ([0, 11, -100], None, None),  # successful and event_occurred: exit 0
])
def test_cli_sweep_exit_codes(results, code, line):
    # The exit code is read off the returned store's `result`/`succeeded` (as `load_sweep` labels
    # them); the sweep itself is the README CLI test's (tests/test_cli.py).
    import xarray as xr

    result = np.array(results, dtype=np.int32)
    ds = xr.Dataset({"result": ("member", result), "succeeded": ("member", np.isin(result, (0, 11)))},
                    attrs={"config_hash": "x"})
    summary, failure, got = sweep_report(ds)
    assert summary.startswith(f"{int(np.sum(result != -100))} of {result.size} members done")
    if code is None:
        assert (got, failure) == (0, None)
        return
    assert got == code
    assert line in failure


def test_cli_messages_name_the_argument(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["reproduce", "bogus"])
    assert e.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert "gflow reproduce: unknown figure 'bogus'; known: " in err and "saxe-modes" in err
    with pytest.raises(SystemExit, match=r"`DIR` must be an existing gflow sweep store; got '.*nonexistent'"):
        main(["plot", str(tmp_path / "nonexistent")])
    with pytest.raises(SystemExit) as e:
        main(["sweep", "--help"])
    assert e.value.code == 0
    assert "exit codes:" in capsys.readouterr().out
