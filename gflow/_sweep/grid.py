"""The sweep's grid axes and member keys (the config's `[grid]` table is parsed by the same
`parse_grid`)."""

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from .._validate import message


def grid_axes(grid: Mapping, check: Callable[[str, str, Any], Any], *, error: type = ValueError,
              where: Callable[[str, str], str] | None = None) -> list[tuple[str, dict[str, Any]]]:
    """The one walk over a grid table, shared by `sweep(grid=…)` and the TOML config's `[grid]`.

    `grid` maps an axis name to 1-D values (its own axis) or to {parameter: values} (parameters
    varying together along one axis: equal lengths). `check(where, name, values) -> values`
    validates one parameter (raising `error` with `where` in the message); `where(dim, name)`
    names an entry in error messages. Returns [(dim, {parameter: checked values})] in order.
    """
    where = where or (lambda dim, name: f"grid[{dim!r}]" if name == dim else f"grid[{dim!r}][{name!r}]")
    axes, seen = [], set()
    for dim, entry in grid.items():
        if dim in ("member", "time"):
            raise error(message(where(dim, dim), "use a name other than the result's own dims 'member' and 'time'",
                                repr(dim)))
        params = entry if isinstance(entry, Mapping) else {dim: entry}
        if not params:
            raise error(message(where(dim, dim), "hold at least one parameter", "an empty table"))
        values = {}
        for name, v in params.items():
            if not isinstance(name, str) or name in seen:
                raise error(message(where(dim, name), "name each parameter once", repr(name)))
            seen.add(name)
            values[name] = check(where(dim, name), name, v)
        lengths = {name: len(a) for name, a in values.items()}
        if len(set(lengths.values())) > 1:
            raise error(message(where(dim, dim), "hold values of equal length (they vary together along one axis)",
                                lengths))
        axes.append((dim, values))
    return axes


def _real_values(where: str, name: str, v) -> np.ndarray:
    arr = np.asarray(v)
    real = np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    if arr.ndim != 1 or arr.shape[0] == 0 or not real:
        raise ValueError(message(where, "be a non-empty 1-D array of real numbers",
                                 f"{arr.dtype} array of shape {arr.shape}"))
    arr = arr.astype(float)
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ValueError(message(f"{where}[{int(bad[0])}]", "be finite", f"{arr[bad[0]]}"))
    return arr


def parse_grid(grid: Mapping | None) -> list[tuple[str, dict[str, np.ndarray]]]:
    """`grid` -> [(dim, {parameter: 1-D float64 values})]: the sweep's grid axes, in order.

    A `name: 1-D values` entry is its own axis (cartesian product with the others); a
    `dim: {name: values, …}` entry is one axis along which several parameters vary together
    (their arrays must have equal lengths). Values must be finite real numbers.
    """
    if grid is None:
        return []
    if not isinstance(grid, Mapping):
        raise TypeError(message("grid", "be a dict {name: 1-D values} (or {dim: {name: values}})", type(grid).__name__))
    return grid_axes(grid, _real_values)


def member_keys(members, seed: int) -> tuple[np.ndarray, bool]:
    """Raw uint32 key data (M, …) and whether the keys were typed (new-style) keys."""
    if isinstance(members, bool) or not (isinstance(members, int) or hasattr(members, "shape")):
        raise TypeError(message("members", "be a member count (int) or an array of PRNG keys", type(members).__name__))
    if isinstance(members, int):
        if members < 1:
            raise ValueError(message("members", "be ≥ 1", members))
        return np.asarray(jr.split(jr.PRNGKey(seed), members)), False
    if jnp.issubdtype(members.dtype, jax.dtypes.prng_key):
        if members.ndim != 1:
            raise ValueError(message("members", "be a 1-D array of typed PRNG keys", f"shape {members.shape}"))
        return np.asarray(jr.key_data(members)), True
    if members.ndim != 2 or members.dtype != np.uint32:
        raise ValueError(message("members", "be an array of keys from jax.random.split, shape (M, 2) uint32",
                                 f"{members.dtype} array of shape {members.shape}"))
    return np.asarray(members), False
