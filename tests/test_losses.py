import jax
import jax.numpy as jnp
import pytest
from jax.test_util import check_grads

import gflow as gf

F = jnp.array([0.3])
Y = jnp.array([-1.0])


def test_values():
    assert jnp.allclose(gf.squared_error(jnp.array([1.0, 2.0]), jnp.array([0.0, 0.0])), 2.5)
    assert jnp.allclose(gf.logistic(F, Y), jnp.log1p(jnp.exp(0.3)))
    assert jnp.allclose(gf.hinge(F, Y), 1.3) and jnp.allclose(gf.hinge(F, -Y, margin=0.2), 0.0)
    assert jnp.allclose(gf.quadratic_hinge(F, Y), 0.5 * 1.3**2)
    assert jnp.allclose(gf.cross_entropy(jnp.array([0.0, 0.0]), jnp.array([1.0, 0.0])), jnp.log(2.0))
    assert abs(float(gf.smooth_hinge(F, Y)) - 1.3) <= jnp.log(2.0) / 50


def test_logistic_is_stable():
    assert jnp.allclose(gf.logistic(jnp.array([800.0]), jnp.array([-1.0])), 800.0)
    assert float(gf.logistic(jnp.array([800.0]), jnp.array([1.0]))) == 0.0
    assert jnp.isfinite(jax.grad(lambda f: gf.logistic(f, Y))(jnp.array([-800.0]))).all()


def test_hinge_subgradient_at_kink_is_zero():
    assert float(jax.grad(lambda f: gf.hinge(f, jnp.array([1.0])))(jnp.array([1.0]))[0]) == 0.0


@pytest.mark.parametrize("loss", [gf.squared_error, gf.logistic, gf.quadratic_hinge, gf.smooth_hinge, gf.cross_entropy])
def test_grads_and_transforms(loss):
    f, y = jnp.array([0.3, -0.2]), jnp.array([1.0, -1.0])
    check_grads(lambda f: loss(f, y), (f,), order=2, modes=["rev"])
    batched = jax.vmap(loss)(jnp.stack([f, 2 * f]), jnp.stack([y, y]))
    assert jnp.allclose(batched, jnp.stack([loss(f, y), loss(2 * f, y)]))
    assert jnp.allclose(jax.jit(loss)(f, y), loss(f, y))
