import math
import re

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import pytest

import gflow as gf

X = jnp.linspace(-1.0, 1.0, 6)


def test_deep_linear():
    model = gf.DeepLinear((6, 5, 4, 3), init_scale=0.5, key=jr.PRNGKey(0))
    assert model.depth == 3 and [w.shape for w in model.weights] == [(5, 6), (4, 5), (3, 4)]
    assert jnp.allclose(model(X), model.end_to_end() @ X)
    with pytest.raises(ValueError, match=re.escape("`widths` must list at least 3 positive layer widths")):
        gf.DeepLinear((6, 3), key=jr.PRNGKey(0))


def test_deep_linear_aligned():
    data = gf.whitened_regression([2.0, 1.0], 6, 3, 12, key=jr.PRNGKey(0))
    a = jnp.array([[0.1, 0.2], [0.3, -0.4]])
    model = gf.DeepLinear.aligned(data.modes.V, data.modes.U, a, [4], key=jr.PRNGKey(1))
    proj = data.modes.U.T @ model.end_to_end() @ data.modes.V
    assert jnp.allclose(proj, jnp.diag(a[0] * a[1]), atol=1e-14)
    with pytest.raises(ValueError, match=re.escape("`hidden_widths` must be ≥ r = 2")):
        gf.DeepLinear.aligned(data.modes.V, data.modes.U, a, [1], key=jr.PRNGKey(1))


@pytest.mark.parametrize("scaling, factor", [("standard", 1.0), ("ntk", 1 / math.sqrt(7)), ("mean_field", 2.0 / 7)])
def test_two_layer_scalings(scaling, factor):
    model = gf.TwoLayer(6, 7, "tanh", scaling=scaling, alpha=2.0, key=jr.PRNGKey(0))
    z = model.w @ X if scaling == "standard" else model.w @ X / math.sqrt(6)
    assert jnp.allclose(model(X), factor * model.a @ jnp.tanh(z))
    sphere = gf.TwoLayer(6, 7, "relu", scaling="mean_field", sphere=True, key=jr.PRNGKey(0))
    z = model.w @ X / jnp.linalg.norm(model.w, axis=1)
    assert jnp.allclose(sphere(X), sphere.a @ jax.nn.relu(z) / 7)


def test_two_layer_trainable_and_bias():
    model = gf.TwoLayer(6, 7, bias=True, train_first=False, key=jr.PRNGKey(0))
    params, static = eqx.partition(model, model.trainable())
    assert params.w is None and params.b is None and params.a is not None
    assert model.b.shape == (7,)


def test_two_layer_bad_input():
    with pytest.raises(ValueError, match=re.escape("`scaling` must be one of ('standard', 'ntk', 'mean_field'); got 'mf'")):
        gf.TwoLayer(3, 4, scaling="mf", key=jr.PRNGKey(0))
    with pytest.raises(ValueError, match=re.escape("`width` must be an integer ≥ 1; got 0")):
        gf.TwoLayer(3, 0, key=jr.PRNGKey(0))
    with pytest.raises(ValueError, match="`activation` must be a callable or one of"):
        gf.TwoLayer(3, 4, "swish!", key=jr.PRNGKey(0))
    with pytest.raises(ValueError, match=re.escape("`w` must have shape (width, d) = (4, 3); got shape (3, 4)")):
        gf.TwoLayer(3, 4, w=jnp.ones((3, 4)), a=jnp.ones(4))


def test_mlp_and_linearized_model():
    mlp = gf.MLP((6, 5, 2), "tanh", key=jr.PRNGKey(0))
    assert mlp(X).shape == (2,)
    lin = gf.LinearizedModel(mlp)
    assert jnp.allclose(lin(X), mlp(X))
    params, _ = eqx.partition(lin, lin.trainable())
    assert jax.tree_util.tree_structure(params.delta) == jax.tree_util.tree_structure(eqx.partition(mlp, mlp.trainable())[0])


def test_models_under_jit_and_vmap():
    model = gf.TwoLayer(6, 7, "relu", key=jr.PRNGKey(0))
    xs = jnp.stack([X, 2 * X])
    assert jnp.allclose(jax.vmap(model)(xs), jnp.stack([model(X), model(2 * X)]))
    assert jnp.allclose(eqx.filter_jit(lambda m, x: m(x))(model, X), model(X))
    outs = jax.vmap(lambda k: gf.TwoLayer(6, 7, key=k)(X))(jr.split(jr.PRNGKey(0), 3))
    assert outs.shape == (3, 1)


@pytest.mark.parametrize("scaling", ["standard", "ntk", "mean_field"])
@pytest.mark.parametrize("sphere", [False, True])
def test_two_layer_padded_width_is_the_real_width_network(scaling, sphere):
    padded = gf.TwoLayer(6, 9, "sigmoid", scaling=scaling, alpha=2.0, sphere=sphere, bias=True,
                         key=jr.PRNGKey(0), active_width=4)
    real = padded.unpadded()
    assert real.width == 4 and real.active_width is None and padded.width == 9
    assert jnp.all(padded.w[4:] == 0) and jnp.all(padded.a[:, 4:] == 0)
    # Same units, same real width in the output scale: equal up to summation round-off.
    assert jnp.allclose(padded(X), real(X), rtol=1e-14, atol=1e-15)
    # Padding gets exactly zero gradient (sigmoid(0) ≠ 0: without the mask a would move).
    grads = jax.grad(lambda m: jnp.sum(m(X) ** 2))(padded)
    assert jnp.all(grads.w[4:] == 0) and jnp.all(grads.a[:, 4:] == 0) and jnp.all(grads.b[4:] == 0)
    assert jnp.all(jnp.isfinite(grads.w))
    if scaling != "standard":
        # The control: the same weights read at the stored width 9 give a different network.
        unscaled = gf.TwoLayer(6, 9, "sigmoid", scaling=scaling, alpha=2.0, sphere=sphere, w=padded.w, a=padded.a,
                               b=padded.b)
        assert not jnp.allclose(unscaled(X), real(X), rtol=1e-3)


def test_two_layer_active_width_jit_vmap_and_bad_values():
    def output(m):
        return gf.TwoLayer(6, 9, "tanh", scaling="ntk", key=jr.PRNGKey(0), active_width=m)(X)[0]

    widths = jnp.array([1.0, 4.0, 9.0])
    batched = jax.jit(jax.vmap(output))(widths)
    plain = jnp.stack([gf.TwoLayer(6, 9, "tanh", scaling="ntk", key=jr.PRNGKey(0), active_width=int(m)).unpadded()(X)[0]
                       for m in widths])
    assert jnp.allclose(batched, plain, rtol=1e-14)
    for bad in (0, 10, 2.5):
        with pytest.raises(ValueError, match=re.escape(f"`active_width` must be an integer in [1, width = 9]; got {bad}")):
            gf.TwoLayer(6, 9, key=jr.PRNGKey(0), active_width=bad)
    with pytest.raises(Exception, match=re.escape("`active_width` must be an integer in [1, width = 9]")):
        jax.jit(output)(jnp.asarray(12.0))
