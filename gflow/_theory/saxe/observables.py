"""The data's input–output modes truncated to their numerical rank, and the simulation
observables of `DeepLinearModes` (functions `(t, params, flow)` that work from the flow alone).

??? cite "Reference"
    Saxe, McClelland & Ganguli, "Exact solutions to the nonlinear dynamics of learning in deep
    linear neural networks", ICLR 2014 (arXiv:1312.6120), Sec. 2 (the SVD of Σ³¹ = Syx).
"""

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from ..._data.base import Dataset, InputOutputModes, input_output_modes
from ..._validate import message


def rank_rtol(dtype) -> float:
    """The relative threshold of the numerical rank of Syx: s_α ≤ √ε · s_1 counts as 0
    (ε the dtype's machine epsilon: 1.5e-8 in float64, 3.5e-4 in float32). Moments computed from
    an exactly rank-r target carry round-off of a few ε · s_1 in the other singular values; a
    genuine mode this weak would need a time ≳ 1/(√ε s_1) to be learned."""
    return float(np.sqrt(np.finfo(dtype).eps))


def data_modes(data: Dataset, rank: int | None = None) -> tuple[InputOutputModes, Bool[Array, " m"]]:
    """The data's modes and which of them carry signal: (modes, kept) with `kept` (m,) boolean.

    Recorded modes (`Dataset.modes`, e.g. from `whitened_regression`) define their directions
    exactly, s = 0 modes included: all kept. Otherwise the m = min(k, d) modes of the SVD
    Syx = U diag(s) Vᵀ, of which those below the numerical rank (s_α ≤ `rank_rtol` · s_1) are
    not kept: their directions are arbitrary. `rank` keeps at most the `rank` strongest.
    Shapes are static (m), so this works on traced data under jit/vmap.
    """
    modes = input_output_modes(data)
    m = modes.s.shape[0]
    if data.modes is not None:
        kept = jnp.ones((m,), bool)
    else:
        kept = modes.s > rank_rtol(modes.s.dtype) * modes.s[0]
        modes = InputOutputModes(modes.U, jnp.where(kept, modes.s, 0.0), modes.V, modes.lam)
    if rank is not None:
        kept = kept & (jnp.arange(m) < rank)
    return modes, kept


def _projection(params, flow, name) -> Float[Array, "m m"]:
    if not isinstance(flow.data, Dataset):
        raise TypeError(message(f"observable {name!r}", "be used with a finite `Dataset`", type(flow.data).__name__))
    model = flow.model(params)
    if not hasattr(model, "end_to_end"):
        raise TypeError(message(f"observable {name!r}", "be used with a linear model that has `end_to_end()`"
                                " (DeepLinear)", type(model).__name__))
    modes, kept = data_modes(flow.data)
    U = jnp.where(kept[None, :], modes.U, 0.0)
    V = jnp.where(kept[None, :], modes.V, 0.0)
    return U.T @ model.end_to_end() @ V


def mode_projection(t, params, flow) -> Float[Array, "m m"]:
    """U_mᵀ W(t) V_m (m, m): the end-to-end map W = W_D⋯W_1 in the data's mode basis, with the
    rows and columns of the modes below the numerical rank of Syx set to 0 (`data_modes`)."""
    return _projection(params, flow, "mode_projection")


def mode_strengths(t, params, flow) -> Float[Array, " m"]:
    """u_α(t) = u_αᵀ W(t) v_α (m,), Saxe's mode strengths on the data's modes; 0 for the modes
    below the numerical rank of Syx (`data_modes`)."""
    return jnp.diagonal(_projection(params, flow, "mode_strengths"))
