"""TOML configs: registries by name, validation errors naming key / expected type / value found."""

import tomllib

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import REPO, with_changes

import gflow as gf
from gflow import ConfigError, parse_config

EXAMPLE = REPO / "examples" / "two_layer_sweep.toml"


def _table(**changes):
    return with_changes(tomllib.loads(EXAMPLE.read_text()), **changes)


def test_example_config_builds_flows_that_jit_and_vmap():
    config = gf.load_config(EXAMPLE)
    assert config.raw["model"]["width"] == 8 and config.raw["solve"]["max_steps"] == 16_384  # default filled
    make_flow = config.flow_factory()
    assert gf.load_config(EXAMPLE).flow_factory() is make_flow  # equal configs share it (compile reuse)
    keys = jr.split(jr.PRNGKey(0), 3)
    scales = jnp.array([0.5, 1.0, 2.0])

    def loss0(key, scale):
        flow = make_flow(key, {"init_scale": scale})
        return flow.loss_value(flow.params0)

    plain = jnp.stack([loss0(k, s) for k, s in zip(keys, scales)])
    np.testing.assert_allclose(jax.jit(jax.vmap(loss0))(keys, scales), plain, rtol=1e-14)
    kwargs = config.sweep_kwargs()
    assert kwargs["grid"] == {"init_scale": [0.5, 1.0]} and kwargs["chunk_size"] == 16


def test_theory_by_name():
    table = _table(theory={"name": "linearized_mse"}, model__scaling="ntk")
    config = parse_config(table)
    flow = config.flow_factory()(jr.PRNGKey(0), {})
    assert isinstance(config.theory(flow), gf.ntk.LinearizedMSE)


@pytest.mark.parametrize(
    "changes, error",
    [
        ({"model__name": "two_layers"}, r"`model.name` must name a registered entry: one of \['deep_linear', 'mlp', 'two_layer'\]; got 'two_layers'"),
        ({"loss": "mse"}, r"`loss` must name a registered entry.*got 'mse'"),
        ({"data__name": "mnist"}, r"`data.name` must name a registered entry.*got 'mnist'"),
        ({"theory": {"name": "saxe"}}, r"`theory.name` must name a registered entry.*got 'saxe'"),
        ({"model__width": "8"}, r"`model.width` must have type int; got '8' \(str\)"),
        ({"model__width": 8.0}, r"`model.width` must have type int; got 8.0 \(float\)"),
        ({"solve__t1": True}, r"`solve.t1` must have type float; got True \(bool\)"),
        ({"solve__t1": None}, r"`solve.t1` must be given \(type float\); got nothing"),
        ({"model__activation": "swish"}, r"`model.activation` must be one of \("),
        ({"model__depth": 3}, r"`model.depth` must be one of the known keys"),
        ({"solve__observables": ["loss", "accuracy"]}, r"`solve.observables\[1\]` must name a registered entry.*'accuracy'"),
        ({"grid": {"point": {"init_scale": [0.5, 1.0], "time_scale": [1.0]}}},
         r"`grid.point` must hold values of equal length \(they vary together along one axis\); got \{'init_scale': 2, 'time_scale': 1\}"),
        ({"grid": {"depth": [2.0, 3.0]}}, r"`grid.depth` must name a sweepable parameter: one of \['init_scale', 'n', 'time_scale', 'width'\]"),
        ({"grid": {"width": [4.0, 8.5]}}, r"`grid.width` must hold integers ≥ 1; got \[4.0, 8.5\]"),
        ({"grid": {"size": {"width": [4, 8], "n": [0, 16]}}}, r"`grid.size.n` must hold integers ≥ 1; got \[0, 16\]"),
        ({"grid": {"width": [4, 8]}, "model": {"name": "mlp", "widths": [8, 4, 1]}},
         r"`grid.width` must be swept only with model.name = 'two_layer' \(padded width\); got model.name = 'mlp'"),
        ({"grid": {"init_scale": ["big"]}}, r"`grid.init_scale` must have type list\[float\]"),
        ({"sweep__members": 0}, r"`sweep.members` must be ≥ 1; got 0"),
        ({"model": "two_layer"}, r"`model` must be a table with a `name`; got 'two_layer' \(str\)"),
    ],
)
def test_bad_config_is_named(changes, error):
    with pytest.raises(ConfigError, match=error):
        parse_config(_table(**changes))


def test_bad_file_is_named(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\nname = 1")
    with pytest.raises(ConfigError, match=r"must be valid TOML; got a parse error"):
        gf.load_config(bad)
    with pytest.raises(ConfigError, match=r"`CONFIG` must be a readable TOML file"):
        gf.load_config(tmp_path / "missing.toml")


def test_width_and_data_size_grid_pad_to_the_largest():
    table = _table(grid={"init_scale": [1.0], "size": {"width": [2, 8, 5], "n": [16, 4, 9]}})
    table["data"]["n"] = 3  # ignored: the pool is the largest n on the grid
    config = parse_config(table)
    assert config.grid_values() == {"init_scale": [1.0], "width": [2.0, 8.0, 5.0], "n": [16.0, 4.0, 9.0]}
    assert config.dataset().n == 16
    make_flow = config.flow_factory()
    flow = make_flow(jr.PRNGKey(0), {"width": jnp.asarray(5.0), "n": jnp.asarray(9.0)})
    assert flow.model0.width == 8 and flow.data.n == 16 and flow.is_padded
    real = flow.unpadded()  # what `gflow run` solves
    assert real.model0.width == 5 and real.data.n == 9 and not real.is_padded
    np.testing.assert_allclose(flow.loss_value(flow.params0), real.loss_value(real.params0), rtol=1e-14)
    with pytest.raises(ValueError, match=r"`n` must be an integer in \[1, n = 16\]; got 17"):
        config.dataset().first(17)


def test_width_data_size_example_parses():
    config = gf.load_config(REPO / "examples" / "width_data_size_sweep.toml")
    assert config.grid_values() == {"width": [4.0, 16.0, 64.0], "n": [8.0, 32.0, 128.0]}
    flow = config.flow_factory()(jr.PRNGKey(0), {"width": jnp.asarray(16.0), "n": jnp.asarray(32.0)})
    assert flow.model0.width == 64 and flow.data.n == 128
    assert float(flow.model0.output_scale) == pytest.approx(1 / 4)  # 1/√16: the real width's NTK scale
