"""The network observables that pair with the reduced flow of Berthier, Montanari & Zhou,
"Learning time-scales in two-layers neural networks", FoCM 2024 (arXiv:2303.00055): the
alignments s_i = ⟨w_i, u*⟩ and the order parameters M_k = (1/m) Σ_i a_i s_i^k (Eq. (38)).

Both are observables `(t, params, flow) -> value` for `solve_flow(..., observables=…)` and work
from the flow alone: the teacher direction u* is the `SingleIndex` data's `u_star`.
"""

import jax.numpy as jnp
from jaxtyping import Array, Float

from ..._validate import message
from .hermite import powers
from .setup import SingleIndex


def _single_index(flow, name) -> SingleIndex:
    if not isinstance(flow.data, SingleIndex):
        raise TypeError(message(f"observable {name!r}", "be used on gflow.bmz.SingleIndex data (it needs the "
                                "teacher direction u*)", type(flow.data).__name__))
    return flow.data


def alignments(t, params, flow) -> Float[Array, " m"]:
    """Observable s_i = ⟨w_i, u*⟩/‖w_i‖ (m,), on `SingleIndex` data."""
    return _single_index(flow, "alignments").alignments(flow.model(params))


def order_parameters(t, params, flow) -> Float[Array, " K"]:
    """Observable M_k = c Σ_i a_i s_i^k, k = 0..K (K+1,), with c the model's output scale (1/m in
    mean-field scaling), on `SingleIndex` data."""
    data = _single_index(flow, "order_parameters")
    model = flow.model(params)
    s = data.alignments(model)
    return model.output_scale * jnp.sum(model.a[0][:, None] * powers(s, data.degree), axis=0)
