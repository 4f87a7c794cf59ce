"""Solver choices for `solve_flow`: explicit (Tsit5), a matrix-free implicit path, auto-switching.

Why an implicit path: near a minimum the gradient flow is stiff. An explicit Runge–Kutta step is
capped by stability at h ≈ c/λ_max(Hessian) (c ≈ 3.5 for Tsit5 on the negative real axis)
however slowly the solution moves, so the number of steps grows linearly with the horizon.
An L-stable implicit (ESDIRK) method has no such cap; its cost is in the stage equations
(I − γhJ)Δ = −F, J = ∂f/∂θ = −κ·r⊙H. Here they are solved matrix-free: diffrax's `VeryChord`
linearises the stage function with `lineax.JacobianLinearOperator` + `lineax.linearise`
(one `jax.linearize` of the vector field per step, i.e. Hessian-vector products by
forward-over-reverse), and GMRES only ever applies that linear map. No (P, P) array is built, so
memory stays at a few copies of θ (GMRES keeps `restart` Krylov vectors).
"""

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import lineax as lx
import optimistix as optx

from .._validate import message
from .controllers import AbstractWrappedController

_KVAERNO = {3: diffrax.Kvaerno3, 4: diffrax.Kvaerno4, 5: diffrax.Kvaerno5}

#: Real-axis stability boundary |hλ| of the explicit solver (Tsit5's is ≈ 3.5; measured on
#: gradient flows, the accepted step settles at h·λ_max ≈ 3.3–3.6 once stiffness-limited).
_STABILITY_BOUNDARY = {"Tsit5": 3.5, "Dopri5": 3.3, "Dopri8": 5.0, "Heun": 2.0, "Euler": 2.0}


class MatrixFreeImplicit(eqx.Module):
    """A matrix-free implicit solver for stiff (long-horizon) gradient flows.

    An ESDIRK method (diffrax's Kvaerno3/4/5, `order`) whose stage equations are solved by a
    simplified Newton iteration (diffrax `VeryChord`, tolerances from the step-size controller)
    with GMRES on Hessian-vector products: each Newton iteration costs a few HVPs, never a
    Jacobian, so it fits flows with 10⁵+ parameters in the memory of a few copies of θ.

    Use it when the flow is stiffness-limited: long horizons near a minimum, where Tsit5's
    steps pile up at h ≈ 3.5/λ_max(H) (the step count grows linearly with t1). For short
    horizons or fast transients the explicit default is cheaper per step; `solver="auto"`
    switches from explicit to this solver once the explicit step is stiffness-limited.

    - `order`: 3, 4 or 5 (Kvaerno3/4/5).
    - `krylov_rtol`: relative residual tolerance of each GMRES solve (an inexact-Newton forcing
      term: it sets how fast the Newton iteration converges, not the solution's accuracy, which
      the Newton tolerances (= the controller's rtol/atol) and the step-size control set).
    - `restart`, `max_krylov_steps`: GMRES restart length (memory: `restart` copies of θ) and
      iteration cap. A GMRES or Newton failure rejects the step and retries it 5× smaller.
    """

    order: int = eqx.field(static=True, default=4)
    krylov_rtol: float = eqx.field(static=True, default=1e-3)
    restart: int = eqx.field(static=True, default=10)
    max_krylov_steps: int = eqx.field(static=True, default=200)

    def __check_init__(self):
        if self.order not in _KVAERNO:
            raise ValueError(message("order", "be 3, 4 or 5 (Kvaerno3/4/5)", self.order))
        if not 0 < self.krylov_rtol < 1:
            raise ValueError(message("krylov_rtol", "lie in (0, 1)", self.krylov_rtol))
        if self.restart < 1 or self.max_krylov_steps < 1:
            raise ValueError(message("restart/max_krylov_steps", "be ≥ 1", (self.restart, self.max_krylov_steps)))

    def diffrax_solver(self, atol: Any = 1e-10) -> diffrax.AbstractSolver:
        """The diffrax solver: Kvaerno`order` + VeryChord(controller tolerances) + GMRES.

        `atol`: the step-size controller's atol; GMRES stops at a residual of
        `krylov_rtol`·(|b| + atol), i.e. a fraction of the Newton tolerance where b → 0 (a
        pure relative test fails there: lineax reads a tiny right-hand side as breakdown)."""
        gmres = lx.GMRES(
            rtol=self.krylov_rtol,
            atol=self.krylov_rtol * atol,
            norm=optx.rms_norm,
            max_steps=self.max_krylov_steps,
            restart=self.restart,
            stagnation_iters=self.restart,
        )
        root_finder = diffrax.with_stepsize_controller_tols(_KrylovChord)(linear_solver=gmres)
        return _KVAERNO[self.order](root_finder=root_finder)


class _KrylovChord(diffrax.VeryChord):
    """diffrax's VeryChord, safe for a Krylov linear solver.

    VeryChord applies `lax.stop_gradient` to the whole linear-solver state. A Krylov solver's
    state is the linearised operator itself, which holds a closure-converted jaxpr that
    `stop_gradient` rejects (a direct solver's LU factors are arrays only). Here only the
    state's arrays are stopped; the iteration is otherwise VeryChord's, line for line.
    """

    def step(self, fn, y, args, options, state, tags):
        del options, tags
        fx, aux = fn(y, args)
        jac, linear_state = state.linear_state
        dynamic, static = eqx.partition(linear_state, eqx.is_array)
        linear_state = eqx.combine(jax.lax.stop_gradient(dynamic), static)
        sol = lx.linear_solve(jac, fx, self.linear_solver, state=linear_state, throw=False)
        diff = sol.value
        new_y = jax.tree_util.tree_map(lambda a, b: a - b, y, diff)
        with jax.numpy_dtype_promotion("standard"):
            scale = jax.tree_util.tree_map(lambda a: self.atol + self.rtol * jnp.abs(a), new_y)
            diffsize = self.norm(jax.tree_util.tree_map(lambda a, b: a / b, diff, scale))
        new_state = eqx.tree_at(
            lambda s: (s.diff, s.diffsize, s.diffsize_prev, s.result, s.step),
            state,
            (diff, diffsize, state.diffsize, optx.RESULTS.promote(sol.result), state.step + 1),
        )
        return new_y, new_state, aux

    def terminate(self, fn, y, args, options, state, tags):
        # VeryChord's test, except for the `small` floor. VeryChord calls a Newton correction
        # "small" (converged whatever its rate) below 10^(2 − digits) ≈ 1e-13 tolerance units in
        # float64. At tight rtol the second correction is round-off, ~1e-16·|y|/(rtol·|y|) ≫ 1e-13
        # tolerance units, and the ratio of two round-off corrections is noise: it exceeds 2
        # about half the time, which VeryChord reads as divergence, rejecting the step (and
        # rejecting again at 1/5 the step, where it happens just the same). Here a correction
        # below κ² tolerance units (1e-4: far inside what the step-size control resolves) ends
        # the iteration as converged.
        del fn, y, args, options, tags
        at_least_two = state.step >= 2
        rate = state.diffsize / state.diffsize_prev
        factor = state.diffsize * rate / (1 - rate)
        small = state.diffsize < self.kappa**2
        diverged = ~jnp.isfinite(rate) | (rate > 2)
        converged = (factor > 0) & (factor < self.kappa)
        terminate = at_least_two & (small | diverged | converged)
        terminate_result = optx.RESULTS.where(
            at_least_two & ~small & (diverged | ~converged),
            optx.RESULTS.nonlinear_divergence,
            optx.RESULTS.successful,
        )
        linsolve_fail = state.result != optx.RESULTS.successful
        result = optx.RESULTS.where(linsolve_fail, state.result, terminate_result)
        return linsolve_fail | terminate, result


class AutoSwitch(eqx.Module):
    """Explicit while the flow is non-stiff, `implicit` once the explicit step is stiffness-limited.

    Two segments per member (so `vmap` keeps each member's own cost): the explicit solver runs
    while a power iteration on Hessian-vector products (one per step, carried across steps)
    tracks λ_max; once `patience` consecutive steps have h·λ_max ≥ `threshold` × the explicit
    solver's stability boundary, that member's explicit segment ends and the implicit solver
    continues from its state and time. `stats["switch_time"]` (∞ if it never switched),
    `stats["num_steps_explicit"]`, `stats["num_steps_implicit"]` record it. No switch back:
    once a gradient flow is stiffness-limited near a minimum it stays so.
    """

    explicit: diffrax.AbstractSolver = eqx.field(default_factory=diffrax.Tsit5)
    implicit: MatrixFreeImplicit = eqx.field(default_factory=MatrixFreeImplicit)
    threshold: float = eqx.field(static=True, default=0.7)
    patience: int = eqx.field(static=True, default=10)

    def __check_init__(self):
        if type(self.explicit).__name__ not in _STABILITY_BOUNDARY:
            raise ValueError(
                message("explicit", f"be one of diffrax.{', diffrax.'.join(_STABILITY_BOUNDARY)}", type(self.explicit).__name__)
            )
        if not isinstance(self.implicit, MatrixFreeImplicit):
            raise TypeError(message("implicit", "be a gflow.MatrixFreeImplicit", type(self.implicit).__name__))

    @property
    def stability_boundary(self) -> float:
        return _STABILITY_BOUNDARY[type(self.explicit).__name__]


SOLVER_NAMES = ("explicit", "implicit", "auto")


def resolve_solver(solver: Any, atol: Any = 1e-10) -> diffrax.AbstractSolver | AutoSwitch:
    """None/"explicit" → Tsit5; "implicit" → MatrixFreeImplicit(); "auto" → AutoSwitch();
    a MatrixFreeImplicit → its diffrax solver; a diffrax solver or AutoSwitch as given."""
    if solver is None or (isinstance(solver, str) and solver == "explicit"):
        return diffrax.Tsit5()
    if isinstance(solver, str):
        if solver == "implicit":
            return MatrixFreeImplicit().diffrax_solver(atol)
        if solver == "auto":
            return AutoSwitch()
        raise ValueError(message("solver", f"be one of {SOLVER_NAMES}, a gflow solver or a diffrax solver", repr(solver)))
    if isinstance(solver, MatrixFreeImplicit):
        return solver.diffrax_solver(atol)
    if isinstance(solver, (AutoSwitch, diffrax.AbstractSolver)):
        return solver
    raise TypeError(
        message("solver", f"be one of {SOLVER_NAMES}, gflow.MatrixFreeImplicit, gflow.AutoSwitch or a diffrax solver", type(solver).__name__)
    )


def is_implicit(solver: diffrax.AbstractSolver) -> bool:
    return isinstance(solver, diffrax.AbstractImplicitSolver)


class _MonitorState(eqx.Module):
    inner: Any
    vector: Any
    lam: jax.Array
    count: jax.Array


class StiffnessMonitor(AbstractWrappedController):
    """Wraps an adaptive controller; ends the solve once the explicit step is stiffness-limited.

    Each step does one power-iteration step u ← Ju/‖Ju‖ on the vector field's Jacobian J at the
    step's start (a Hessian-vector product), so λ̂ = ‖Ju‖ ≤ ρ(J) tracks λ_max from below (an
    underestimate can only delay a switch). A step is stiffness-limited when h·λ̂ ≥ `limit`;
    after `patience` of them in a row the controller returns `RESULTS.event_occurred`, which
    stops diffrax's loop at the end of that (accepted) step with an okay result.
    """

    inner: diffrax.AbstractAdaptiveStepSizeController
    vector_field: Callable
    limit: float
    patience: int = eqx.field(static=True)

    def init(self, terms, t0, t1, y0, dt0, args, func, error_order):
        tnext, inner = self.inner.init(terms, t0, t1, y0, dt0, args, func, error_order)
        leaves, treedef = jax.tree_util.tree_flatten(y0)
        keys = jr.split(jr.PRNGKey(0), len(leaves))
        vector = jax.tree_util.tree_unflatten(
            treedef, [jr.normal(k, jnp.shape(x), jnp.result_type(x)) for k, x in zip(keys, leaves)]
        )
        vector = _normalise(vector)
        dtype = jnp.result_type(t0)
        return tnext, _MonitorState(inner, vector, jnp.zeros((), dtype), jnp.zeros((), jnp.int32))

    def adapt_step_size(self, t0, t1, y0, y1_candidate, args, y_error, error_order, controller_state):
        state = controller_state
        keep, next_t0, next_t1, made_jump, inner, result = self.inner.adapt_step_size(
            t0, t1, y0, y1_candidate, args, y_error, error_order, state.inner
        )
        _, jv = jax.jvp(lambda y: self.vector_field(t0, y, args), (y0,), (state.vector,))
        lam = jnp.sqrt(_dot(jv, jv)).astype(state.lam.dtype)
        ok = jnp.isfinite(lam) & (lam > 0)
        vector = jax.tree_util.tree_map(lambda v, u: jnp.where(ok, v / jnp.where(ok, lam, 1), u), jv, state.vector)
        lam = jnp.where(ok, lam, state.lam)
        stiff_step = (t1 - t0) * lam >= self.limit
        count = jnp.where(stiff_step, state.count + 1, jnp.where(keep, 0, state.count))
        stop = keep & (count >= self.patience)
        result = diffrax.RESULTS.where(stop & diffrax.is_successful(result), diffrax.RESULTS.event_occurred, result)
        return keep, next_t0, next_t1, made_jump, _MonitorState(inner, vector, lam, count), result


def _dot(x, y):
    return sum(jnp.vdot(a, b).real for a, b in zip(jax.tree_util.tree_leaves(x), jax.tree_util.tree_leaves(y)))


def _normalise(x):
    n = jnp.sqrt(_dot(x, x))
    return jax.tree_util.tree_map(lambda a: a / n, x)


def enable_compilation_cache() -> str | None:
    """Turn on JAX's persistent compilation cache in a user cache dir (once per process).

    `$GFLOW_COMPILATION_CACHE_DIR` or `$XDG_CACHE_HOME/gflow/jax` (default `~/.cache/gflow/jax`);
    opt out with `GFLOW_NO_COMPILATION_CACHE=1`; a cache dir the user already set is kept.
    Returns the directory used, or None.
    """
    if os.environ.get("GFLOW_NO_COMPILATION_CACHE", "") not in ("", "0"):
        return None
    if jax.config.jax_compilation_cache_dir:
        return jax.config.jax_compilation_cache_dir
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = os.environ.get("GFLOW_COMPILATION_CACHE_DIR") or os.path.join(base, "gflow", "jax")
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", path)
    # Only programs that took a while to compile are worth a disk entry.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    return path
