import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._custom_types import Observables, Times
from .._data.base import Dataset, input_output_modes
from .._losses import squared_error
from .._models.linear import DeepLinear
from .._validate import check_float_array, is_concrete, message, check_unpadded, regime_error
from .base import AbstractTheory

_SERIES_TERMS = 60


def _two_layer_strength(s, u0, c, t):
    """ũ(t) of dũ/dt = √(c̃² + 4ũ²)(s − ũ) (whitened units), classic.md §A.3–A.4."""
    abs_c = jnp.abs(c)
    balanced = abs_c == 0
    # --- c̃ = 0: the Saxe sigmoid (A.3), in overflow-free forms.
    safe_u0 = jnp.where(u0 == 0, 1.0, u0)
    safe_s = jnp.where(s == 0, 1.0, s)
    grow = jnp.where(
        s > 0,
        s / (1.0 + (s / safe_u0 - 1.0) * jnp.exp(-2.0 * s * t)),
        u0 / (1.0 + 2.0 * u0 * t),
    )
    decay_factor = jnp.where(s > 0, -jnp.expm1(-2.0 * s * t) / safe_s, 2.0 * t)
    decay = u0 * jnp.exp(-2.0 * s * t) / (1.0 - u0 * decay_factor)
    sigmoid = jnp.where(u0 > 0, grow, jnp.where(u0 < 0, decay, 0.0))
    # --- c̃ ≠ 0: the Riccati solution (A.4), every difference written without cancellation.
    safe_c = jnp.where(balanced, 1.0, abs_c)
    delta = jnp.sqrt(4.0 * s**2 + safe_c**2)
    q_plus = (2.0 * s + delta) / safe_c
    q_minus = -safe_c / (2.0 * s + delta)
    r0 = jnp.sqrt(4.0 * u0**2 + safe_c**2)
    q0 = jnp.where(u0 >= 0, (2.0 * u0 + r0) / safe_c, safe_c / (r0 - 2.0 * u0))
    K = (q0 - q_plus) / (q0 - q_minus) * jnp.exp(-delta * t)
    q = (q_plus - K * q_minus) / (1.0 - K)
    riccati = 0.25 * safe_c * (q - 1.0 / q)
    return jnp.where(balanced, sigmoid, riccati)


def _hyp_integral(v, gap, s, depth):
    """I(v) = ∫₀^v w/(s − w^D) dw = (v²/2s) ₂F₁(1, 2/D; 1+2/D; v^D/s), for 0 ≤ v < s^{1/D}.

    `gap` = s^{1/D} − v, passed separately so the logarithmic end is exact. Series for
    z = v^D/s ≤ ½; partial fractions over the D roots ρ_k of w^D = s otherwise:
    I = −(1/(D s)) Σ_k ρ_k² log(1 − v/ρ_k).
    """
    z = v**depth / s
    k = jnp.arange(_SERIES_TERMS, dtype=v.dtype)
    p = 2.0 / depth
    zs = jnp.minimum(z, 0.5)
    k = k.reshape((1,) * zs.ndim + k.shape)
    series = v**2 / (2.0 * s) * jnp.sum(zs[..., None] ** k * p / (p + k), axis=-1)
    root = s ** (1.0 / depth)
    angles = 2.0 * jnp.pi * jnp.arange(1, depth, dtype=v.dtype) / depth
    cdtype = jnp.complex128 if v.dtype == jnp.float64 else jnp.complex64
    rho = root.astype(cdtype) * jnp.exp(jax.lax.complex(jnp.zeros_like(angles), angles))
    vc = v.astype(cdtype)[..., None]
    rho = rho.reshape((1,) * v.ndim + rho.shape)
    others = jnp.sum(rho**2 * jnp.log(1.0 - vc / rho), axis=-1).real
    first = root**2 * jnp.log(gap / root)
    fractions = -(first + others) / (depth * s)
    return jnp.where(z <= 0.5, series, fractions)


def _deep_balanced_strength(s, u0, t, depth):
    """ũ(t) of dũ/dt = D ũ^{2−2/D}(s − ũ), 0 < ũ0 < s, from the exact t(ũ) of classic.md §A.5.

    Solves F(v) − F(v0) = t for the per-layer strength v = ũ^{1/D} by bisection on
    y = −log((v_max − v)/(v_max − v0)), v_max = s^{1/D}; returns s once t exceeds the time to
    reach s(1 − 1e-15).
    """
    vmax = s ** (1.0 / depth)
    v0 = u0 ** (1.0 / depth)
    gap0 = vmax - v0

    def F(v, gap):
        return v ** (2 - depth) / ((2 - depth) * s) + _hyp_integral(v, gap, s, depth) / s

    f0 = F(v0, gap0)
    y_max = jnp.log(gap0 / (vmax * 1e-15))

    def G(y):
        gap = gap0 * jnp.exp(-y)
        return F(vmax - gap, gap) - f0 - t

    def body(_, bracket):
        lo, hi = bracket
        mid = 0.5 * (lo + hi)
        below = G(mid) < 0
        return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

    lo, hi = jax.lax.fori_loop(0, 200, body, (jnp.zeros_like(t), jnp.full_like(t, y_max)))
    y = 0.5 * (lo + hi)
    v = vmax - gap0 * jnp.exp(-y)
    return jnp.where(G(y_max) < 0, s, v**depth)


class DeepLinearModes(AbstractTheory):
    """Exact mode dynamics of a deep linear network under MSE (Saxe, McClelland & Ganguli 2013).

    ??? cite "Reference"
        Saxe, McClelland & Ganguli, "Exact solutions to the nonlinear dynamics of learning in
        deep linear neural networks", ICLR 2014 (arXiv:1312.6120).

    Network W = W_D⋯W_1 (D = `depth` weight matrices), loss ½‖f − y‖² averaged over samples,
    flow dθ/dt = −κ∇L (κ = `time_scale`; Saxe's τ = 1/κ). With Syx = U diag(s) Vᵀ, Sxx v_α =
    λ_α v_α and an aligned init, the per-layer strengths obey
    da_{l,α}/dt = κ Π_{j≠l} a_{j,α} (s_α − λ_α u_α), with u_α = Π_l a_{l,α} = u_αᵀ W v_α. Solved
    exactly for D = 2 with any balance c_α = a_α² − b_α² (classic.md A.3/A.4:
    du/dt = √(c² + 4u²)(s − λu)), and for D ≥ 3 balanced (du/dt = D u^{2−2/D}(s − λu)) through
    the exact t(u) relation with ₂F₁ (A.5; needs 0 < λu0 < s). Observables `mode_strengths`
    (T, r) and `loss` (T,) (A.6); time in the flow's clock. Fields are arrays: a theory jits
    and vmaps.
    """

    singular_values: Float[Array, " r"]
    input_variances: Float[Array, " r"]
    initial_strengths: Float[Array, " r"]
    imbalance: Float[Array, " r"]
    output_trace: Float[Array, ""]
    time_scale: Float[Array, ""]
    depth: int = eqx.field(static=True)

    def __init__(
        self,
        singular_values,
        initial_strengths,
        *,
        depth: int = 2,
        input_variances=None,
        imbalance=None,
        output_trace=None,
        time_scale=1.0,
    ):
        s = check_float_array("singular_values", singular_values, ndim=1)
        u0 = check_float_array("initial_strengths", initial_strengths, ndim=1)
        if u0.shape != s.shape:
            raise ValueError(message("initial_strengths", f"have shape {s.shape} like `singular_values`", u0.shape))
        if not isinstance(depth, int) or depth < 2:
            raise ValueError(message("depth", "be an integer ≥ 2 (the number of weight matrices)", depth))
        lam = jnp.ones_like(s) if input_variances is None else check_float_array("input_variances", input_variances, ndim=1)
        c = jnp.zeros_like(s) if imbalance is None else check_float_array("imbalance", imbalance, ndim=1)
        if depth > 2:
            if is_concrete(c) and bool(jnp.any(c != 0)):
                raise regime_error("DeepLinearModes (depth ≥ 3)", "a balanced init (all layers equal per mode)",
                                   f"got imbalance {c}", "Simulate unbalanced deep networks instead.")
            if is_concrete(u0) and is_concrete(s):
                bad = (lam * u0 <= 0) | (lam * u0 >= s)
                if bool(jnp.any(bad)):
                    i = int(jnp.argmax(bad))
                    raise regime_error("DeepLinearModes (depth ≥ 3)", "0 < λ u0 < s for every mode",
                                       f"mode {i} has λu0 = {float(lam[i] * u0[i])}, s = {float(s[i])}",
                                       "Outside it the exact t(u) relation does not apply: simulate instead.")
        self.singular_values = s
        self.initial_strengths = u0
        self.input_variances = lam
        self.imbalance = c
        self.output_trace = jnp.asarray(
            0.5 * jnp.sum(s**2 / lam) if output_trace is None else output_trace, dtype=s.dtype
        )
        self.time_scale = jnp.asarray(time_scale, dtype=s.dtype)
        self.depth = depth

    @classmethod
    def from_flow(cls, flow, *, rank: int | None = None, atol: float = 1e-8) -> "DeepLinearModes":
        """Seed from a `GradientFlow` of a `DeepLinear` net on a `Dataset` under `squared_error`.

        Checks the decoupling conditions of classic.md §A.2 (input modes are eigenvectors of Sxx;
        aligned init; balanced for D ≥ 3) to relative tolerance `atol`, raising a named error
        that says which failed and for which mode.
        """
        model = flow.model0
        name = "DeepLinearModes"
        check_unpadded(name, flow)
        if not isinstance(model, DeepLinear):
            raise regime_error(name, "a DeepLinear model", f"got {type(model).__name__}")
        if flow.loss is not squared_error:
            raise regime_error(name, "the squared_error loss", f"got {getattr(flow.loss, '__name__', flow.loss)}")
        if not isinstance(flow.data, Dataset):
            raise regime_error(name, "a finite Dataset", f"got {type(flow.data).__name__}")
        if flow.rates is not None:
            raise regime_error(name, "equal layer rates", "got `rates`")
        data = flow.data
        modes = input_output_modes(data, rank)
        U, s, V, lam = modes.U, modes.s, modes.V, modes.lam
        checks = []
        # Input condition: each v_α an eigenvector of Sxx.
        resid = data.input_covariance() @ V - V * lam[None, :]
        checks.append((jnp.max(jnp.abs(resid)) / jnp.max(jnp.abs(lam)),
                       "each input mode v_α to be an eigenvector of Sxx (whitened inputs, or Sxx "
                       "commuting with SyxᵀSyx)", "the input covariance mixes the modes",
                       "Whiten the inputs, or compare with the simulation only."))
        W = model.weights
        depth = len(W)
        scale = jnp.max(jnp.stack([jnp.max(jnp.abs(w)) for w in W]))
        u0 = jnp.einsum("kr,kd,dr->r", U, model.end_to_end(), V)
        if depth == 2:
            P1 = W[0] @ V
            P2 = W[1].T @ U
            a2 = jnp.sum(P1**2, axis=0)
            b2 = jnp.sum(P2**2, axis=0)
            off = lambda M: M - jnp.diag(jnp.diagonal(M))
            misfit = jnp.max(jnp.stack([
                jnp.max(jnp.abs(W[0] - P1 @ V.T)) / scale,
                jnp.max(jnp.abs(W[1] - U @ P2.T)) / scale,
                jnp.max(jnp.abs(off(P1.T @ P1))) / scale**2,
                jnp.max(jnp.abs(off(P2.T @ P2))) / scale**2,
                jnp.max(jnp.abs(off(P1.T @ P2))) / scale**2,
                jnp.max(jnp.abs(jnp.abs(u0) - jnp.sqrt(a2 * b2))) / scale**2,
            ]))
            # Balance is exact in exact arithmetic; snap round-off-level imbalance to 0 so the
            # balanced (sigmoid) branch is used: the Riccati form loses precision as c̃ → 0.
            c = a2 - b2
            c = jnp.where(jnp.abs(c) <= 1e-10 * jnp.maximum(a2 + b2, scale**2 * 1e-300), 0.0, c)
        else:
            R = V
            strengths = []
            misfits = []
            for l, w in enumerate(W):
                P = w @ R
                misfits.append(jnp.max(jnp.abs(w - P @ R.T)) / scale)
                if l == depth - 1:
                    a = jnp.diagonal(U.T @ P)
                    misfits.append(jnp.max(jnp.abs(P - U * a[None, :])) / scale)
                else:
                    a = jnp.linalg.norm(P, axis=0)
                    R = P / jnp.where(a > 0, a, 1.0)[None, :]
                    misfits.append(jnp.max(jnp.abs(R.T @ R - jnp.eye(R.shape[1]))))
                strengths.append(a)
            strengths = jnp.stack(strengths)
            misfits.append(jnp.max(jnp.abs(strengths - strengths[-1:])) / scale)
            misfit = jnp.max(jnp.stack(misfits))
            c = jnp.zeros_like(s)
        checks.append((misfit,
                       "an aligned init W_l = R_{l+1} diag(a_l) R_lᵀ (R_1 = V_r, R_{D+1} = U_r, orthonormal "
                       "hidden R_l)" + (", balanced across layers" if depth > 2 else ""),
                       "the initial weights are not of that form",
                       "Use DeepLinear.aligned(...); random inits follow Saxe's curves only qualitatively."))
        for value, assumption, detail, fix in checks:
            if is_concrete(value):
                if float(value) > atol:
                    raise regime_error(name, assumption, f"{detail} (relative misfit {float(value):.2e} > {atol:g})", fix)
            else:
                u0 = eqx.error_if(u0, value > atol, f"{name} assumes {assumption}; {detail}. {fix}")
        return cls(
            s,
            u0,
            depth=depth,
            input_variances=lam,
            imbalance=c,
            output_trace=0.5 * jnp.trace(data.output_covariance()),
            time_scale=flow.time_scale,
        )

    def mode_strengths(self, ts: Times) -> Float[Array, "T r"]:
        """u_α(t) for every mode, shape (T, r)."""
        ts = jnp.asarray(ts, dtype=self.singular_values.dtype)[:, None] * self.time_scale
        s, lam = self.singular_values, self.input_variances
        if self.depth == 2:
            u_tilde = _two_layer_strength(
                s[None, :], (lam * self.initial_strengths)[None, :], (lam * self.imbalance)[None, :], ts
            )
        else:
            t_tilde = lam[None, :] ** (2.0 / self.depth - 1.0) * ts
            u_tilde = jax.vmap(
                lambda si, ui, ti: _deep_balanced_strength(si, ui, ti, self.depth),
                in_axes=(0, 0, 1),
                out_axes=1,
            )(s, lam * self.initial_strengths, t_tilde)
        return u_tilde / lam[None, :]

    def evaluate(self, ts: Times) -> Observables:
        u = self.mode_strengths(ts)
        s, lam = self.singular_values, self.input_variances
        loss = self.output_trace - u @ s + 0.5 * (u**2) @ lam
        return {"mode_strengths": u, "loss": loss}

    def half_time(self) -> Float[Array, " r"]:
        """t at which a balanced two-layer mode reaches s/(2λ): ln(s/(λu0) − 1)/(2 s κ)."""
        s, lam = self.singular_values, self.input_variances
        return jnp.log(s / (lam * self.initial_strengths) - 1.0) / (2.0 * s * self.time_scale)
