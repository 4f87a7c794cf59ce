import re

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import gflow as gf


def test_dataset_shapes_and_promotion():
    x = jnp.ones((5, 3))
    data = gf.Dataset(x, jnp.ones(5))
    assert data.y.shape == (5, 1) and data.n == 5 and data.d == 3


@pytest.mark.parametrize(
    "x, y, error, msg",
    [
        (np.ones((5, 3)), np.ones((4, 1)), ValueError, "`y` must have one row per row of `x` (n = 5)"),
        (np.ones((5, 3), dtype=np.int32), np.ones((5, 1)), TypeError, "`x` must be a real floating-point array; got dtype int32"),
        (np.ones((5, 3), dtype=complex), np.ones((5, 1)), TypeError, "`x` must be a real floating-point array; got complex dtype"),
        (np.ones(5), np.ones((5, 1)), ValueError, "`x` must have 2 dimension(s); got shape (5,)"),
        (np.full((5, 3), np.nan), np.ones((5, 1)), ValueError, "`x` must contain only finite values; got NaN or inf"),
        (np.ones((5, 3)), np.full((5, 1), np.inf), ValueError, "`y` must contain only finite values; got NaN or inf"),
    ],
)
def test_dataset_bad_input(x, y, error, msg):
    with pytest.raises(error, match=re.escape(msg)):
        gf.Dataset(x, y)


def test_dataset_nan_under_vmap():
    x = jnp.ones((2, 5, 3))
    make = jax.vmap(lambda x: gf.Dataset(x, jnp.ones((5, 1))).x)
    assert make(x).shape == (2, 5, 3)
    with pytest.raises(Exception, match=re.escape("`x` must contain only finite values")):
        make(x.at[1, 0, 0].set(jnp.nan))


def test_whitened_regression_exact_moments():
    lam = jnp.array([1.5, 0.7, 1.1, 1.3, 1.0, 1.0])
    data = gf.whitened_regression([2.0, 1.0, 0.5], 6, 4, 30, input_variances=lam, noise=0.2, key=jr.PRNGKey(0))
    U, s, V = data.modes.U, data.modes.s, data.modes.V
    assert jnp.allclose(data.input_output_covariance(), U @ jnp.diag(s) @ V.T, atol=1e-13)
    assert jnp.allclose(data.input_covariance() @ V, V * lam[None, :3], atol=1e-13)
    assert jnp.allclose(U.T @ U, jnp.eye(3), atol=1e-14) and jnp.allclose(V.T @ V, jnp.eye(3), atol=1e-14)
    with pytest.raises(ValueError, match=re.escape("`n` must be ≥ d_in = 6")):
        gf.whitened_regression([1.0], 6, 2, 4, key=jr.PRNGKey(0))
    with pytest.raises(ValueError, match="`singular_values` must have at most min"):
        gf.whitened_regression([1.0, 1.0, 1.0], 6, 2, 10, key=jr.PRNGKey(0))


def test_input_output_modes_from_svd():
    data = gf.whitened_regression([3.0, 1.0], 4, 3, 12, key=jr.PRNGKey(1))
    plain = gf.Dataset(data.x, data.y)  # modes not recorded: computed from the SVD
    modes = gf.input_output_modes(plain)
    assert jnp.allclose(modes.s[:2], jnp.array([3.0, 1.0]), rtol=1e-12)
    assert jnp.allclose(modes.lam[:2], 1.0, rtol=1e-12)


def test_teacher_student():
    teacher = gf.TwoLayer(5, 4, "relu", key=jr.PRNGKey(0))
    data = gf.teacher_student(5, 20, teacher, key=jr.PRNGKey(1), labels="sign")
    assert data.x.shape == (20, 5) and set(np.unique(np.asarray(data.y))) <= {-1.0, 1.0}
    reg = gf.teacher_student(5, 20, teacher, key=jr.PRNGKey(1))
    assert jnp.allclose(reg.y, jax.vmap(teacher)(reg.x))
    with pytest.raises(ValueError, match="`labels` must be 'regression' or 'sign'"):
        gf.teacher_student(5, 20, teacher, key=jr.PRNGKey(1), labels="softmax")
    # vmap over data seeds
    xs = jax.vmap(lambda k: gf.teacher_student(5, 20, teacher, key=k).x)(jr.split(jr.PRNGKey(2), 3))
    assert xs.shape == (3, 20, 5)


def test_first_n_samples_is_the_smaller_dataset():
    x = jr.normal(jr.PRNGKey(0), (12, 3))
    y = jnp.sign(x[:, 0] + 0.3)
    data, small = gf.Dataset(x, y), gf.Dataset(x[:7], y[:7])
    padded = data.first(7)
    assert padded.n == 12 and float(padded.num_samples) == 7 and padded.unpadded().n == 7
    model = gf.TwoLayer(3, 4, "tanh", key=jr.PRNGKey(1))
    # Means over the first 7 samples only: equal to the sliced dataset up to summation order.
    np.testing.assert_allclose(padded.mean_loss(model, gf.squared_error), small.mean_loss(model, gf.squared_error),
                               rtol=1e-14)
    for name in ("input_covariance", "input_output_covariance", "output_covariance"):
        np.testing.assert_allclose(getattr(padded, name)(), getattr(small, name)(), rtol=1e-13, atol=1e-15)
    # ... and not equal to the full dataset's (the check can fail).
    assert not np.allclose(padded.mean_loss(model, gf.squared_error), data.mean_loss(model, gf.squared_error))
    flows = [gf.GradientFlow(model, gf.hinge, d) for d in (padded, small)]
    errors = [gf.OBSERVABLES["classification_error"](0.0, f.params0, f) for f in flows]
    np.testing.assert_allclose(errors[0], errors[1], rtol=1e-15)
    margins = [gf.margins_at_least(0.0).cond(0.0, f.params0, f) for f in flows]
    np.testing.assert_allclose(margins[0], margins[1], rtol=1e-15)

    mean_loss = jax.jit(jax.vmap(lambda n: data.first(n).mean_loss(model, gf.squared_error)))
    sizes = jnp.array([1.0, 7.0, 12.0])
    expected = [gf.Dataset(x[: int(n)], y[: int(n)]).mean_loss(model, gf.squared_error) for n in sizes]
    np.testing.assert_allclose(mean_loss(sizes), jnp.stack(expected), rtol=1e-14)
    for bad in (0, 13, 2.5):
        with pytest.raises(ValueError, match=re.escape(f"`n` must be an integer in [1, n = 12]; got {bad}")):
            data.first(bad)
    with pytest.raises(ValueError, match=re.escape("`sample_mask` must be a boolean array of shape (n,) = (12,)")):
        gf.Dataset(x, y, sample_mask=jnp.ones(12))
