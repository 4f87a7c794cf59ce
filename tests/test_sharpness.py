"""Sharpness (top eigenvalue of ∇²L by Lanczos on Hessian-vector products) and its gradient,
against the dense Hessian of the raveled parameters (float64)."""

import functools
import re

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import gflow as gf
import gflow.central_flow as cf

# Lanczos with full reorthogonalisation converges the top Ritz value to round-off within m < P
# steps on these nets (P = 64; the default m = 48): the error left is a few ulps of the
# spectrum's scale times the reorthogonalisation's O(m) growth, ≪ the 1e-8 acceptance bound.
EIG_RTOL = 1e-8


@functools.cache
def _flow(sign: float = 1.0):
    kx, km = jr.split(jr.PRNGKey(3))
    x = jr.normal(kx, (10, 3))
    y = jnp.sin(x @ jnp.array([1.0, -0.5, 0.3]))[:, None]
    loss = gf.squared_error if sign > 0 else (lambda p, t: -gf.squared_error(p, t))
    return gf.GradientFlow(gf.TwoLayer(3, 16, "tanh", key=km), loss, gf.Dataset(x, y))


@eqx.filter_jit
def _dense_hessian(flow, params):
    flat, unravel = ravel_pytree(params)
    return jax.hessian(lambda f: flow.loss_value(unravel(f)))(flat)


def _params_stack(flow):
    p0 = flow.params0
    p1 = jax.tree_util.tree_map(lambda x: x + 0.3 * jr.normal(jr.PRNGKey(9), x.shape), p0)
    return jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b]), p0, p1)


def _rel(a, b):
    return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


def test_sharpness_matches_eigvalsh_plain_jit_vmap():
    flow = _flow()
    stack = _params_stack(flow)
    dense = jax.vmap(lambda p: jnp.linalg.eigvalsh(_dense_hessian(flow, p))[-1])(stack)
    sharp = gf.OBSERVABLES["sharpness"]
    p0 = jax.tree_util.tree_map(lambda x: x[0], stack)
    plain = sharp(0.0, p0, flow)
    jitted = jax.jit(lambda p: sharp(0.0, p, flow))(p0)
    vmapped = jax.vmap(lambda p: sharp(0.0, p, flow))(stack)
    jit_vmapped = jax.jit(jax.vmap(lambda p: sharp(0.0, p, flow)))(stack)
    for label, got in (("plain", plain), ("jit", jitted)):
        assert _rel(got, dense[0]) <= EIG_RTOL, label
    for label, got in (("vmap", vmapped), ("jit∘vmap", jit_vmapped)):
        assert _rel(got, dense) <= EIG_RTOL, label


def test_eigenpair_is_an_eigenpair_and_warm_starts():
    flow = _flow()
    p = flow.params0
    H = _dense_hessian(flow, p)
    lam, u = cf.top_hessian_eigenpair(flow, p)
    uf = ravel_pytree(u)[0]
    assert abs(float(jnp.linalg.norm(uf)) - 1.0) < 1e-12
    # residual ‖Hu − λu‖ / λ: the eigenvector is accurate to √(eigenvalue error) at worst
    assert float(jnp.linalg.norm(H @ uf - lam * uf) / lam) < 1e-6
    # HVP against the dense Hessian
    v = jax.tree_util.tree_map(lambda x: jr.normal(jr.PRNGKey(1), x.shape), p)
    hv = ravel_pytree(cf.hessian_vector_product(flow, p, v))[0]
    np.testing.assert_allclose(hv, H @ ravel_pytree(v)[0], rtol=1e-10, atol=1e-12)
    # warm start: from the eigenvector itself, 2 steps are exact; from a cold start they are not
    warm, u_warm = cf.top_hessian_eigenpair(flow, p, u, num_iterations=2)
    cold, _ = cf.top_hessian_eigenpair(flow, p, num_iterations=2)
    assert _rel(warm, lam) <= EIG_RTOL
    assert _rel(cold, lam) > 1e3 * EIG_RTOL  # control: the warm start is what made it exact
    assert float(jnp.vdot(ravel_pytree(u_warm)[0], uf)) > 0.999  # sign follows v0


def test_largest_algebraic_not_largest_magnitude():
    """With the loss negated, the largest-|λ| eigenvalue is negative: Lanczos returns the top
    positive one (the edge of stability is about λ_max, not |λ|_max)."""
    flow = _flow(-1.0)
    ev = jnp.linalg.eigvalsh(_dense_hessian(flow, flow.params0))
    assert -ev[0] > ev[-1] > 0  # the problem has the property the test needs
    lam = gf.OBSERVABLES["sharpness"](0.0, flow.params0, flow)
    assert _rel(lam, ev[-1]) <= EIG_RTOL


def test_exact_when_krylov_space_is_everything():
    """num_iterations ≥ P is clipped to P (the whole space): exact, through Lanczos breakdowns."""
    flow = _flow()
    ev = jnp.linalg.eigvalsh(_dense_hessian(flow, flow.params0))
    lam, _ = cf.top_hessian_eigenpair(flow, flow.params0, num_iterations=1000)
    assert _rel(lam, ev[-1]) <= EIG_RTOL


def test_sharpness_gradient():
    """∇S = ∇(uᵀHu)|_u fixed against (1) central differences of the dense eigvalsh and (2) the
    autodiff of the dense eigvalsh (Hellmann–Feynman holds for a simple top eigenvalue)."""
    flow = _flow()
    p = flow.params0
    flat, unravel = ravel_pytree(p)

    @jax.jit
    def top(f):
        return jnp.linalg.eigvalsh(jax.hessian(lambda g: flow.loss_value(unravel(g)))(f))[-1]

    ev = jnp.linalg.eigvalsh(_dense_hessian(flow, p))
    assert float(ev[-1] - ev[-2]) > 0.05 * float(ev[-1])  # simple top eigenvalue: S is smooth
    lam, u, grad_s = cf.sharpness_and_gradient(flow, p)
    g = ravel_pytree(grad_s)[0]
    auto = jax.jit(jax.grad(top))(flat)
    # same quantity by two exact routes: round-off only (the eigenvector error enters at second
    # order in uᵀ(∂H)u around the exact eigenvector, ~1e-16 here)
    np.testing.assert_allclose(g, auto, rtol=1e-8, atol=1e-10 * float(jnp.max(jnp.abs(auto))))
    # central differences along 4 random directions, h = 1e-4: truncation h²·S'''/6 ~ 1e-8 of the
    # scale, round-off eps·S/h ~ 1e-12: an rtol of 1e-6 on the directional derivative covers both
    h = 1e-4
    dirs = jr.normal(jr.PRNGKey(2), (4, flat.shape[0]))
    for d in dirs:
        fd = (top(flat + h * d) - top(flat - h * d)) / (2 * h)
        bound = 1e-6 * float(jnp.linalg.norm(g) * jnp.linalg.norm(d))
        assert abs(float(jnp.vdot(g, d) - fd)) <= bound
    # negative control: the gradient of the loss itself is not ∇S
    assert _rel(ravel_pytree(flow.gradient(p))[0], auto) > 0.1
    # transforms: jit and vmap over params
    stack = _params_stack(flow)
    vm = eqx.filter_jit(jax.vmap(lambda q: cf.sharpness_and_gradient(flow, q)[2]))(stack)
    first = ravel_pytree(jax.tree_util.tree_map(lambda x: x[0], vm))[0]
    np.testing.assert_allclose(first, g, rtol=1e-9, atol=1e-12)


def test_registered_as_observable():
    # solve_flow saving "sharpness" is exercised by tests/test_central_flow.py (gradient flow)
    assert gf.OBSERVABLES["sharpness"] is cf.sharpness


def test_errors():
    flow = _flow()
    rated = gf.GradientFlow(flow.model0, gf.squared_error, flow.data,
                            rates=jax.tree_util.tree_map(lambda x: 2.0, flow.params0))
    for fn in (lambda: cf.top_hessian_eigenpair(rated, rated.params0),
               lambda: cf.sharpness_gradient(rated, rated.params0, rated.params0)):
        with pytest.raises(ValueError, match=re.escape("`flow.rates` must be None")):
            fn()
    with pytest.raises(ValueError, match=re.escape("`num_iterations` must be an integer ≥ 1")):
        cf.top_hessian_eigenpair(flow, flow.params0, num_iterations=0)
    msg = "`v0` must have the sizes of `params` (64 entries)"
    with pytest.raises(ValueError, match=re.escape(msg)):
        cf.top_hessian_eigenpair(flow, flow.params0, {"w": jnp.ones(3)})
