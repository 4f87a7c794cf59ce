"""A sweep's identity: a fingerprint of the traced per-member computation (its jaxpr and every
constant it closes over), the config hash and the versions, so that a store is resumed only by
the same computation."""

import hashlib
import json
import re
from collections.abc import Mapping

import diffrax
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from .._flow.observables import resolve_observables


def _describe(fn) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"


_ADDRESS = re.compile(r"0x[0-9a-fA-F]+")


def _canonical(text: str) -> str:
    """`text` without memory addresses (they differ between processes)."""
    return _ADDRESS.sub("0x", text)


def _describe_solver(solver) -> str:
    return "auto (default)" if solver is None else _canonical(repr(solver))


def _all_consts(closed) -> list:
    """The constants of a closed jaxpr and of every closed jaxpr in its equations' params."""
    from jax.extend.core import ClosedJaxpr, Jaxpr

    consts, stack, seen = list(closed.consts), [closed.jaxpr], set()
    while stack:
        jaxpr = stack.pop()
        if id(jaxpr) in seen:
            continue
        seen.add(id(jaxpr))
        for eqn in jaxpr.eqns:
            for value in eqn.params.values():
                for v in value if isinstance(value, (tuple, list)) else (value,):
                    if isinstance(v, ClosedJaxpr):
                        consts.extend(v.consts)
                        stack.append(v.jaxpr)
                    elif isinstance(v, Jaxpr):
                        stack.append(v)
    return consts


def computation_fingerprint(closed) -> str:
    """SHA-256 of a traced per-member computation: the jaxpr's text (memory addresses removed:
    it is the same in every process) and the bytes, shape and dtype of every constant (arrays
    `make_flow` closes over, e.g. the data)."""
    h = hashlib.sha256(_canonical(str(closed.jaxpr)).encode())
    for c in _all_consts(closed):
        if hasattr(c, "dtype") and jnp.issubdtype(c.dtype, jax.dtypes.prng_key):
            c = jr.key_data(c)
        try:
            a = np.asarray(c)
        except Exception:  # an opaque constant: its text
            h.update(_canonical(repr(c)).encode())
            continue
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:32]


#: Traced per-member computations of recent sweeps (with their compiled chunk solvers):
#: rerunning (or resuming) a sweep in the same process with the same `make_flow` object and
#: settings reuses the trace and the compile.
_MEMBERS: dict = {}


def _cache_key(make_flow, t1, ts, observables, solve_kwargs, loss_threshold, typed, in_specs, method=None):
    obs = tuple(resolve_observables(observables).items())
    key = (make_flow, method, t1, np.asarray(ts).tobytes(), obs,
           tuple(sorted(solve_kwargs.items(), key=lambda kv: kv[0])),
           loss_threshold, typed, jax.config.jax_enable_x64, str(jax.config.jax_default_matmul_precision),
           tuple(sorted(in_specs[1])),
           tuple((x.shape, str(x.dtype)) for x in jax.tree_util.tree_leaves(in_specs)))
    try:
        hash(key)
    except TypeError:  # e.g. an unhashable solver: no reuse
        return None
    return key


def config_hash(spec: Mapping) -> str:
    """A short SHA-256 of a JSON-able sweep description (keys sorted)."""
    text = json.dumps(spec, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _versions() -> dict[str, str]:
    from .._version import __version__

    precision = jax.config.jax_default_matmul_precision
    return {
        "gflow_version": __version__,
        "jax_version": jax.__version__,
        "diffrax_version": diffrax.__version__ if hasattr(diffrax, "__version__") else "?",
        "dtype": str(jnp.zeros(()).dtype) if jax.config.jax_enable_x64 else "float32",
        "matmul_precision": "default" if precision is None else str(precision),
    }
