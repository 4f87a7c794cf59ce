"""P1 uniform sweep: B inits of a two-layer tanh net, logistic loss on teacher (sign) labels.

Full (GPU): B = 256, d = 100, width 256, n = 1024, t1 = 100. Small (CPU, about a minute with
peers): B = 16, d = 16, width 32, n = 128, t1 = 30. Tiny (the smoke test): B = 4, d = 6, width 8, n = 32, t1 = 10.
Methods: gflow, diffrax-naive, torchdiffeq, jax-gd, torch-gd (see netbench.py), each scored
against the Dopri8 reference on the first members; targets: gflow ≥ 1.0× naive vmap, ≥ 3×
torchdiffeq, ≥ 20× the PyTorch GD loop at matched accuracy (error ≤ 1e-4), compile ≤ 5 s, and
≥ 50 % of the measured matmul roofline on a GPU.
"""

import common
import diffrax
import jax.numpy as jnp
import netbench

SIZES = {
    "tiny": dict(members=4, d=6, m=8, n=32, t1=10.0, reference_members=2),
    "small": dict(members=16, d=16, m=32, n=128, t1=30.0, reference_members=4),
    "full": dict(members=256, d=100, m=256, n=1024, t1=100.0, reference_members=8),
}
TOLERANCES = {
    "float64": {"tiny": [(1e-6, 1e-8)], "small": [(1e-4, 1e-6), (1e-6, 1e-8), (1e-8, 1e-10)],
                "full": [(1e-4, 1e-6), (1e-6, 1e-8), (1e-8, 1e-10)]},
    "float32": {"tiny": [(1e-4, 1e-6)], "small": [(1e-3, 1e-5), (1e-4, 1e-6), (1e-5, 1e-7)],
                "full": [(1e-3, 1e-5), (1e-4, 1e-6), (1e-5, 1e-7)]},
}
LR0 = 2.0
MAX_STEPS = 100_000


def run(args, size, dtype_name, precision):
    sizes = SIZES[size]
    net = netbench.Net("logistic", seed=0, **sizes)
    dtype = jnp.float64 if dtype_name == "float64" else jnp.float32
    repeats = args.repeats or (1 if size == "tiny" else 3)
    record = common.base_record("p1-uniform", size, dtype_name, precision,
                                sizes | {"num_params": net.num_params, "loss": "logistic"})
    roof = common.roofline(dtype, size=size)
    record["roofline"] = roof
    record["flops_per_rhs"] = net.flops_per_rhs
    record["flops_note"] = "3·2·n·d·m + 2·2·n·m per gradient (matmuls only, analytic); lockstep RHS counted"
    t1 = sizes["t1"]
    ts = common.score_times(t1)
    ref = netbench.reference(net, t1, ts, max_steps=MAX_STEPS)
    record["reference"] = {k: v for k, v in ref.items() if k != "loss"}
    tols = TOLERANCES[dtype_name][size]
    solver = diffrax.Tsit5()
    kw = dict(tolerances=tols, solver=solver, max_steps=MAX_STEPS, repeats=repeats)
    m = record["methods"]
    m["gflow"] = common.method(netbench.run_ode_jax(net, "gflow", dtype, t1, ts, ref, roof, **kw),
                               solver="Tsit5 + PID")
    if not args.no_peers:
        m["diffrax-naive"] = common.method(netbench.run_ode_jax(net, "naive", dtype, t1, ts, ref, roof, **kw),
                                           solver="Tsit5 + PID")
        m["torchdiffeq"] = netbench.run_torchdiffeq(net, dtype, t1, ts, ref, roof, tolerances=tols,
                                                    max_steps=MAX_STEPS, repeats=repeats)
    netbench.gd_methods(record, net, dtype, t1, ts, ref, roof, lr0=LR0, repeats=repeats, no_peers=args.no_peers,
                        spread=size != "tiny")
    targets(record)
    return record


def targets(record):
    common.speedup_targets(record, "gflow", {"diffrax-naive": 1.0, "torchdiffeq": 3.0, "torch-gd": 20.0})
    pts = record["methods"]["gflow"]["points"]
    compile_s = max(p["compile_s"] for p in pts)
    common.target(record, "gflow compile", "<= 5 s", compile_s, compile_s <= 5.0,
                  "" if compile_s <= 5.0 else f"missed by {compile_s / 5.0:.2f}x")
    roof = max((p.get("roofline_fraction") or 0.0) for p in pts)
    on_gpu = record["device"] == "gpu"
    common.target(record, "gflow roofline share", ">= 50% of the measured matmul roofline (GPU)", roof,
                  (roof >= 0.5) if on_gpu else None,
                  "" if on_gpu else "GPU target; on a CPU recorded only")


def main(argv=None):
    return common.main_for(run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    main()
