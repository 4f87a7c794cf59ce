"""`DeepLinearModes`: Saxe's exact mode dynamics of a deep linear network, seeded from a flow."""

from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..._custom_types import Observables, Times
from ..._losses import squared_error
from ..._models.linear import DeepLinear
from ..._validate import check_float_array, is_concrete, message, regime_error
from .._regime import check_flow
from ..base import AbstractTheory
from .observables import data_modes, mode_strengths
from .strengths import deep_balanced_half_time, deep_balanced_strength, two_layer_half_time, two_layer_strength

_NAME = "DeepLinearModes"
_DEEP = "DeepLinearModes (depth ≥ 3)"


class DeepLinearModes(AbstractTheory):
    """Exact mode dynamics of a deep linear network under MSE.

    ??? cite "Reference"
        Saxe, McClelland & Ganguli, "Exact solutions to the nonlinear dynamics of learning in
        deep linear neural networks", ICLR 2014 (arXiv:1312.6120), Eqs. (6)–(8), Sec. 3.

    Network W = W_D⋯W_1 (D = `depth` weight matrices), loss ½‖f − y‖² averaged over samples,
    flow dθ/dt = −κ∇L (κ = `time_scale`, the flow's; Saxe's τ = 1/κ; theory clock τ = κt).
    With Syx = U diag(s) Vᵀ, Sxx v_α = λ_α v_α and an aligned init, the per-layer strengths obey
    da_{l,α}/dτ = Π_{j≠l} a_{j,α} (s_α − λ_α u_α), u_α = Π_l a_{l,α} = u_αᵀ W v_α. Solved exactly
    for D = 2 with any balance c_α = a_α² − b_α² (du/dτ = √(c² + 4u²)(s − λu): Saxe's sigmoid
    at c = 0, a Riccati solution otherwise), and for D ≥ 3 balanced (du/dτ = D u^{2−2/D}(s − λu))
    through the exact t(u) relation with ₂F₁ (needs 0 < λu0 < s, or u0 = 0: a mode absent from
    the init stays at 0).

    Fields (all arrays, m modes; a theory jits and vmaps, and same-shaped theories share one
    compiled `evaluate`): `singular_values` s, `initial_strengths` u0, `input_variances` λ,
    `imbalance` c, `output_trace` ½ tr Syy, `time_scale` κ; `depth` D is static.
    Observables: `mode_strengths` (T, m) (simulated by `gflow.saxe.mode_strengths`, which
    projects on the same modes) and `loss` (T,) = ½ tr Syy − Σ s u + ½ Σ λ u²; `ts` on the
    flow's clock. (The modes decouple: `gflow.saxe.mode_projection` stays diagonal.)
    """

    singular_values: Float[Array, " m"]
    initial_strengths: Float[Array, " m"]
    input_variances: Float[Array, " m"]
    imbalance: Float[Array, " m"]
    output_trace: Float[Array, ""]
    time_scale: Float[Array, ""]
    depth: int = eqx.field(static=True)

    observables: ClassVar[dict] = {"mode_strengths": mode_strengths, "loss": "loss"}

    def __init__(self, singular_values, initial_strengths, *, depth: int = 2, input_variances=None,
                 imbalance=None, output_trace=None, time_scale=1.0):
        s = check_float_array("singular_values", singular_values, ndim=1)
        u0 = check_float_array("initial_strengths", initial_strengths, ndim=1)
        if u0.shape != s.shape:
            raise ValueError(message("initial_strengths", f"have shape {s.shape} like `singular_values`", u0.shape))
        if not isinstance(depth, int) or depth < 2:
            raise ValueError(message("depth", "be an integer ≥ 2 (the number of weight matrices)", depth))
        lam = (jnp.ones_like(s) if input_variances is None
               else check_float_array("input_variances", input_variances, ndim=1))
        c = jnp.zeros_like(s) if imbalance is None else check_float_array("imbalance", imbalance, ndim=1)
        if depth > 2:
            if is_concrete(c) and bool(jnp.any(c != 0)):
                raise regime_error(_DEEP, "a balanced init (all layers equal per mode)",
                                   f"got imbalance {c}", "Simulate unbalanced deep networks instead.")
            if is_concrete(u0) and is_concrete(s) and is_concrete(lam):
                bad = (lam * u0 < 0) | ((u0 != 0) & (lam * u0 >= s))
                if bool(jnp.any(bad)):
                    i = int(jnp.argmax(bad))
                    raise regime_error(_DEEP, "0 < λ u0 < s (or u0 = 0) for every mode",
                                       f"mode {i} has λu0 = {float(lam[i] * u0[i])}, s = {float(s[i])}",
                                       "Outside it the exact t(u) relation does not apply: simulate instead.")
        self.singular_values = s
        self.initial_strengths = u0
        self.input_variances = lam
        self.imbalance = c
        trace = 0.5 * jnp.sum(s**2 / lam) if output_trace is None else output_trace
        self.output_trace = jnp.asarray(trace, dtype=s.dtype)
        self.time_scale = jnp.asarray(time_scale, dtype=s.dtype)
        self.depth = depth

    @classmethod
    def from_flow(cls, flow, *, rank: int | None = None, atol: float = 1e-8) -> "DeepLinearModes":
        """Seed from a `GradientFlow` of a `DeepLinear` net on a `Dataset` under `squared_error`.

        The modes are the data's (`gflow.saxe.data_modes`): the recorded ones, or the SVD of Syx
        with the modes below its numerical rank (s_α ≤ √ε·s_1) held at u = 0; `rank` keeps at
        most the `rank` strongest. Checks the decoupling conditions on the kept modes — each v_α
        an eigenvector of Sxx, an aligned init (no weight outside the kept modes), balanced for
        D ≥ 3 — to relative tolerance `atol`, raising a named error that says which failed
        (under jit/vmap: `eqx.error_if`).
        """
        check_flow(_NAME, flow, model=DeepLinear, loss=squared_error)
        if rank is not None and (not isinstance(rank, int) or rank < 0):
            raise ValueError(message("rank", "be a non-negative integer (the number of modes kept) or None",
                                     repr(rank)))
        data, model = flow.data, flow.model0
        modes, kept = data_modes(data, rank)
        U = jnp.where(kept[None, :], modes.U, 0.0)
        V = jnp.where(kept[None, :], modes.V, 0.0)
        s = jnp.where(kept, modes.s, 0.0)
        lam = jnp.where(kept, modes.lam, 1.0)
        checks = [_input_condition(data, V, lam, kept, atol)]
        u0 = jnp.einsum("kr,kd,dr->r", U, model.end_to_end(), V)
        misfit, c = _alignment(model.weights, U, V, kept, u0)
        depth = len(model.weights)
        checks.append((misfit,
                       "an aligned init W_l = R_{l+1} diag(a_l) R_lᵀ (R_1 = V_r, R_{D+1} = U_r, orthonormal "
                       "hidden R_l) on the kept modes" + (", balanced across layers" if depth > 2 else ""),
                       "the initial weights are not of that form",
                       "Use DeepLinear.aligned(...); random inits follow Saxe's curves only qualitatively."))
        for value, assumption, detail, fix in checks:
            if is_concrete(value):
                if float(value) > atol:
                    detail = f"{detail} (relative misfit {float(value):.2e} > {atol:g})"
                    raise regime_error(_NAME, assumption, detail, fix)
            else:
                u0 = eqx.error_if(u0, value > atol, f"{_NAME} assumes {assumption}; {detail}. {fix}")
        return cls(s, u0, depth=depth, input_variances=lam, imbalance=c,
                   output_trace=0.5 * jnp.trace(data.output_covariance()), time_scale=flow.time_scale)

    def _whitened(self):
        lam = self.input_variances
        return self.singular_values, lam * self.initial_strengths, lam * self.imbalance, lam

    def observables_at(self, tau: Times) -> Observables:
        """`mode_strengths` (T, m) and `loss` (T,) at theory times τ = κt (T,)."""
        s, u0, c, lam = self._whitened()
        tau = tau[:, None]
        if self.depth == 2:
            u = two_layer_strength(s[None, :], u0[None, :], c[None, :], tau) / lam[None, :]
        else:
            tau = lam[None, :] ** (2.0 / self.depth - 1.0) * tau
            u = deep_balanced_strength(s[None, :], u0[None, :], tau, self.depth) / lam[None, :]
        loss = self.output_trace - u @ s + 0.5 * (u**2) @ lam
        return {"mode_strengths": u, "loss": loss}

    def half_time(self) -> Float[Array, " m"]:
        """t½ (m,), flow clock: the first t ≥ 0 at which λu_α(t) reaches s_α/2, i.e. the mode
        strength reaches half its final value s_α/λ_α (the strengths move monotonically to it).

        Exact for every case the theory covers: D = 2 with any imbalance (the Riccati solution
        inverted; Saxe's ln(s/(λu0) − 1)/(2κs) when balanced) and D ≥ 3 balanced (the exact
        t(u) relation at u = s/(2λ)). t½ = 0 for a mode that starts at or past half its final
        value; t½ = inf for a mode that never gets there: s = 0 (nothing to learn), u0 = 0 with
        no imbalance (a saddle: the mode stays at 0), balanced D = 2 with u0 < 0 (it decays to 0).
        Compiled once per shape; works under jit/vmap.
        """
        return _half_time(self)


@eqx.filter_jit
def _half_time(theory: DeepLinearModes) -> Float[Array, " m"]:
    s, u0, c, lam = theory._whitened()
    if theory.depth == 2:
        tau = two_layer_half_time(s, u0, c)
    else:
        tau = deep_balanced_half_time(s, u0, theory.depth) / lam ** (2.0 / theory.depth - 1.0)
    return tau / theory.time_scale


def _input_condition(data, V, lam, kept, atol):
    """Each kept v_α an eigenvector of Sxx: max |Sxx v − λ v| / max λ, and the named error."""
    resid = data.input_covariance() @ V - V * jnp.where(kept, lam, 0.0)[None, :]
    per_mode = jnp.max(jnp.abs(resid), axis=0) / jnp.max(jnp.abs(lam))
    first = int(jnp.argmax(per_mode > atol)) if is_concrete(per_mode) else None
    which = "the input covariance mixes the modes"
    which += "" if first is None else f" (mode {first} is the first that fails)"
    rank = "the number of modes before it" if first is None else str(first)
    fix = ("Whiten the inputs, or compare with the simulation only; if the init puts no weight on that mode "
           f"or any weaker one, seed with `rank={rank}` (the modes from it on then stay at 0).")
    return (jnp.max(per_mode), "each kept input mode v_α to be an eigenvector of Sxx (whitened inputs, or Sxx "
            "commuting with SyxᵀSyx)", which, fix)


def _alignment(weights, U, V, kept, u0):
    """The largest relative misfit of the aligned (and, for D ≥ 3, balanced) form on the kept
    modes, and the imbalance c = a² − b² (D = 2; zeros for D ≥ 3)."""
    depth = len(weights)
    scale = jnp.max(jnp.stack([jnp.max(jnp.abs(w)) for w in weights]))
    if depth == 2:
        W1, W2 = weights
        P1, P2 = W1 @ V, W2.T @ U
        a2, b2 = jnp.sum(P1**2, axis=0), jnp.sum(P2**2, axis=0)
        off = lambda M: M - jnp.diag(jnp.diagonal(M))  # noqa: E731
        misfit = jnp.max(jnp.stack([
            jnp.max(jnp.abs(W1 - P1 @ V.T)) / scale,
            jnp.max(jnp.abs(W2 - U @ P2.T)) / scale,
            jnp.max(jnp.abs(off(P1.T @ P1))) / scale**2,
            jnp.max(jnp.abs(off(P2.T @ P2))) / scale**2,
            jnp.max(jnp.abs(off(P1.T @ P2))) / scale**2,
            jnp.max(jnp.abs(jnp.abs(u0) - jnp.sqrt(a2 * b2))) / scale**2,
        ]))
        # Balance is exact in exact arithmetic; snap round-off-level imbalance to 0 so the
        # balanced (sigmoid) branch is used: the Riccati form loses precision as c̃ → 0.
        c = a2 - b2
        c = jnp.where(jnp.abs(c) <= 1e-10 * jnp.maximum(a2 + b2, scale**2 * 1e-300), 0.0, c)
        return misfit, jnp.where(kept, c, 0.0)
    R, strengths, misfits = V, [], []
    for layer, w in enumerate(weights):
        P = w @ R
        misfits.append(jnp.max(jnp.abs(w - P @ R.T)) / scale)
        if layer == depth - 1:
            a = jnp.diagonal(U.T @ P)
            misfits.append(jnp.max(jnp.abs(P - U * a[None, :])) / scale)
        else:
            a = jnp.linalg.norm(P, axis=0)
            live = a > 1e-10 * scale  # modes absent from the init (and the ones not kept) have a = 0
            R = jnp.where(live[None, :], P / jnp.where(live, a, 1.0)[None, :], 0.0)
            misfits.append(jnp.max(jnp.abs(R.T @ R - jnp.diag(live.astype(R.dtype)))))
        strengths.append(a)
    strengths = jnp.stack(strengths)
    misfits.append(jnp.max(jnp.abs(strengths - strengths[-1:])) / scale)
    return jnp.max(jnp.stack(misfits)), jnp.zeros_like(u0)
