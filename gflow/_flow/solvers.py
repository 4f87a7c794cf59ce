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
from pathlib import Path
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import optimistix as optx

from .._validate import message

_KVAERNO = {3: diffrax.Kvaerno3, 4: diffrax.Kvaerno4, 5: diffrax.Kvaerno5}

#: Real-axis stability boundary |hλ| of the explicit solver (Tsit5's is ≈ 3.5; measured on
#: gradient flows, the accepted step settles at h·λ_max ≈ 3.3–3.6 once stiffness-limited).
#: Only FSAL methods whose last two stages sit at t + h (Tsit5, Dopri5) give Hairer's free
#: stiffness estimate (see `AutoSwitch`).
_STABILITY_BOUNDARY = {"Tsit5": 3.5, "Dopri5": 3.3}


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
    """Explicit while the flow is non-stiff, implicit while the explicit step is stiffness-limited
    (the default solver of `solve_flow` and `sweep`).

    Stiffness is measured at no extra cost in the explicit phase: Hairer's estimate
    ρ = ‖f(y₁) − f(ŷ₆)‖/‖y₁ − ŷ₆‖ from the two last stages of Tsit5/Dopri5, both at t + h
    (Hairer & Wanner, *Solving ODEs II*, §IV.2; DOPRI5's stiffness detection). Once
    `patience` consecutive steps have h·ρ ≥ `threshold` × the explicit stability boundary
    (≈ 3.5 for Tsit5: the step is held at the stability limit, not by accuracy) while t1 is
    still ≥ `min_remaining` such steps away (else the implicit solver's compile and
    Newton–Krylov steps cannot pay off), the member continues with `implicit` from its state
    and time. In the implicit phase one power
    iteration on Hessian-vector products per step tracks λ_max(J); once `patience` consecutive
    accepted implicit steps h have h·λ̂ < `back_ratio` × the boundary (after `min_iterations`
    power iterations), the explicit solver would need at most `back_ratio`× as many steps, each
    far cheaper (6 vector fields against a Newton–Krylov solve), so the member switches back.
    Each switch back multiplies the patience of the next switch to implicit by `backoff`
    (hysteresis: no ping-pong on a flow that is only mildly stiff), and at most `max_segments`
    segments run (the last one never switches).

    Per member under `vmap` and in `sweep` (the slot runner keeps explicit and implicit
    members in separate slots). `FlowSolution.stats` records every segment:
    `segment_solvers` (0 explicit, 1 implicit, −1 unused; shape (max_segments,)),
    `segment_start_times`, `segment_steps`, `num_segments`, plus `num_steps_explicit`,
    `num_steps_implicit` and `switch_time` (the first switch to implicit; ∞ if none).
    """

    explicit: diffrax.AbstractSolver = eqx.field(default_factory=diffrax.Tsit5)
    implicit: MatrixFreeImplicit = eqx.field(default_factory=MatrixFreeImplicit)
    threshold: float = eqx.field(static=True, default=0.7)
    back_ratio: float = eqx.field(static=True, default=3.0)
    patience: int = eqx.field(static=True, default=10)
    backoff: int = eqx.field(static=True, default=4)
    min_iterations: int = eqx.field(static=True, default=10)
    min_remaining: int = eqx.field(static=True, default=200)
    max_segments: int = eqx.field(static=True, default=8)

    def __check_init__(self):
        if type(self.explicit).__name__ not in _STABILITY_BOUNDARY:
            raise ValueError(
                message("explicit", f"be one of diffrax.{', diffrax.'.join(_STABILITY_BOUNDARY)}",
                        type(self.explicit).__name__)
            )
        if not isinstance(self.implicit, MatrixFreeImplicit):
            raise TypeError(message("implicit", "be a gflow.MatrixFreeImplicit", type(self.implicit).__name__))
        if not 0 < self.threshold < 2:
            raise ValueError(message("threshold", "lie in (0, 2)", self.threshold))
        if not self.back_ratio > 0:
            raise ValueError(message("back_ratio", "be > 0", self.back_ratio))
        for name in ("patience", "backoff", "min_iterations", "min_remaining"):
            if getattr(self, name) < 1:
                raise ValueError(message(name, "be ≥ 1", getattr(self, name)))
        if self.max_segments < 1:
            raise ValueError(message("max_segments", "be ≥ 1", self.max_segments))

    @property
    def stability_boundary(self) -> float:
        """|hλ| at the explicit solver's real-axis stability limit (the step of a stiffness-limited
        explicit solve is this over λ_max)."""
        return _STABILITY_BOUNDARY[type(self.explicit).__name__]


SOLVER_NAMES = ("auto", "explicit", "implicit")

#: What `solve_flow(solver=None)` and `sweep(solver=None)` use.
DEFAULT_SOLVER = "auto"


def resolve_solver(solver: Any, atol: Any = 1e-10) -> diffrax.AbstractSolver | AutoSwitch:
    """None/"explicit" → Tsit5; "implicit" → MatrixFreeImplicit(); "auto" → AutoSwitch();
    a MatrixFreeImplicit → its diffrax solver; a diffrax solver or AutoSwitch as given.
    (None is Tsit5 here, for reduced theory ODEs; `solve_flow` maps None to DEFAULT_SOLVER.)"""
    if solver is None or (isinstance(solver, str) and solver == "explicit"):
        return diffrax.Tsit5()
    if isinstance(solver, str):
        if solver == "implicit":
            return MatrixFreeImplicit().diffrax_solver(atol)
        if solver == "auto":
            return AutoSwitch()
        raise ValueError(message("solver", f"be one of {SOLVER_NAMES}, a gflow solver or a diffrax solver",
                                 repr(solver)))
    if isinstance(solver, MatrixFreeImplicit):
        return solver.diffrax_solver(atol)
    if isinstance(solver, (AutoSwitch, diffrax.AbstractSolver)):
        return solver
    raise TypeError(
        message("solver", f"be one of {SOLVER_NAMES}, gflow.MatrixFreeImplicit, gflow.AutoSwitch or a diffrax solver",
                type(solver).__name__)
    )


def flow_solver(solver: Any, atol: Any = 1e-10) -> diffrax.AbstractSolver | AutoSwitch:
    """`resolve_solver` with None meaning gflow's default for gradient flows ("auto")."""
    return resolve_solver(DEFAULT_SOLVER if solver is None else solver, atol)


def is_implicit(solver: diffrax.AbstractSolver) -> bool:
    return isinstance(solver, diffrax.AbstractImplicitSolver)


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
    # Every program: a first solve_flow is ~50 small programs besides the solver loop, each under
    # 0.5 s to compile, which together cost most of the XLA time of a second process when only
    # the slow ones are kept (benchmarks/compile_time.py).
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return path
