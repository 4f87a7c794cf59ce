"""The two-layer tanh net of P1–P3 and every method that solves it (gflow and the peers).

Problem: f(x) = Σ_i a_i tanh(w_i·x) (gflow.TwoLayer, standard scaling, no bias), init
w ~ N(0, 1/d), a ~ N(0, 1/m) per member, one shared data set x ~ N(0, I_d) with teacher labels
(a width-`m_teacher` tanh teacher; `sign` labels for the logistic loss), member i sees the inputs
c_i·x (c = 1 except in P2). Flow: dθ/dt = −∇L(θ), L the mean loss. All arrays are drawn in
float64 with NumPy (the same numbers reach JAX and torch) and cast to the run dtype.

Methods (each returns a list of work–precision points {setting, compile_s, run_s, steps,
rhs_evaluations, error, flop_s, roofline_fraction, result}):
- `gflow`: `jax.jit(jax.vmap(gf.solve_flow))` over the members (Tsit5 + PID by default).
- `diffrax-naive`: hand-written `jax.vmap(diffrax.diffeqsolve)` on the raveled state
  (jax.flatten_util.ravel_pytree), the same solver, controller and tolerances.
- `torchdiffeq`: `torchdiffeq.odeint(method="dopri5")` on the members stacked into one state
  (one shared step size: the error norm runs over the whole batch).
- `jax-gd`: plain GD θ ← θ − η∇L in one compiled `lax.fori_loop` (a scan with a traced length, so
  the learning-rate search reuses one compile); `torch-gd`: the same loop in eager PyTorch.
  Their η is the largest of η0, η0/2, η0/4, … whose loss curve (on the reference members) is
  within `GD_TOLERANCE` = 1e-4 of the reference; GD's loss at step k is at t = kη and is
  interpolated linearly onto the score grid.
"""

import dataclasses
import math
import time

import diffrax
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
from common import (
    GD_TOLERANCE,
    add_flops,
    curve_error,
    interp_curve,
    log,
    method,
    reference_kwargs,
    skipped,
    timed,
    timed_python,
    two_layer_rhs_flops,
)

import gflow as gf


@dataclasses.dataclass
class Net:
    """Sizes and data of one two-layer benchmark problem (float64 NumPy arrays)."""

    loss: str  # "logistic" | "squared"
    d: int
    m: int
    n: int
    members: int
    t1: float
    seed: int = 0
    m_teacher: int = 4
    scales: np.ndarray | None = None  # c_i per member (None: all 1)
    reference_members: int = 4

    def __post_init__(self):
        rng = np.random.default_rng(self.seed)
        self.x = rng.standard_normal((self.n, self.d))
        wt = rng.standard_normal((self.m_teacher, self.d)) / math.sqrt(self.d)
        at = rng.standard_normal((1, self.m_teacher)) / math.sqrt(self.m_teacher)
        f = np.tanh(self.x @ wt.T) @ at.T
        self.y = np.where(f >= 0, 1.0, -1.0) if self.loss == "logistic" else f
        self.w0 = rng.standard_normal((self.members, self.m, self.d)) / math.sqrt(self.d)
        self.a0 = rng.standard_normal((self.members, 1, self.m)) / math.sqrt(self.m)
        self.c = np.ones(self.members) if self.scales is None else np.asarray(self.scales, dtype=np.float64)
        self.reference_members = min(self.reference_members, self.members)

    @property
    def num_params(self) -> int:
        return self.m * self.d + self.m

    @property
    def flops_per_rhs(self) -> float:
        return two_layer_rhs_flops(self.n, self.d, self.m)

    def arrays(self, dtype, members=None):
        """(w0, a0, c, x, y) as JAX arrays of `dtype` for the first `members` members."""
        k = self.members if members is None else members
        cast = lambda a: jnp.asarray(a, dtype=dtype)
        return cast(self.w0[:k]), cast(self.a0[:k]), cast(self.c[:k]), cast(self.x), cast(self.y)

    def gf_loss(self):
        return gf.logistic if self.loss == "logistic" else gf.squared_error


# --------------------------------------------------------------------------------------------
# JAX: the net by hand (peers) and through gflow


def net_loss(kind, w, a, c, x, y):
    """Mean loss of one member, by hand (the peers' forward pass)."""
    f = jnp.tanh((c * x) @ w.T) @ a.T
    if kind == "logistic":
        return jnp.mean(jax.nn.softplus(-y * f))
    return jnp.mean(0.5 * (f - y) ** 2)


def member_flow(net: Net, w, a, c, x, y) -> gf.GradientFlow:
    return gf.GradientFlow(gf.TwoLayer(net.d, net.m, "tanh", w=w, a=a), net.gf_loss(), gf.Dataset(c * x, y))


def run_sweep(net, dtype, t1, ts, ref, *, rtol, atol, max_steps, slots=None):
    """gflow's own sweep (`gf.sweep`: the lockstep-free slot runner) over the net's members.

    `gf.sweep` compiles inside the call, so it is called twice: the first call's wall time
    holds the compile, the second (same process: the compiled runner is reused) is `run_s`.
    Work is counted, not timed: `member_steps_runner` = steps the batched loop ran (each call
    costs its slowest slot's steps in every slot) against `member_steps_ideal` = Σ own steps."""
    import time

    w0, a0, c, x, y = net.arrays(dtype)

    def make_flow(key, hyper):
        i = hyper["index"].astype(jnp.int32)
        return member_flow(net, w0[i], a0[i], c[i], x, y)

    kw = dict(grid={"index": np.arange(net.members, dtype=float)}, ts=jnp.asarray(ts), rtol=rtol, atol=atol,
              max_steps=max_steps, slots=slots, progress=False, on_failure="ignore")
    start = time.perf_counter()
    gf.sweep(make_flow, 1, t1, **kw)
    first = time.perf_counter() - start
    stats = {}
    start = time.perf_counter()
    ds = gf.sweep(make_flow, 1, t1, runner_stats=stats, **kw)
    run_s = time.perf_counter() - start
    loss = np.asarray(ds["loss"].values)[:, 0, :]
    steps = np.asarray(ds["num_steps"].values).ravel()
    S = ref["members"]
    return [{"setting": {"rtol": rtol, "atol": atol, "slots": slots or "default"}, "run_s": run_s,
             "compile_s": max(first - run_s, 0.0), "compile_note": "first call minus second (sweep compiles inside)",
             "steps": int(steps.max()), "steps_per_member": steps.tolist(),
             "member_steps_runner": int(stats["slot_steps"]), "member_steps_lockstep": int(steps.max()) * len(steps),
             "member_steps_ideal": int(steps.sum()), "runner_calls": int(stats["calls"]),
             "result": sorted(set(np.asarray(ds["result"].values).ravel().tolist())),
             "error": score(loss[:S], ref)}]


def gflow_solver_fn(net: Net, *, solver, rtol, atol, max_steps):
    """(w0, a0, c, x, y, t1, ts) -> (loss (B, T), steps (B,), rhs (B,), result (B,))."""

    def solve(w0, a0, c, x, y, t1, ts):
        def one(w, a, ci):
            sol = gf.solve_flow(member_flow(net, w, a, ci, x, y), t1, ts=ts, observables=("loss",),
                                solver=solver, rtol=rtol, atol=atol, max_steps=max_steps, throw=False)
            return (sol.observables["loss"], sol.stats["num_steps"], sol.stats["rhs_evaluations"],
                    sol.result._value)

        return jax.vmap(one)(w0, a0, c)

    return solve


def naive_solver_fn(net: Net, *, solver, rtol, atol, max_steps):
    """The hand-written peer: ravel (w, a), call diffeqsolve, vmap over members."""

    def solve(w0, a0, c, x, y, t1, ts):
        def one(w, a, ci):
            flat0, unravel = jax.flatten_util.ravel_pytree((w, a))
            loss = lambda flat: net_loss(net.loss, *unravel(flat), ci, x, y)
            term = diffrax.ODETerm(lambda t, z, args: -jax.grad(loss)(z))
            sol = diffrax.diffeqsolve(
                term, solver, 0.0, t1, None, flat0,
                saveat=diffrax.SaveAt(ts=ts, fn=lambda t, z, args: loss(z)),
                stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
                max_steps=max_steps, throw=False)
            return sol.ys, sol.stats["num_steps"], sol.result._value

        return jax.vmap(one)(w0, a0, c)

    return solve


def gd_fn(net: Net):
    """(w0, a0, c, x, y, lr, ts) -> (loss on ts (B, T), steps): GD in one fori_loop, the loss at
    step k (time kη) accumulated into the linear interpolation onto `ts` as it goes."""

    def run(w0, a0, c, x, y, lr, ts):
        fl = jnp.floor(ts / lr)
        fr = ts / lr - fl
        steps = jnp.max(fl).astype(jnp.int32) + 1

        def one(w, a, ci):
            vg = jax.value_and_grad(lambda p: net_loss(net.loss, p[0], p[1], ci, x, y))

            def body(k, carry):
                p, out = carry
                value, g = vg(p)
                kf = k.astype(ts.dtype)
                out = out + jnp.where(fl == kf, (1 - fr) * value, 0) + jnp.where(fl + 1 == kf, fr * value, 0)
                return (p[0] - lr * g[0], p[1] - lr * g[1]), out

            _, out = jax.lax.fori_loop(0, steps + 1, body, ((w, a), jnp.zeros_like(ts)))
            return out

        return jax.vmap(one)(w0, a0, c), steps

    return run


# --------------------------------------------------------------------------------------------
# reference


_REFERENCES = {}


def reference(net: Net, t1: float, ts: np.ndarray, *, max_steps: int, key=None) -> dict:
    """Dopri8 (rtol 1e-12, atol 1e-14, float64) through gflow on the first reference members;
    cached per problem so a second dtype reuses it."""
    key = key or (id(net), float(t1))
    if key in _REFERENCES:
        return _REFERENCES[key]
    log(f"reference (Dopri8, rtol 1e-12) on {net.reference_members} members, t1={t1:g}")
    S = net.reference_members
    kw = reference_kwargs(max_steps)
    kw.pop("throw")
    fn = gflow_solver_fn(net, **kw)
    args = (*net.arrays(jnp.float64, S), jnp.asarray(t1, dtype=jnp.float64), jnp.asarray(ts))
    timing, (loss, steps, rhs, result) = timed(fn, *args, repeats=1, warmup=False,
                                               cache_key=("reference", id(net), max_steps))
    ref = {"members": S, "solver": "Dopri8", "rtol": kw["rtol"], "atol": kw["atol"], "max_steps": max_steps,
           "run_s": timing["run_s"], "compile_s": timing["compile_s"], "steps": np.asarray(steps).tolist(),
           "result": np.asarray(result).tolist(), "loss": np.asarray(loss),
           "ok": bool(np.all(np.asarray(result) == 0))}
    _REFERENCES[key] = ref
    return ref


def score(loss_subset, ref) -> float | None:
    if not ref["ok"]:
        # score only where the reference itself reached t1
        good = np.asarray(ref["result"]) == 0
        if not good.any():
            return None
        return curve_error(np.asarray(loss_subset)[good], ref["loss"][good])
    return curve_error(loss_subset, ref["loss"])


# --------------------------------------------------------------------------------------------
# the methods


def run_ode_jax(net, kind, dtype, t1, ts, ref, roof, *, tolerances, solver, max_steps, repeats, setting=None):
    """gflow or diffrax-naive at each (rtol, atol): one point per tolerance (one compile per
    tolerance, reused across horizons t1: t1 and ts are traced)."""
    points = []
    S = ref["members"]
    for rtol, atol in tolerances:
        log(f"{kind} rtol={rtol:g} t1={t1:g}")
        make = gflow_solver_fn if kind == "gflow" else naive_solver_fn
        fn = make(net, solver=solver, rtol=rtol, atol=atol, max_steps=max_steps)
        args = (*net.arrays(dtype), jnp.asarray(t1, dtype=jnp.float64), jnp.asarray(ts))
        timing, out = timed(fn, *args, repeats=repeats,
                            cache_key=(kind, id(net), rtol, atol, type(solver).__name__, max_steps, str(dtype)))
        loss, steps = np.asarray(out[0]), np.asarray(out[1])
        result = np.asarray(out[-1])
        rhs_per_step = float(np.asarray(out[2])[0] - 1) / max(int(steps[0]), 1) if kind == "gflow" else None
        if rhs_per_step is not None and not np.isfinite(rhs_per_step):
            rhs_per_step = None  # implicit solvers: Newton/Krylov work varies per step (not counted)
        point = {"setting": {"rtol": rtol, "atol": atol, **(setting or {})}, **timing,
                 "steps": int(steps.max()), "steps_per_member": steps.tolist(),
                 "member_steps_lockstep": int(steps.max()) * len(steps), "member_steps_ideal": int(steps.sum()),
                 "result": sorted(set(result.tolist())), "result_counts": _counts(result),
                 "error": score(loss[:S], ref)}
        stages = rhs_per_step if rhs_per_step else _stages(solver)
        point["rhs_evaluations"] = (int(steps.max()) * stages + 1) if stages else None
        if stages:
            add_flops(point, net.flops_per_rhs, len(steps) * point["rhs_evaluations"], roof)
        points.append(point)
    return points


def _counts(result) -> dict:
    vals, counts = np.unique(np.asarray(result), return_counts=True)
    return {str(int(v)): int(c) for v, c in zip(vals, counts)}


def _stages(solver):
    tableau = getattr(solver, "tableau", None)
    if tableau is None or not hasattr(tableau, "c"):
        return None
    stages = len(tableau.c) + 1
    return stages - 1 if getattr(tableau, "fsal", False) else stages


def search_lr(net, dtype, t1, ts, ref, *, lr0, max_halvings=14, max_steps=None):
    """Largest η = lr0 / 2^j whose jax-gd curve is within GD_TOLERANCE of the reference (on the
    reference members). Returns (η or None, trail [(η, error)], why-not)."""
    S = ref["members"]
    fn = jax.jit(gd_fn(net))
    args = net.arrays(dtype, S)
    trail = []
    lr = lr0
    log(f"jax-gd learning-rate search from {lr0:g}")
    for _ in range(max_halvings + 1):
        steps = int(math.floor(t1 / lr)) + 1
        if max_steps is not None and steps > max_steps:
            why = f"η = {lr:.3g} needs {steps} steps > cap {max_steps} before reaching error {GD_TOLERANCE:g}"
            return None, trail, why
        loss, _ = fn(*args, jnp.asarray(lr, dtype=dtype), jnp.asarray(ts, dtype=dtype))
        err = score(np.asarray(loss), ref)
        trail.append({"lr": lr, "error": err, "steps": steps})
        if err is not None and err <= GD_TOLERANCE:
            return lr, trail, None
        lr /= 2
    return None, trail, f"no η ≥ {lr0 / 2**max_halvings:.3g} reached error {GD_TOLERANCE:g}"


def run_jax_gd(net, dtype, t1, ts, ref, roof, lrs, repeats):
    S = ref["members"]
    fn = gd_fn(net)
    points = []
    compiled = None
    for lr in lrs:
        args = (*net.arrays(dtype), jnp.asarray(lr, dtype=dtype), jnp.asarray(ts, dtype=dtype))
        # one compile for every η (η and the trip count are traced)
        timing, (loss, steps) = timed(fn, *args, repeats=repeats, compiled=compiled)
        compiled = timed.last
        point = {"setting": {"lr": lr}, **timing, "steps": int(steps), "rhs_evaluations": int(steps) + 1,
                 "error": score(np.asarray(loss)[:S], ref)}
        add_flops(point, net.flops_per_rhs, net.members * (int(steps) + 1), roof)
        points.append(point)
    return points


# --------------------------------------------------------------------------------------------
# torch


def torch_or_reason():
    try:
        import torch
    except ImportError:
        return None, "torch not installed (`make bench` installs the bench extra)"
    return torch, None


#: torch intra-op threads (None: torch's default). On a busy 2-core CPU, 2 threads for tiny
#: matmuls oversubscribe (10x slower per step than 1 thread), so CPU sizes use 1 (recorded).
TORCH_THREADS = None


def _torch_setup(net, dtype, members=None):
    import torch

    if TORCH_THREADS:
        torch.set_num_threads(TORCH_THREADS)

    tdtype = torch.float64 if dtype == jnp.float64 else torch.float32
    dev = torch.device("cuda" if torch.cuda.is_available() and jax.default_backend() == "gpu" else "cpu")
    k = net.members if members is None else members
    t = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=tdtype, device=dev)
    return torch, dev, tdtype, t(net.w0[:k]), t(net.a0[:k]), t(net.c[:k]), t(net.x), t(net.y)


def _torch_sync(torch, dev):
    return (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else None


def torch_losses(torch, kind, W, A, C, x, y):
    """Per-member mean loss (B,) for stacked W (B, m, d), A (B, 1, m), C (B,)."""
    z = torch.einsum("nd,bmd->bnm", x, W) * C[:, None, None]
    f = torch.tanh(z) @ A.transpose(1, 2)  # (B, n, 1)
    yy = y[None]
    if kind == "logistic":
        return torch.nn.functional.softplus(-yy * f).mean(dim=(1, 2))
    return (0.5 * (f - yy) ** 2).mean(dim=(1, 2))


def run_torchdiffeq(net, dtype, t1, ts, ref, roof, *, tolerances, max_steps, repeats):
    torch, why = torch_or_reason()
    if torch is None:
        return skipped(why)
    try:
        import torchdiffeq
    except ImportError:
        return skipped("torchdiffeq not installed (`make bench` installs the bench extra)")
    torch, dev, tdtype, W, A, C, x, y = _torch_setup(net, dtype)
    B, m, d = W.shape
    y0 = torch.cat([W.reshape(B, -1), A.reshape(B, -1)], dim=1)
    counter = {"nfe": 0}

    def unpack(z):
        return z[:, : m * d].reshape(B, m, d), z[:, m * d:].reshape(B, 1, m)

    def func(t, z):
        counter["nfe"] += 1
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            total = torch_losses(torch, net.loss, *unpack(z), C, x, y).sum()
            (g,) = torch.autograd.grad(total, z)
        return -g

    tt = torch.as_tensor(ts, dtype=tdtype, device=dev)
    S = ref["members"]
    points = []
    for rtol, atol in tolerances:
        log(f"torchdiffeq rtol={rtol:g} t1={t1:g}")

        def solve():
            counter["nfe"] = 0
            with torch.no_grad():
                zs = torchdiffeq.odeint(func, y0, tt, rtol=rtol, atol=atol, method="dopri5",
                                        options={"max_num_steps": max_steps})
                return torch.stack([torch_losses(torch, net.loss, *unpack(z), C, x, y) for z in zs], dim=1)

        t_start = time.perf_counter()
        try:
            timing, loss = timed_python(solve, repeats=repeats, sync=_torch_sync(torch, dev), warmup=False)
        except AssertionError as e:  # torchdiffeq's max_num_steps
            points.append({"setting": {"rtol": rtol, "atol": atol}, "error": None, "run_s": None,
                           "run_s_until_failure": time.perf_counter() - t_start,
                           "rhs_evaluations": counter["nfe"], "steps": max(0, (counter["nfe"] - 2) // 6),
                           "result": f"failed: {e}"})
            continue
        nfe = counter["nfe"]
        point = {"setting": {"rtol": rtol, "atol": atol}, **timing, "rhs_evaluations": nfe,
                 "steps": max(0, (nfe - 2) // 6), "steps_note": "dopri5 steps ≈ (nfe − 2)/6 (FSAL; rejected included)",
                 "error": score(loss.cpu().numpy()[:S], ref), "result": 0}
        add_flops(point, net.flops_per_rhs, B * nfe, roof)
        points.append(point)
    return method(points, threads=torch.get_num_threads(), torch_device=str(dev),
                  note="one batched state: a single step size for all members")


def run_torch_gd(net, dtype, t1, ts, ref, roof, lrs, repeats, max_steps=None, warmup=None):
    torch, why = torch_or_reason()
    if torch is None:
        return skipped(why)
    torch, dev, tdtype, W0, A0, C, x, y = _torch_setup(net, dtype)
    S = ref["members"]
    points = []
    for lr in lrs:
        log(f"torch-gd lr={lr:.3g}")
        steps = int(math.floor(float(np.max(ts)) / lr)) + 1
        if max_steps is not None and steps > max_steps:
            points.append({"setting": {"lr": lr}, "run_s": None, "error": None, "steps": steps,
                           "result": f"not run: {steps} steps > cap {max_steps}"})
            continue

        def loop():
            W = W0.clone().requires_grad_(True)
            A = A0.clone().requires_grad_(True)
            history = []
            for _ in range(steps + 1):
                values = torch_losses(torch, net.loss, W, A, C, x, y)
                gW, gA = torch.autograd.grad(values.sum(), (W, A))
                history.append(values.detach())
                with torch.no_grad():
                    W -= lr * gW
                    A -= lr * gA
            return torch.stack(history, dim=1)

        timing, hist = timed_python(loop, repeats=repeats, sync=_torch_sync(torch, dev), warmup=warmup)
        timing["warmup"] = warmup
        hist = hist.cpu().numpy()
        curve = interp_curve(lr * np.arange(hist.shape[1]), hist, ts)
        point = {"setting": {"lr": lr}, **timing, "steps": steps, "rhs_evaluations": steps + 1,
                 "error": score(curve[:S], ref)}
        add_flops(point, net.flops_per_rhs, net.members * (steps + 1), roof)
        points.append(point)
    return method(points, threads=torch.get_num_threads(), torch_device=str(dev))


def gd_methods(record, net, dtype, t1, ts, ref, roof, *, lr0, repeats, no_peers, max_steps=None, spread=True):
    """jax-gd and torch-gd: search η on the reference members, then time η (and 2η, 4η if
    `spread`, for the work–precision plot) on all members."""
    lr, trail, why = search_lr(net, dtype, t1, ts, ref, lr0=lr0, max_steps=max_steps)
    if lr is None:
        record["methods"]["jax-gd"] = skipped(why) | {"lr_search": trail}
        if not no_peers:
            record["methods"]["torch-gd"] = skipped(f"no learning rate found by the jax-gd search: {why}")
        return
    lrs = [4 * lr, 2 * lr, lr] if spread else [lr]
    record["methods"]["jax-gd"] = method(run_jax_gd(net, dtype, t1, ts, ref, roof, lrs, repeats),
                                         lr=lr, lr_search=trail)
    if no_peers:
        return
    # torch's eager loop has no compile to amortise and costs ms per step on a CPU: at CPU sizes
    # it runs once (no warm-up), at the searched η only; full size as the JAX methods
    cpu = jax.default_backend() == "cpu" and net.members <= 64
    torch_lrs, torch_repeats = ([lr], 1) if cpu else (lrs, repeats)
    entry = run_torch_gd(net, dtype, t1, ts, ref, roof, torch_lrs, torch_repeats, max_steps=max_steps,
                         warmup=not cpu)
    # torch's own check of η: halve (at most 3 times) if its curve is not within the tolerance
    extra = 0
    while entry["status"] == "ok" and extra < 3:
        last = entry["points"][-1]
        if last.get("error") is not None and last["error"] <= GD_TOLERANCE:
            break
        extra += 1
        more = run_torch_gd(net, dtype, t1, ts, ref, roof, [lr / 2**extra], torch_repeats, max_steps=max_steps,
                            warmup=not cpu)
        entry["points"] += more.get("points", [])
    if entry["status"] == "ok":
        entry["lr"] = entry["points"][-1]["setting"]["lr"]
    record["methods"]["torch-gd"] = entry

