"""gflow.special against scipy (and a stdlib-Decimal reference near the Lambert-W branch point)."""

from decimal import Decimal, getcontext

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special as ss

from gflow.special import expi, invert_increasing, lambertw, wrightomega

RTOL = 1e-12


def _rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return np.max(np.abs(a - b) / np.abs(b))


def test_expi_matches_scipy():
    x = np.concatenate([-np.logspace(-8, 2.8, 120), np.logspace(-8, 2.8, 240), [-1.0, 1.0, 40.0, 40.5, 700.0]])
    # Skip the root x0 ≈ 0.3725 (relative error is undefined there; absolute error ~1e-16).
    x = x[np.abs(x - 0.3725074107813666) > 1e-3]
    assert _rel(jax.jit(expi)(jnp.asarray(x)), ss.expi(x)) < RTOL
    assert float(expi(0.0)) == -np.inf
    assert abs(float(expi(0.3725074107813666))) < 1e-15


def _w_reference(x: float, w0: float) -> float:
    getcontext().prec = 60
    X, w = Decimal(x), Decimal(w0)
    for _ in range(60):
        ew = w.exp()
        fp = ew * (w + 1)
        if fp == 0:
            break
        w -= (w * ew - X) / fp
    return float(w)


@pytest.mark.parametrize("branch", [0, -1])
def test_lambertw_matches_scipy(branch):
    far = -np.exp(-1) + np.logspace(-6, np.log10(np.exp(-1)) - 1e-9, 150)
    x = np.concatenate([far, np.logspace(-300, 300, 150)]) if branch == 0 else np.concatenate(
        [far, -np.logspace(-300, -1, 80)])
    w = jax.jit(lambda x: lambertw(x, branch))(jnp.asarray(x))
    assert _rel(w, ss.lambertw(x, branch).real) < RTOL
    assert float(lambertw(0.0, 0)) == 0.0


@pytest.mark.parametrize("branch", [0, -1])
def test_lambertw_branch_point(branch):
    # scipy itself loses √ε accuracy here (Halley on a double root); compare with Decimal Newton.
    deltas = [0.0, 1e-16, 1e-13, 1e-10, 1e-7, 1e-5, 1.9e-4, 2.1e-4, 1e-3]
    x = jnp.asarray([-np.exp(-1) + d for d in deltas])
    w = np.asarray(lambertw(x, branch))
    ref = [_w_reference(float(xi), float(wi)) for xi, wi in zip(x[1:], w[1:])]
    assert _rel(w[1:], ref) < RTOL
    assert w[0] == -1.0  # the float nearest −1/e (1.2e-17 below it) is taken as the branch point


def test_lambertw_outside_domain_and_branch_argument():
    assert np.isnan(float(lambertw(-0.5, 0)))
    assert np.isnan(float(lambertw(0.5, -1)))
    with pytest.raises(ValueError, match="`branch` must be 0 or -1"):
        lambertw(1.0, 1)


def test_wrightomega_matches_scipy():
    k = np.concatenate([np.linspace(-700.0, 50.0, 301), np.logspace(1, 12, 60)])
    assert _rel(jax.jit(wrightomega)(jnp.asarray(k)), ss.wrightomega(k)) < RTOL


def test_transforms_agree():
    x = jnp.linspace(0.5, 30.0, 6)
    for fn in (expi, lambda x: lambertw(x, 0), lambda x: lambertw(-x / 100.0, -1), wrightomega):
        plain = fn(x)
        assert np.allclose(np.asarray(jax.jit(fn)(x)), np.asarray(plain), rtol=1e-14, atol=0)
        assert np.allclose(np.asarray(jax.vmap(fn)(x)), np.asarray(plain), rtol=1e-15, atol=0)


def test_invert_increasing_roots_vmap_and_gradient():
    f = lambda x, a: x**3 + a * x
    y = jnp.linspace(0.1, 5.0, 7)
    x = jax.vmap(lambda y: invert_increasing(f, y, 0.0, 3.0, 1.0))(y)
    assert np.max(np.abs(np.asarray(f(x, 1.0) - y))) < 1e-14
    x_jit = jax.jit(jax.vmap(lambda y: invert_increasing(f, y, 0.0, 3.0, 1.0)))(y)
    assert np.allclose(x_jit, x, rtol=1e-15)
    # Implicit-function derivatives: dx/da = −x/(3x² + a), dx/dy = 1/(3x² + a).
    x1 = float(invert_increasing(f, 2.0, 0.0, 3.0, 1.0))
    assert np.isclose(float(jax.grad(lambda a: invert_increasing(f, 2.0, 0.0, 3.0, a))(1.0)), -x1 / (3 * x1**2 + 1))
    assert np.isclose(float(jax.grad(lambda y: invert_increasing(f, y, 0.0, 3.0, 1.0))(2.0)), 1 / (3 * x1**2 + 1))
    # Out-of-range targets are clipped to the bracket.
    assert np.isclose(float(invert_increasing(f, 100.0, 0.0, 3.0, 1.0)), 3.0, rtol=1e-14)
