"""Type aliases shared across gflow (jaxtyping)."""

from typing import Any, TypeAlias

from jaxtyping import Array, ArrayLike, Float, PyTree

#: The trainable arrays of a model: the ODE state of a gradient flow.
Params: TypeAlias = PyTree[Float[Array, "..."]]
#: A time grid, in the flow's clock (t = eta * steps for gradient descent with step eta).
Times: TypeAlias = Float[Array, " times"]
#: Named observables: a dict of arrays (or pytrees) with a leading time axis.
Observables: TypeAlias = dict[str, Any]
RealScalarLike: TypeAlias = float | int | Float[ArrayLike, ""]
