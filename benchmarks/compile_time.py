"""Compile time of the first `solve_flow` against a bare `diffrax.diffeqsolve` (issue 11), the
persistent compilation cache across processes, and the energy audit's run-time cost.

Each variant runs in a fresh process (nothing compiled before it, persistent cache off unless
stated) and sums JAX's own compile-time events over its first call: tracing to a jaxpr
(`/jax/core/compile/jaxpr_trace_duration`), lowering to MLIR (`…/jaxpr_to_mlir_module_duration`)
and the XLA compile (`…/backend_compile_duration`), plus the first call's wall and CPU time.
The problem is the issue's small net: a squared-error two-layer tanh net, d = 16, width 32,
n = 128 (544 parameters), t1 = 100, rtol/atol 1e-8/1e-10 in float64, the default 121-point
save grid, observable `loss`.

Variants (the same solver, controller and save times unless named):
- `bare`: `diffeqsolve(ODETerm(flow.vector_field), Tsit5(), …, SaveAt(ts=ts, fn=loss),
  PIDController(rtol, atol))`, throw=True (what a user would write);
- `bare_subsaveats`: + the two `SubSaveAt`s of `solve_flow` (observables on ts, state at t1);
- `bare_guard`: + the `DivergenceGuard` controller wrapper;
- `bare_audit`: + the audited state (θ, E) with the θ-only error norm;
- `explicit`: `solve_flow(flow, t1, solver="explicit")` (all of the above + throw plumbing,
  the initial-loss check and the energy residual);
- `auto`: `solve_flow(flow, t1)` (the default solver; a non-switching solve compiles the
  explicit segment only);
- `auto_jit`: `jax.jit` of `solve_flow(flow, t1)` (traced: both solvers' segments compile);
- `explicit_vmap`, `auto_vmap`: a phase map, `jit(vmap(solve_flow))` over 4 initialisations of
  the net, `solver="explicit"` / the default (traced "auto" compiles the implicit solver too);
- `auto_cached_1`, `auto_cached_2`: `auto` in two processes sharing one persistent cache dir;
- `auto_nocb_cached_1`, `auto_nocb_cached_2`: the same with `EQX_ON_ERROR=nan`, a counterfactual:
  diffrax's runtime checks of `saveat.ts` and `dt0` (`eqx.error_if`) then compile without host
  callbacks, and JAX's persistent cache stores every program (it refuses programs with host
  callbacks), so this pair measures what the cache can save at best: the floor is tracing and
  lowering, which every process pays (the cache key is the lowered module).
Each record also counts the persistent-cache hits and misses of the first call.

Audit overhead (`--audit`): `gf.sweep` of the P1-style net (two-layer, 64 members, slot runner,
Tsit5, t1 = 30) with the audit on and off (`gflow._flow.solve.AUDIT`, internal), both compiled
first, then `--repeats` interleaved warm runs each, process CPU time (median and min).

Usage: `python benchmarks/compile_time.py [--audit] [--repeats 5] [--out FILE]`.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
EVENTS = {
    "/jax/core/compile/jaxpr_trace_duration": "trace_s",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower_s",
    "/jax/core/compile/backend_compile_duration": "xla_compile_s",
}
CACHE_EVENTS = {"/jax/compilation_cache/cache_hits": "cache_hits",
                "/jax/compilation_cache/cache_misses": "cache_misses"}
VARIANTS = ("bare", "bare_subsaveats", "bare_guard", "bare_audit", "explicit", "auto", "auto_jit",
            "explicit_vmap", "auto_vmap")


def _problem():
    import jax.numpy as jnp
    import jax.random as jr

    import gflow as gf

    kx, ky, km = jr.split(jr.PRNGKey(0), 3)
    d, width, n = 16, 32, 128
    x = jr.normal(kx, (n, d))
    y = jnp.tanh(x @ jr.normal(ky, (d,)) / jnp.sqrt(d))[:, None]
    return gf.GradientFlow(gf.TwoLayer(d, width, "tanh", key=km), gf.squared_error, gf.Dataset(x, y))


def _theta_norm(y):
    import optimistix as optx

    return optx.rms_norm(y[0])


def _child(variant: str) -> dict:
    """Run one variant in this (fresh) process; returns its compile-time record."""
    import jax

    jax.config.update("jax_enable_x64", True)
    totals = dict.fromkeys(EVENTS.values(), 0.0)
    counts = {"xla_compiles": 0, "cache_hits": 0, "cache_misses": 0}

    def listen(event, duration, **kwargs):
        if event in EVENTS:
            totals[EVENTS[event]] += duration
            if EVENTS[event] == "xla_compile_s":
                counts["xla_compiles"] += 1

    def count(event, **kwargs):
        if event in CACHE_EVENTS:
            counts[CACHE_EVENTS[event]] += 1

    jax.monitoring.register_event_duration_secs_listener(listen)
    jax.monitoring.register_event_listener(count)
    import diffrax
    import equinox as eqx
    import jax.numpy as jnp

    import gflow as gf
    from gflow._flow.divergence import DivergenceGuard
    from gflow._flow.solve import _AuditedField, audited_state, default_times

    flow = _problem()
    t1, rtol, atol = 100.0, 1e-8, 1e-10
    ts = default_times(0.0, t1, 121, dtype=jnp.float64)
    loss = lambda t, y, f: f.loss_value(y)  # noqa: E731
    loss_audited = lambda t, y, f: f.loss_value(y[0])  # noqa: E731
    pid = diffrax.PIDController(rtol=rtol, atol=atol)
    pid_theta = diffrax.PIDController(rtol=rtol, atol=atol, norm=_theta_norm)

    # One jit wrapper, so that the warm calls reuse the first call's compile.
    auto_jit = eqx.filter_jit(lambda f: gf.solve_flow(f, t1, ts=ts, rtol=rtol, atol=atol))
    keys = jax.random.split(jax.random.PRNGKey(3), 4)

    @eqx.filter_jit
    def phase_map(keys, solver):  # 4 initialisations of the net under vmap (jit ∘ vmap)
        def one(key):
            member = gf.GradientFlow(gf.TwoLayer(16, 32, "tanh", key=key), flow.loss, flow.data)
            return gf.solve_flow(member, t1, ts=ts, solver=solver, rtol=rtol, atol=atol).observables["loss"]
        return jax.vmap(one)(keys)

    def bare(flow, subs=False, guard=False, audit=False):
        field = _AuditedField() if audit else diffrax.ODETerm(flow.vector_field).vector_field
        y0 = audited_state(flow.params0) if audit else flow.params0
        save = loss_audited if audit else loss
        saveat = (diffrax.SaveAt(subs=[diffrax.SubSaveAt(ts=ts, fn=save), diffrax.SubSaveAt(t1=True)]) if subs
                  else diffrax.SaveAt(ts=ts, fn=save))
        controller = pid_theta if audit else pid
        if guard:
            controller = DivergenceGuard(controller)
        return diffrax.diffeqsolve(diffrax.ODETerm(field), diffrax.Tsit5(), 0.0, t1, None, y0, flow,
                                   saveat=saveat, stepsize_controller=controller)

    calls = {
        "bare": lambda: bare(flow),
        "bare_subsaveats": lambda: bare(flow, subs=True),
        "bare_guard": lambda: bare(flow, subs=True, guard=True),
        "bare_audit": lambda: bare(flow, subs=True, guard=True, audit=True),
        "explicit": lambda: gf.solve_flow(flow, t1, ts=ts, solver="explicit", rtol=rtol, atol=atol),
        "auto": lambda: gf.solve_flow(flow, t1, ts=ts, rtol=rtol, atol=atol),
        "auto_jit": lambda: auto_jit(flow),
        "explicit_vmap": lambda: phase_map(keys, "explicit"),
        "auto_vmap": lambda: phase_map(keys, "auto"),
    }
    name = variant.removesuffix("_1").removesuffix("_2").replace("auto_nocb", "auto").replace("auto_cached", "auto")
    jax.block_until_ready((flow, ts))
    for k in totals:  # only the first call's compiles (not the problem's construction)
        totals[k] = 0.0
    counts.update(xla_compiles=0, cache_hits=0, cache_misses=0)
    wall, cpu = time.perf_counter(), time.process_time()
    out = calls[name]()
    jax.block_until_ready(out)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    first = dict(totals)  # the warm calls below must not compile (they would be counted here)
    first_count, first_hits, first_misses = counts["xla_compiles"], counts["cache_hits"], counts["cache_misses"]
    warm = []
    for _ in range(3):
        t = time.perf_counter()
        jax.block_until_ready(calls[name]())
        warm.append(time.perf_counter() - t)
    stats = getattr(out, "stats", None)
    steps = int(stats["num_steps"]) if stats is not None else None
    recompiled = any(totals[k] > first[k] for k in totals)
    return {"variant": variant, **{k: round(v, 3) for k, v in first.items()}, "xla_compiles": first_count,
            "cache_hits": first_hits, "cache_misses": first_misses,
            "warm_recompiled": recompiled,
            "first_call_wall_s": round(wall, 3), "first_call_cpu_s": round(cpu, 3),
            "warm_call_s": round(min(warm), 4), "num_steps": steps}


def _spawn(variant: str, cache_dir: str | None = None, env_extra: dict | None = None) -> dict:
    env = dict(os.environ, **(env_extra or {}))
    if cache_dir is None:
        env["GFLOW_NO_COMPILATION_CACHE"] = "1"
    else:
        env.pop("GFLOW_NO_COMPILATION_CACHE", None)
        env["GFLOW_COMPILATION_CACHE_DIR"] = cache_dir
    out = subprocess.run([sys.executable, __file__, "--child", variant], env=env, capture_output=True, text=True,
                         check=True)
    record = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps(record), flush=True)
    return record


def _audit_child(repeats: int) -> dict:
    import jax

    jax.config.update("jax_enable_x64", True)
    import diffrax
    import jax.numpy as jnp
    import jax.random as jr

    import gflow as gf
    import gflow._flow.solve as solve_mod
    from gflow._sweep import sweep

    d, width, n = 16, 32, 128
    kx, ky = jr.split(jr.PRNGKey(1))
    x = jr.normal(kx, (n, d))
    y = jnp.tanh(x @ jr.normal(ky, (d,)) / jnp.sqrt(d))[:, None]
    data = gf.Dataset(x, y)

    flows, kw = {}, dict(solver=diffrax.Tsit5(), rtol=1e-8, atol=1e-10, progress=False, slots=16)
    for audit in (True, False):  # trace and compile both (AUDIT is read at trace time)
        solve_mod.AUDIT = audit

        def make_flow(key, hyper):  # a new function per setting: sweep's trace cache must miss
            return gf.GradientFlow(gf.TwoLayer(d, width, "tanh", key=key), gf.squared_error, data)

        flows[audit] = make_flow
        sweep(make_flow, 64, 30.0, **kw)
    # Interleaved runs, CPU time of this process (less sensitive than wall time to other load).
    times, steps = {True: [], False: []}, {}
    for _ in range(repeats):
        for audit in (True, False):
            t = time.process_time()
            ds = sweep(flows[audit], 64, 30.0, **kw)
            times[audit].append(time.process_time() - t)
            steps[audit] = int(ds["num_steps"].values.sum())
    record = {("audit_on" if a else "audit_off"): {"median_cpu_s": round(statistics.median(times[a]), 4),
                                                  "min_cpu_s": round(min(times[a]), 4),
                                                  "runs_cpu_s": [round(t, 4) for t in times[a]],
                                                  "member_steps": steps[a]} for a in (True, False)}
    solve_mod.AUDIT = True
    on, off = record["audit_on"]["median_cpu_s"], record["audit_off"]["median_cpu_s"]
    record["overhead"] = round(on / off - 1, 4)
    record["overhead_min"] = round(record["audit_on"]["min_cpu_s"] / record["audit_off"]["min_cpu_s"] - 1, 4)
    return record


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--audit-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--audit", action="store_true", help="also measure the energy audit's overhead")
    p.add_argument("--no-compile", action="store_true", help="skip the compile-time variants")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=str(HERE / "results" / "compile_time-2026-12-04.json"))
    args = p.parse_args()
    if args.child:
        print(json.dumps(_child(args.child)))
        return
    if args.audit_child:
        print(json.dumps(_audit_child(args.repeats)))
        return
    out = Path(args.out)
    record = json.loads(out.read_text()) if out.exists() else {}
    import jax

    record.update({"problem": "two-layer tanh, d=16, width 32, n=128 (544 parameters), t1=100, rtol 1e-8, "
                              "atol 1e-10, float64, 121 save times, observable loss",
                   "device": jax.devices()[0].device_kind, "jax": jax.__version__})
    if not args.no_compile:
        record["variants"] = {v: _spawn(v) for v in VARIANTS}
        with tempfile.TemporaryDirectory() as cache:
            record["variants"]["auto_cached_1"] = _spawn("auto_cached_1", cache)
            record["variants"]["auto_cached_2"] = _spawn("auto_cached_2", cache)
        # The counterfactual: every runtime check as NaN instead of a host callback (no callbacks
        # in the programs, so the cache may store all of them; benchmarks only, see the notes).
        with tempfile.TemporaryDirectory() as cache:
            for i in (1, 2):
                record["variants"][f"auto_nocb_cached_{i}"] = _spawn(f"auto_nocb_cached_{i}", cache,
                                                                     {"EQX_ON_ERROR": "nan"})
        v = record["variants"]
        record["ratios"] = {
            "explicit_over_bare_xla": round(v["explicit"]["xla_compile_s"] / v["bare"]["xla_compile_s"], 3),
            "auto_over_bare_xla": round(v["auto"]["xla_compile_s"] / v["bare"]["xla_compile_s"], 3),
            "second_process_over_first_xla": round(
                v["auto_cached_2"]["xla_compile_s"] / max(v["auto_cached_1"]["xla_compile_s"], 1e-9), 3),
            "explicit_over_bare_first_call_cpu": round(
                v["explicit"]["first_call_cpu_s"] / v["bare"]["first_call_cpu_s"], 3),
            "auto_over_bare_first_call_cpu": round(v["auto"]["first_call_cpu_s"] / v["bare"]["first_call_cpu_s"], 3),
            "second_process_over_first_cpu": round(
                v["auto_cached_2"]["first_call_cpu_s"] / v["auto_cached_1"]["first_call_cpu_s"], 3),
            "second_process_over_first_cpu_no_callbacks": round(
                v["auto_nocb_cached_2"]["first_call_cpu_s"] / v["auto_nocb_cached_1"]["first_call_cpu_s"], 3),
            "auto_vmap_over_explicit_vmap_first_call_cpu": round(
                v["auto_vmap"]["first_call_cpu_s"] / v["explicit_vmap"]["first_call_cpu_s"], 3),
        }
    if args.audit:
        env = dict(os.environ, GFLOW_NO_COMPILATION_CACHE="1")
        res = subprocess.run([sys.executable, __file__, "--audit-child", "--repeats", str(args.repeats)], env=env,
                             capture_output=True, text=True, check=True)
        record["audit"] = json.loads(res.stdout.strip().splitlines()[-1])
        print(json.dumps(record["audit"]), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
