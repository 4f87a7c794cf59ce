"""The one home of input checks and their error messages.

Static problems (shapes, dtypes, structure, regime) raise `ValueError`/`TypeError` in Python.
Value problems that may only be known under `jit`/`vmap` (NaN, non-positive times) go through
`eqx.error_if`, whose return value is threaded back into the computation.
Every message reads "`name` must <expectation>; got <what was given>", plus the fix if there is one.
"""

import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


def message(name: str, expected: str, got: Any, fix: str | None = None) -> str:
    """The house error message: names the argument, the expectation and what was given."""
    msg = f"`{name}` must {expected}; got {got}."
    if fix:
        msg += f" {fix}"
    return msg


def is_concrete(x: Any) -> bool:
    """True when `x` has a value now (not a tracer under jit/vmap/grad)."""
    return not isinstance(x, jax.core.Tracer)


def check_float_array(name: str, x: Any, *, ndim: int | tuple[int, ...] | None = None) -> jax.Array:
    """Check that `x` is a real floating array (optionally of the given rank) and return it."""
    if not hasattr(x, "dtype") or not hasattr(x, "shape"):
        x = np.asarray(x)
    dtype = x.dtype
    if not jnp.issubdtype(dtype, jnp.floating):
        if jnp.issubdtype(dtype, jnp.complexfloating):
            got = f"complex dtype {dtype}"
        else:
            got = f"dtype {dtype}"
        raise TypeError(
            message(name, "be a real floating-point array", got,
                    "Convert it first, e.g. `jnp.asarray(x, dtype=float)`.")
        )
    if ndim is not None:
        ndims = (ndim,) if isinstance(ndim, int) else ndim
        if x.ndim not in ndims:
            want = " or ".join(str(n) for n in ndims)
            raise ValueError(message(name, f"have {want} dimension(s)", f"shape {tuple(x.shape)}"))
    return jnp.asarray(x)


def check_shape(name: str, x: Any, shape: tuple, description: str) -> None:
    """Check `x.shape == shape`; `description` spells the expected shape, e.g. '(n, d)'."""
    if tuple(x.shape) != tuple(shape):
        raise ValueError(
            message(name, f"have shape {description} = {tuple(shape)}", f"shape {tuple(x.shape)}")
        )


def check_finite(name: str, tree: Any) -> Any:
    """Check that every floating leaf of `tree` is finite (no NaN/inf).

    Concrete values raise `ValueError` at once; traced values (under jit/vmap) are checked with
    `eqx.error_if` and the checked tree is returned, so the caller must use the return value.
    """
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    out = []
    for leaf in leaves:
        if eqx.is_inexact_array(leaf):
            msg = message(name, "contain only finite values", "NaN or inf")
            if is_concrete(leaf):
                # numpy, not jnp: inside a jit trace jnp ops on a closed-over constant are traced.
                if not bool(np.all(np.isfinite(np.asarray(leaf)))):
                    raise ValueError(msg)
            else:
                leaf = eqx.error_if(leaf, ~jnp.all(jnp.isfinite(leaf)), msg)
        out.append(leaf)
    return jax.tree_util.tree_unflatten(treedef, out)


def check_positive(name: str, x: Any, *, strict: bool = True) -> Any:
    """Check x > 0 (or x >= 0): a Python error if concrete, `eqx.error_if` if traced."""
    expected = "be > 0" if strict else "be >= 0"
    if is_concrete(x):
        arr = np.asarray(x)
        bad = np.any(arr <= 0) if strict else np.any(arr < 0)
        if bad or np.any(np.isnan(arr)):
            raise ValueError(message(name, expected, x))
        return x
    bad = (x <= 0) if strict else (x < 0)
    return eqx.error_if(x, jnp.any(bad | jnp.isnan(x)), message(name, expected, "a value that is not"))


def check_increasing_times(name: str, ts: Any, t0: Any, t1: Any) -> Any:
    """Check that `ts` is 1-D, non-decreasing and inside [t0, t1]."""
    ts = check_float_array(name, ts, ndim=1)
    if ts.shape[0] == 0:
        raise ValueError(message(name, "hold at least one time", "an empty array"))
    expected = "be non-decreasing and lie in [t0, t1]"
    if is_concrete(ts) and is_concrete(t0) and is_concrete(t1):
        arr = np.asarray(ts)
        if np.any(np.diff(arr) < 0):
            i = int(np.argmax(np.diff(arr) < 0))
            raise ValueError(message(name, "be non-decreasing", f"ts[{i}]={arr[i]} > ts[{i + 1}]={arr[i + 1]}"))
        lo, hi = float(np.asarray(t0)), float(np.asarray(t1))
        if arr[0] < lo - 1e-12 * max(1.0, abs(lo)) or arr[-1] > hi * (1 + 1e-12) + 1e-300:
            raise ValueError(message(name, expected, f"[{arr[0]}, {arr[-1]}] with t0={lo}, t1={hi}"))
        return ts
    bad = jnp.any(jnp.diff(ts) < 0) | (ts[0] < t0) | (ts[-1] > t1)
    return eqx.error_if(ts, bad, message(name, expected, "times that are not"))


def check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(message(name, f"be one of {choices}", repr(value)))


def regime_error(theory: str, assumption: str, detail: str, fix: str | None = None) -> ValueError:
    """The error a theory raises when a problem breaks one of its assumptions."""
    msg = f"{theory} assumes {assumption}; {detail}."
    if fix:
        msg += f" {fix}"
    return ValueError(msg)


def check_unpadded(theory: str, flow: Any) -> None:
    """Theories read widths and data sizes off array shapes: a padded flow must be unpadded first."""
    if getattr(flow, "is_padded", False):
        raise regime_error(theory, "a flow at its real sizes",
                           "got a padded width or data size (TwoLayer(active_width=…) or Dataset.first(n))",
                           "Seed the theory from `flow.unpadded()` (same trajectory on the real entries).")


def _scalar_value(x: Any) -> float | None:
    """The float value of a concrete real scalar, None otherwise (arrays, tracers, non-numbers)."""
    if not is_concrete(x):
        return None
    try:
        arr = np.asarray(x)
    except Exception:
        return None
    if arr.ndim != 0 or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        return None
    return float(arr)


def check_finite_positive(name: str, x: Any, *, strict: bool = True, traced: str = "error_if") -> Any:
    """Check that `x` is finite and > 0 (`strict`) or ≥ 0: a `ValueError` if concrete.

    A traced `x` (under jit/vmap) goes through `eqx.error_if` with `traced="error_if"`, or is
    returned unchecked with `traced="pass"` (where a bad value must instead show in a per-member
    result code: an `error_if` under `vmap` stops the whole batch).
    """
    expected = "be finite and > 0" if strict else "be finite and ≥ 0"
    if is_concrete(x):
        arr = np.asarray(x)
        if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
            raise ValueError(message(name, f"be a real number, {expected[3:]}", repr(x)))
        bad = ~np.isfinite(arr) | ((arr <= 0) if strict else (arr < 0))
        if np.any(bad):
            got = x if arr.ndim == 0 else f"{int(np.sum(bad))} bad entries of {arr.size}"
            raise ValueError(message(name, expected, got))
        return x
    if traced == "pass":
        return x
    bad = ~jnp.isfinite(x) | ((x <= 0) if strict else (x < 0))
    return eqx.error_if(x, jnp.any(bad), message(name, expected, "a value that is not"))


def check_finite_scalar(name: str, x: Any) -> Any:
    """Check that a concrete `x` is a finite number (NaN/inf refused); traced values pass."""
    value = _scalar_value(x)
    if is_concrete(x) and value is not None and not math.isfinite(value):
        raise ValueError(message(name, "be finite", value))
    return x


def check_integer(name: str, value: Any, *, minimum: int, why: str | None = None) -> int:
    """Check that `value` is a Python/NumPy integer ≥ `minimum` (bools refused); returns an int."""
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    if not ok or value < minimum:
        expected = f"be an integer ≥ {minimum}" + (f" ({why})" if why else "")
        raise ValueError(message(name, expected, repr(value)))
    return int(value)


def check_time_span(t0: Any, t1: Any) -> Any:
    """Check finite t0 < t1 (a `ValueError` if concrete); returns `t1` (traced: `eqx.error_if`,
    and a bad t1 is replaced by t0 + 1 so that diffrax's own checks do not pre-empt ours)."""
    if is_concrete(t0) and is_concrete(t1):
        lo, hi = float(np.asarray(t0)), float(np.asarray(t1))
        if not math.isfinite(lo):
            raise ValueError(message("t0", "be finite", lo))
        if not math.isfinite(hi):
            raise ValueError(message("t1", "be finite", hi, "Solve to a finite time (e.g. stop early with an event)."))
        if not hi > lo:
            raise ValueError(message("t1", f"be > t0 = {lo}", hi))
        return t1
    bad = ~(t1 > t0) | ~jnp.isfinite(t1)
    t1 = eqx.error_if(t1, bad, message("t1", "be > t0 and finite", "a value that is not"))
    return jnp.where(bad, t0 + 1.0, t1)
