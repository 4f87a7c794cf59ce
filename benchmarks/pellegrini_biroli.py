"""Benchmark: the paper-scale mean-field hinge simulation of Pellegrini & Biroli 2020 (Fig. 1).

M = 400 ReLU nodes, P = 10⁵ separable Gaussian samples, d = 100, α = h = 1, float64 by default,
mean-field clock τ = α t / M, integrated to τ = `--t1`. Runs (same process, same problem):

- `gflow`: `solve_flow` (Tsit5 + PID, rtol/atol given), compiled once; thousands of hinge kinks.
- `gflow-gd`: gradient descent on the τ clock (Euler, Δτ = `--dtau`): `gf.solve_discrete` with `optax.sgd`.
- `diffrax-naive` (`--peers`): a hand-written `diffrax.diffeqsolve` on a flattened state.
- `torch-gd` (`--peers`, if torch is installed): a plain PyTorch GD loop with the same Δτ.

Each writes a JSON record to benchmarks/results/: device, dtype, matmul precision, num_steps,
compile seconds, run seconds (min over `--repeats` after a warm-up), result code, and the final
hinge loss. `--small` (M = 64, P = 2000, d = 20) runs on a laptop CPU in seconds; `--tiny`
(M = 16, P = 200, d = 8, τ ≤ 1) in the suite's smoke size; `--full` (the default) is the paper's.
This is the suite's P5: the record is `pellegrini-biroli[-size]-<device>-<dtype>-<date>.json` with
a PNG beside it (final-loss gap against the adaptive gflow solve vs run time: the hinge's kinks
make a Dopri8 rtol-1e-12 reference impractical at this size, so the gap is to gflow's own solve).
"""

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)
import common
import diffrax
import jax.flatten_util
import jax.numpy as jnp
import jax.random as jr
import optax

import gflow as gf

pb = gf.pellegrini_biroli

RESULTS = Path(__file__).resolve().parent / "results"


def problem(M: int, P: int, d: int, dtype):
    kd, km = jr.split(jr.PRNGKey(0))
    data = pb.separable_gaussian(P, d, key=kd)
    data = gf.Dataset(data.x.astype(dtype), data.y.astype(dtype))
    model = gf.TwoLayer(d, M, "relu", scaling="mean_field", alpha=1.0, key=km)
    model = jax.tree_util.tree_map(lambda x: x.astype(dtype) if eqx_is_array(x) else x, model)
    return pb.mean_field_hinge_flow(model, data, 1.0)


def eqx_is_array(x):
    return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jnp.floating)


WARMUP = True  # --no-warmup: the AOT-compiled call is timed at once (paper scale on a CPU)


def timed(fn, *args, repeats: int):
    """(compile seconds, min run seconds, output): AOT-compile, warm up once, then time."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    if WARMUP:
        jax.block_until_ready(compiled(*args))
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(compiled(*args))
        runs.append(time.perf_counter() - t0)
    return compile_s, min(runs), out


def run_gflow(flow, t1, rtol, atol, repeats, max_steps):
    def solve(flow):
        sol = gf.solve_flow(flow, t1, num_times=11, observables=("loss",), rtol=rtol, atol=atol,
                            throw=False, max_steps=max_steps)
        return sol.stats["num_steps"], sol.observables["loss"][-1], sol.result._value, sol.t_final

    c, r, (steps, loss, result, t_final) = timed(solve, flow, repeats=repeats)
    return {"compile_s": c, "run_s": r, "num_steps": int(steps), "final_loss": float(loss),
            "result": int(result), "t_final": float(t_final)}


def run_gd(flow, t1, dtau, repeats):
    """Plain GD on the τ clock, θ ← θ + Δτ·vector_field(θ): `gf.solve_discrete` with
    `optax.sgd(Δτ)` (one gradient per step, as the torch loop; one compiled loop, the loss and
    the unsatisfied fraction read from the final parameters)."""
    steps = max(1, int(round(t1 / dtau)))
    opt = optax.sgd(dtau)

    def gd(flow):
        sol = gf.solve_discrete(flow, opt, steps * dtau, learning_rate=dtau, ts=jnp.array([steps * dtau]),
                                throw=False)
        model = flow.model(sol.params_final)
        margins = flow.data.y[:, 0] * jax.vmap(model)(flow.data.x)[:, 0]
        return (flow.loss_value(sol.params_final), jnp.mean((margins < 1.0).astype(margins.dtype)),
                sol.stats["num_steps"], sol.result._value)

    c, r, (loss, unsatisfied, done, result) = timed(gd, flow, repeats=repeats)
    return {"compile_s": c, "run_s": r, "num_steps": int(done), "final_unsatisfied": float(unsatisfied),
            "final_loss": float(loss), "result": int(result)}


def run_diffrax_naive(flow, t1, rtol, atol, repeats, max_steps):
    """The peer: ravel the parameters and call diffeqsolve directly (no gflow layer)."""
    flat0, unravel = jax.flatten_util.ravel_pytree(flow.params0)

    def solve(flat0):
        term = diffrax.ODETerm(lambda t, y, args: jax.flatten_util.ravel_pytree(flow.vector_field(t, unravel(y)))[0])
        sol = diffrax.diffeqsolve(term, diffrax.Tsit5(), 0.0, t1, None, flat0,
                                  stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
                                  max_steps=max_steps, throw=False)
        return sol.stats["num_steps"], flow.loss_value(unravel(sol.ys[-1]))

    c, r, (steps, loss) = timed(solve, flat0, repeats=repeats)
    return {"compile_s": c, "run_s": r, "num_steps": int(steps), "final_loss": float(loss)}


def run_torch_gd(flow, t1, dtau, repeats):
    try:
        import numpy as np
        import torch
    except ImportError:
        return {"skipped": "torch not installed"}
    model = flow.model0
    x = torch.from_numpy(np.array(flow.data.x))
    y = torch.from_numpy(np.array(flow.data.y[:, 0]))
    M, d = model.width, model.d
    scale = model.alpha / M
    steps = int(round(t1 / dtau))
    lr = dtau * M / model.alpha  # τ clock: Δθ = −Δτ (M/α) ∇L

    def loop():
        w = torch.from_numpy(np.array(model.w)).requires_grad_(True)
        a = torch.from_numpy(np.array(model.a[0])).requires_grad_(True)
        for _ in range(steps):
            f = scale * torch.relu(x @ w.T / d**0.5) @ a
            loss = torch.relu(1.0 - y * f).mean()
            gw, ga = torch.autograd.grad(loss, (w, a))
            with torch.no_grad():
                w -= lr * gw
                a -= lr * ga
        with torch.no_grad():  # the loss after the last step, as for the other methods
            f = scale * torch.relu(x @ w.T / d**0.5) @ a
            return torch.relu(1.0 - y * f).mean().item()

    if WARMUP:
        loop()
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        loss = loop()
        runs.append(time.perf_counter() - t0)
    return {"compile_s": 0.0, "run_s": min(runs), "num_steps": steps, "final_loss": loss,
            "torch": torch.__version__, "threads": torch.get_num_threads()}


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="M = 64, P = 2000, d = 20")
    parser.add_argument("--tiny", action="store_true", help="M = 16, P = 200, d = 8, τ ≤ 1")
    parser.add_argument("--full", action="store_true", help="M = 400, P = 1e5, d = 100 (the default)")
    parser.add_argument("--t1", type=float, default=None, help="final τ (default 10; small 5)")
    parser.add_argument("--dtau", type=float, default=0.01, help="GD step on the τ clock")
    parser.add_argument("--rtol", type=float, default=1e-8)
    parser.add_argument("--atol", type=float, default=1e-10)
    parser.add_argument("--max-steps", type=int, default=200_000)
    parser.add_argument("--dtype", default="float64", help="float64 or float32 (the first of a comma list)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--peers", action="store_true", help="also run naive diffrax and torch GD")
    parser.add_argument("--no-warmup", action="store_true",
                        help="time the first call after the AOT compile (no warm-up run; for paper scale on CPU)")
    parser.add_argument("--out", default=str(RESULTS))
    args, _ = parser.parse_known_args(argv)  # the suite passes every script the same flags
    global WARMUP
    WARMUP = not args.no_warmup
    args.dtype = args.dtype.split(",")[0]
    tag = "tiny" if args.tiny else ("small" if args.small else "full")
    M, P, d = {"tiny": (16, 200, 8), "small": (64, 2000, 20), "full": (400, 100_000, 100)}[tag]
    t1 = args.t1 if args.t1 is not None else {"tiny": 1.0, "small": 5.0, "full": 10.0}[tag]
    repeats = args.repeats or 1
    dtype = jnp.float64 if args.dtype == "float64" else jnp.float32
    flow = problem(M, P, d, dtype)
    record = {
        "problem": "pellegrini_biroli", "M": M, "P": P, "d": d, "t1": t1, "rtol": args.rtol, "atol": args.atol,
        "dtau": args.dtau, "dtype": args.dtype, "max_steps": args.max_steps, "warmup": WARMUP,
        "repeats": repeats, "cpu_count": os.cpu_count(), "device": str(jax.devices()[0]),
        "backend": jax.default_backend(),
        "matmul_precision": str(jax.config.jax_default_matmul_precision), "jax": jax.__version__,
        "host": platform.machine(), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "runs": {},
    }
    record["runs"]["gflow"] = run_gflow(flow, t1, args.rtol, args.atol, repeats, args.max_steps)
    print("gflow", record["runs"]["gflow"], flush=True)
    record["runs"]["gflow-gd"] = run_gd(flow, t1, args.dtau, repeats)
    print("gflow-gd", record["runs"]["gflow-gd"], flush=True)
    if args.peers:
        record["runs"]["diffrax-naive"] = run_diffrax_naive(flow, t1, args.rtol, args.atol, repeats, args.max_steps)
        print("diffrax-naive", record["runs"]["diffrax-naive"], flush=True)
        record["runs"]["torch-gd"] = run_torch_gd(flow, t1, args.dtau, repeats)
        print("torch-gd", record["runs"]["torch-gd"], flush=True)
    # Accuracy reached: each method's final loss against the adaptive flow solve (the reference
    # at rtol; GD's gap is its O(Δτ) discretisation error).
    reference = record["runs"]["gflow"]
    for run in record["runs"].values():
        if "final_loss" in run and reference.get("result") == 0:
            run["loss_gap_vs_gflow"] = abs(run["final_loss"] - reference["final_loss"]) / abs(reference["final_loss"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record["size"] = tag
    record["versions"] = common.versions()
    record["date"] = time.strftime("%Y-%m-%d", time.gmtime())
    device = common.device_name()
    default = "full" if device == "gpu" else "small"
    name = "pellegrini-biroli" + ("" if tag == default else f"-{tag}")
    path = out / f"{name}-{device}-{args.dtype}-{record['date']}.json"
    path.write_text(json.dumps(record, indent=1))
    plot(record, path)
    for method, run in record["runs"].items():
        print(f"   {method:<16} steps {run.get('num_steps')!s:>8}  run {run.get('run_s', float('nan')):9.3g} s  "
              f"compile {run.get('compile_s', float('nan')):7.3g} s  gap {run.get('loss_gap_vs_gflow')}")
    print(f"wrote {path} (+ .png)")
    return path


def plot(record, path):
    """Final-loss gap against the adaptive gflow solve vs run time, one marker per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for method, run in record["runs"].items():
        if "run_s" in run and run.get("loss_gap_vs_gflow") is not None:
            ax.plot([run["run_s"]], [max(run["loss_gap_vs_gflow"], 1e-17)], "o", label=method)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("run time (s)")
    ax.set_ylabel("final-loss gap vs gflow's adaptive solve (gflow: 1e-17 = itself)")
    ax.set_title(f"pellegrini_biroli ({record['size']}, M={record['M']}, P={record['P']}, τ≤{record['t1']})",
                 fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path.with_suffix(".png"), dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
