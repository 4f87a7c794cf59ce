"""Special functions the closed forms need, in JAX (jit/vmap/grad-safe, float32 and float64):
the exponential integral Ei, the Lambert W function (branches 0 and −1), the Wright ω function,
and the inverse of an increasing scalar function by bracketed bisection."""

from ._special import expi as expi
from ._special import invert_increasing as invert_increasing
from ._special import lambertw as lambertw
from ._special import wrightomega as wrightomega

__all__ = ["expi", "lambertw", "wrightomega", "invert_increasing"]
