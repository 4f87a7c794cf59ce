"""Every theory in tests/helpers.py::THEORY_CASES through the same five checks.

1. agreement: `compare(Theory.from_flow(flow), solve_flow(flow, t1, observables=Theory.observables))`
   within the row's tolerance (the row derives it from rtol);
2. t = 0: the prediction at t = 0 equals the observables of the initial network;
3. transforms: `evaluate` plain, under `jit`, under `vmap` (over a stack of two theories) and
   under `jit∘vmap` give the same values;
4. negative control: the theory seeded from a perturbed start misses the simulation by more than
   `control_factor × tolerance` (so check 1 can fail);
5. regime errors: flows outside the theory's regime are refused by name.
"""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import THEORY_CASES

import gflow as gf

pytestmark = pytest.mark.skipif(not THEORY_CASES, reason="no theory rows yet")
CASES = {c.name: c for c in THEORY_CASES}
IDS = sorted(CASES)


@functools.cache
def _flow(name):
    return CASES[name].make_flow()


@functools.cache
def _theory(name):
    case = CASES[name]
    return case.theory.from_flow(_flow(name), **case.options)


def _names(case):
    obs = case.theory.observables
    names = tuple(obs) if case.observables is None else case.observables
    return names


@functools.cache
def _solution(name):
    case = CASES[name]
    return gf.solve_flow(_flow(name), case.t1, ts=case.times(), observables=case.theory.observables,
                         **case.solve_options)


def _errors(case, theory, solution):
    return {k: float(v) for k, v in gf.compare(theory, solution, _names(case), **case.compare_options).items()}


@pytest.mark.parametrize("name", IDS)
def test_agreement(name):
    case = CASES[name]
    errors = _errors(case, _theory(name), _solution(name))
    assert max(errors.values()) <= case.tolerance, errors


@pytest.mark.parametrize("name", IDS)
def test_exact_at_t0(name):
    case = CASES[name]
    ts = case.times()
    assert float(ts[0]) == 0.0
    predicted = _theory(name).evaluate(ts, **case.evaluate_options)
    simulated = _solution(name).observables  # row 0 is the initial network, exactly
    for n in _names(case):
        th = jnp.asarray(predicted[n][0])
        scale = max(float(jnp.max(jnp.abs(th))), 1e-300)
        err = float(jnp.max(jnp.abs(jnp.asarray(simulated[n][0]) - th))) / scale
        assert err <= case.t0_tolerance, (n, err)


@pytest.mark.parametrize("name", IDS)
def test_transforms(name):
    case = CASES[name]
    theory = _theory(name)
    ts = case.times()
    opts = case.evaluate_options
    plain = theory.evaluate(ts, **opts)
    jitted = eqx.filter_jit(lambda th: th.evaluate(ts, **opts))(theory)
    stacked = jax.tree_util.tree_map(lambda x: jnp.stack([x, x]) if eqx.is_array(x) else x, theory)
    vmapped = eqx.filter_vmap(lambda th: th.evaluate(ts, **opts))(stacked)
    jit_vmapped = eqx.filter_jit(eqx.filter_vmap(lambda th: th.evaluate(ts, **opts)))(stacked)
    for n in _names(case):
        ref = np.asarray(plain[n])
        for label, got in (("jit", jitted[n]), ("vmap", vmapped[n][1]), ("jit∘vmap", jit_vmapped[n][0])):
            np.testing.assert_allclose(np.asarray(got), ref, rtol=case.transform_rtol, atol=case.transform_atol,
                                       err_msg=f"{n} {label}")


@pytest.mark.parametrize("name", IDS)
def test_negative_control(name):
    case = CASES[name]
    wrong = case.theory.from_flow(case.perturb(_flow(name)), **case.options)
    errors = _errors(case, wrong, _solution(name))
    assert max(errors.values()) > case.control_factor * case.tolerance, errors


REGIME = [(name, i) for name in IDS for i in range(len(CASES[name].regime_errors))]


@pytest.mark.parametrize(("name", "index"), REGIME, ids=[f"{n}-{i}" for n, i in REGIME])
def test_regime_error(name, index):
    case = CASES[name]
    make_bad, options, pattern = case.regime_errors[index]
    with pytest.raises((ValueError, TypeError), match=pattern):
        case.theory.from_flow(make_bad(), **{**case.options, **options})


def test_every_theory_has_a_row():
    """Every public theory class (in the paper namespaces) has at least one row."""
    theories = set()
    for ns in ("saxe", "ntk", "tachet", "pellegrini_biroli", "bmz", "central_flow"):
        module = getattr(gf, ns, None)
        if module is None:
            continue
        for n in getattr(module, "__all__", ()):
            obj = getattr(module, n)
            if isinstance(obj, type) and issubclass(obj, gf.AbstractTheory) and not n.startswith("Abstract"):
                theories.add(obj)
    covered = {c.theory for c in THEORY_CASES}
    missing = sorted(t.__name__ for t in theories - covered)
    assert not missing, f"theories without a THEORY_CASES row: {missing}"
