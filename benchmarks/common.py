"""Shared machinery of the benchmark suite (issue 13): sizes and flags, timing, the float64
reference, error scoring, the matmul roofline, FLOP counts, records and work–precision plots.

Every problem script (`p1_uniform.py`, …) calls `main_for(run, …)`: it parses the common flags,
sets the precision explicitly, and for each dtype calls `run(args, size, dtype)`, which returns a
record (a dict with the schema of `base_record` plus `methods` and `targets`); `main_for` writes
it as `<problem>-<device>-<dtype>-<date>.json` with the work–precision PNG beside it.

Accuracy: each method's loss curve, on the score grid `score_times(t1)` ({0} ∪ a log grid over
the 3 decades below t1), against the reference (diffrax.Dopri8, rtol 1e-12, atol 1e-14, float64)
on the first `reference_members` members: max over those members and times of
|L − L_ref| / max(|L_ref|, 1e-3 · max_t |L_ref|) (`curve_error`); a curve that stopped early
(non-finite entries where the reference is finite) scores inf.
"""

import argparse
import datetime
import importlib.metadata
import json
import math
import os
import platform
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)
import diffrax
import jax.numpy as jnp
import numpy as np

import gflow as gf

HERE = Path(__file__).resolve().parent


def message(name: str, expected: str, got) -> str:
    """A command-line error in gflow's format: the argument, what was expected, what was given."""
    return f"`{name}` must {expected}; got {got}"
RESULTS = HERE / "results"
SIZES = ("tiny", "small", "full")
REF_RTOL, REF_ATOL = 1e-12, 1e-14
FLOOR = 1e-3
#: GD's learning rate is the largest (halving from a start value) whose loss curve is this close.
GD_TOLERANCE = 1e-4
WARMUP = True


# --------------------------------------------------------------------------------------------
# flags


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--tiny", action="store_true", help="seconds (the smoke test in `make test`)")
    size.add_argument("--small", action="store_true", help="CPU size (`make bench`, <= 10 min for all)")
    size.add_argument("--full", action="store_true", help="paper/GPU size (`make bench-gpu`)")
    p.add_argument("--out", default=str(RESULTS), help="folder for the JSON records and PNG plots")
    p.add_argument("--dtype", default=None,
                   help="float64, float32 or a comma list (default float64 on CPU, float32,float64 on GPU)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats after the warm-up (min is kept)")
    p.add_argument("--no-warmup", action="store_true", help="time the first call after the AOT compile")
    p.add_argument("--no-peers", action="store_true", help="gflow methods only")
    p.add_argument("--solver", default="tsit5", help="gflow solver for P3: tsit5, dopri5, kvaerno5, …")
    p.add_argument("--torch-threads", type=int, default=None,
                   help="torch intra-op threads (default: 1 at tiny/small size on a CPU, else torch's)")
    p.add_argument("--peers", action="store_true", help="(accepted for pellegrini_biroli; peers run by default)")
    return p


def size_of(args) -> str:
    if args.tiny:
        return "tiny"
    if args.full:
        return "full"
    if args.small:
        return "small"
    return "full" if jax.default_backend() == "gpu" else "small"


def dtypes_of(args) -> list[str]:
    if args.dtype is None:
        return ["float32", "float64"] if jax.default_backend() == "gpu" else ["float64"]
    names = [s.strip() for s in args.dtype.split(",") if s.strip()]
    for n in names:
        if n not in ("float32", "float64"):
            raise ValueError(message("--dtype", "be float32, float64 or a comma list of them", repr(args.dtype)))
    return names


def solver_of(name: str):
    solvers = {"tsit5": diffrax.Tsit5, "dopri5": diffrax.Dopri5, "dopri8": diffrax.Dopri8,
               "kvaerno5": diffrax.Kvaerno5, "kvaerno3": diffrax.Kvaerno3,
               # gflow's stiff paths: matrix-free Kvaerno4 + GMRES on HVPs, and auto-switching
               "implicit": gf.MatrixFreeImplicit, "auto": gf.AutoSwitch}
    if name.lower() not in solvers:
        raise ValueError(message("--solver", f"be one of {sorted(solvers)}", repr(name)))
    return solvers[name.lower()]()


def set_precision(dtype: str) -> str:
    """Set `jax_default_matmul_precision` explicitly ('highest': no TF32/bf16 passes for float32
    on GPUs; float64 is unaffected) and return what is in force."""
    jax.config.update("jax_default_matmul_precision", "highest")
    return str(jax.config.jax_default_matmul_precision)


# --------------------------------------------------------------------------------------------
# timing

_T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"   [{time.perf_counter() - _T0:7.1f}s] {msg}", flush=True)



_COMPILED = {}


def timed(fn, *args, repeats: int = 3, warmup: bool | None = None, compiled=None, cache_key=None):
    """AOT-compile `fn` (timed apart; or reuse `compiled`, or the one cached under `cache_key`:
    compile_s is then 0), warm up once, then the min of `repeats` timed calls
    (block_until_ready). Returns ({compile_s, run_s, runs_s}, output); the compiled callable is
    kept in `timed.last`."""
    warmup = WARMUP if warmup is None else warmup
    t0 = time.perf_counter()
    if compiled is None and cache_key is not None:
        compiled = _COMPILED.get(cache_key)
    if compiled is None:
        compiled = jax.jit(fn).lower(*args).compile()
        if cache_key is not None:
            _COMPILED[cache_key] = compiled
    compile_s = time.perf_counter() - t0
    timed.last = compiled
    out = None
    if warmup:
        out = jax.block_until_ready(compiled(*args))
    runs = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        out = jax.block_until_ready(compiled(*args))
        runs.append(time.perf_counter() - t0)
    return {"compile_s": compile_s, "run_s": min(runs), "runs_s": runs}, out


def timed_python(fn, *, repeats: int = 3, warmup: bool | None = None, sync=None):
    """Time a Python-level callable (torch, SciPy): warm-up, min of `repeats`; `sync()` is called
    before each clock read (e.g. torch.cuda.synchronize)."""
    warmup = WARMUP if warmup is None else warmup
    sync = sync or (lambda: None)
    out = None
    if warmup:
        out = fn()
        sync()
    runs = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        out = fn()
        sync()
        runs.append(time.perf_counter() - t0)
    return {"compile_s": 0.0, "run_s": min(runs), "runs_s": runs}, out


# --------------------------------------------------------------------------------------------
# reference and scoring


def score_times(t1: float, num: int = 41, decades: float = 3.0) -> np.ndarray:
    """{0} ∪ logspace(t1·10^-decades, t1, num − 1): the grid every method's loss is scored on."""
    ts = np.concatenate([[0.0], np.logspace(math.log10(t1) - decades, math.log10(t1), num - 1)])
    ts[-1] = t1
    return ts


def reference_kwargs(max_steps: int) -> dict:
    return dict(solver=diffrax.Dopri8(), rtol=REF_RTOL, atol=REF_ATOL, max_steps=max_steps, throw=False)


def curve_error(curves, reference, floor: float = FLOOR) -> float:
    """Max over members and times of |L − L_ref| / max(|L_ref|, floor · max_t |L_ref|);
    `curves`, `reference`: (S, T). Non-finite entries of a curve where the reference is finite
    (the solve stopped early) give inf; reference entries that are not finite are skipped."""
    c = np.asarray(curves, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    if c.shape != r.shape:
        raise ValueError(message("curves", f"have the reference's shape {r.shape}", c.shape))
    ok = np.isfinite(r)
    if not ok.any():
        return math.nan
    rmax = np.max(np.where(ok, np.abs(r), 0.0), axis=-1, keepdims=True)
    scale = np.maximum(np.abs(r), floor * rmax)
    scale = np.where(scale > 0, scale, 1.0)
    with np.errstate(invalid="ignore"):
        err = np.where(np.isfinite(c), np.abs(c - r) / scale, np.inf)
    return float(np.max(np.where(ok, err, 0.0)))


def interp_curve(ts_method, losses, ts) -> np.ndarray:
    """Linear interpolation of a (…, K) loss history at times `ts_method` (K,) onto `ts`."""
    losses = np.asarray(losses, dtype=np.float64)
    return np.stack([np.interp(ts, ts_method, row) for row in losses.reshape(-1, losses.shape[-1])]).reshape(
        losses.shape[:-1] + (len(ts),))


# --------------------------------------------------------------------------------------------
# FLOPs and the roofline


def two_layer_rhs_flops(n: int, d: int, m: int, k: int = 1) -> float:
    """FLOPs of one gradient of a two-layer net's mean loss over n samples (analytic count of the
    matmuls only): forward X·Wᵀ (2ndm), backward ∂W = δᵀX (2ndm) plus the first-layer
    activations' share (2ndm, as in the issue's ~3·2ndm estimate, which also covers the
    element-wise work), and the second layer's 2·2nmk. Element-wise tanh/softplus are not counted."""
    return 3.0 * 2.0 * n * d * m + 2.0 * 2.0 * n * m * k


def roofline(dtype, n: int | None = None, repeats: int = 3, size: str = "small") -> dict:
    """Measured matmul roofline: FLOP/s of an (n × n) @ (n × n) product in `dtype`, in this run."""
    if n is None:
        n = 8192 if jax.default_backend() == "gpu" else (256 if size == "tiny" else 1024)
    ka, kb = jax.random.split(jax.random.PRNGKey(1))
    a = jax.random.normal(ka, (n, n), dtype=dtype)
    b = jax.random.normal(kb, (n, n), dtype=dtype)
    timing, _ = timed(lambda a, b: a @ b, a, b, repeats=repeats, warmup=True)
    return {"n": n, "dtype": jnp.dtype(dtype).name, "seconds": timing["run_s"], "flop_s": 2.0 * n**3 / timing["run_s"]}


def add_flops(point: dict, flops_per_rhs: float, rhs_total: float, roof: dict) -> None:
    """Achieved FLOP/s (rhs_total evaluations computed, lockstep included) and its roofline share."""
    if point.get("run_s") and rhs_total and math.isfinite(rhs_total):
        point["flops"] = flops_per_rhs * rhs_total
        point["flop_s"] = point["flops"] / point["run_s"]
        point["roofline_fraction"] = point["flop_s"] / roof["flop_s"]


# --------------------------------------------------------------------------------------------
# records


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions() -> dict:
    names = ("gflow", "jax", "jaxlib", "diffrax", "equinox", "numpy", "scipy", "torch", "torchdiffeq", "matplotlib")
    return {n: _version(n) for n in names}


def device_name() -> str:
    return "gpu" if jax.default_backend() == "gpu" else jax.default_backend()


def base_record(problem: str, size: str, dtype: str, precision: str, sizes: dict) -> dict:
    dev = jax.devices()[0]
    return {
        "schema": "gflow-bench/1",
        "problem": problem,
        "size": size,
        "sizes": sizes,
        "dtype": dtype,
        "device": device_name(),
        "device_kind": getattr(dev, "device_kind", str(dev)),
        "backend": jax.default_backend(),
        "jax_default_matmul_precision": precision,
        "versions": versions(),
        "cpu_count": os.cpu_count(),
        "host": platform.machine(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d"),
        "time": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "warmup": WARMUP,
        "error_metric": ("max over reference members and score times of |L - L_ref| / "
                         f"max(|L_ref|, {FLOOR} * max_t |L_ref|); reference Dopri8 rtol {REF_RTOL} "
                         f"atol {REF_ATOL} float64"),
        "methods": {},
        "targets": [],
    }


def skipped(reason: str) -> dict:
    return {"status": "skipped", "reason": reason, "points": []}


def method(points: list[dict], **extra) -> dict:
    return {"status": "ok", "reason": None, "points": points, **extra}


def time_at_accuracy(entry: dict, tolerance: float) -> float | None:
    """The least run time among a method's points whose error is ≤ `tolerance` (None if none)."""
    times = [p["run_s"] for p in entry.get("points", [])
             if p.get("error") is not None and math.isfinite(p["error"]) and p["error"] <= tolerance]
    return min(times) if times else None


def target(record: dict, name: str, goal: str, measured, met: bool | None, note: str = "") -> None:
    record["targets"].append({"name": name, "target": goal, "measured": measured, "met": met, "note": note})


def speedup_targets(record: dict, base: str, goals: dict[str, float], tolerance: float = GD_TOLERANCE) -> None:
    """Targets 'gflow ≥ x× peer at matched accuracy': run times at error ≤ `tolerance`."""
    mine = time_at_accuracy(record["methods"].get(base, {}), tolerance)
    for peer, goal in goals.items():
        entry = record["methods"].get(peer, {})
        if entry.get("status") != "ok":
            target(record, f"{base} vs {peer}", f">= {goal}x at error <= {tolerance:g}", None, None,
                   f"{peer} not run: {entry.get('reason')}")
            continue
        theirs = time_at_accuracy(entry, tolerance)
        if mine is None or theirs is None:
            who = base if mine is None else peer
            target(record, f"{base} vs {peer}", f">= {goal}x at error <= {tolerance:g}", None, None,
                   f"{who} reached no point with error <= {tolerance:g}")
            continue
        ratio = theirs / mine
        note = "" if ratio >= goal else f"missed by {goal / ratio:.2f}x"
        target(record, f"{base} vs {peer}", f">= {goal}x at error <= {tolerance:g}", ratio, ratio >= goal, note)


def _clean(x):
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (np.generic, jax.Array)):
        x = np.asarray(x).tolist()
        return _clean(x)
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return x


def record_path(record: dict, out: Path) -> Path:
    default = "full" if record["device"] == "gpu" else "small"
    problem = record["problem"] + ("" if record["size"] == default else f"-{record['size']}")
    return out / f"{problem}-{record['device']}-{record['dtype']}-{record['date']}.json"


def write(record: dict, out: str | Path) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = record_path(record, out)
    path.write_text(json.dumps(_clean(record), indent=1, allow_nan=False))
    return path


def plot_work_precision(record: dict, path: Path) -> Path:
    """Error vs run time, one line per method (its tolerances or learning rates)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if record.get("plot") == "horizons":
        return _plot_horizons(plt, record, path)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    floor = 1e-17
    for name, entry in record["methods"].items():
        pts = [p for p in entry.get("points", []) if p.get("run_s") and p.get("error") is not None
               and math.isfinite(p["error"])]
        if not pts:
            continue
        pts = sorted(pts, key=lambda p: p["run_s"])
        ax.plot([p["run_s"] for p in pts], [max(p["error"], floor) for p in pts], "o-", label=name)
    ax.axhline(GD_TOLERANCE, color="0.6", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("run time (s, min over repeats, compile excluded)")
    ax.set_ylabel("max relative loss-curve error vs Dopri8 reference")
    ax.set_title(f"{record['problem']} ({record['size']}, {record['device']}, {record['dtype']})", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    png = path.with_suffix(".png")
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def _plot_horizons(plt, record, path):
    """P3: steps and run time against the horizon t1, one line per method (hollow: failed)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, entry in record["methods"].items():
        pts = [p for p in entry.get("points", []) if p.get("steps") and p.get("run_s")]
        if not pts:
            continue
        t1 = [p["setting"]["t1"] for p in pts]
        line = axes[0].plot(t1, [p["steps"] for p in pts], "o-", label=name)[0]
        axes[1].plot(t1, [p["run_s"] for p in pts], "o-", color=line.get_color())
        bad = [p for p in pts if p.get("result") not in (0, [0])]
        axes[0].plot([p["setting"]["t1"] for p in bad], [p["steps"] for p in bad], "x", color="k", ms=9)
    for ax, label in zip(axes, ("steps (x: did not reach t1)", "run time (s)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("horizon t1")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{record['problem']} ({record['size']}, {record['device']}, {record['dtype']})", fontsize=9)
    fig.tight_layout()
    png = path.with_suffix(".png")
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def fmt(x, spec=".3g") -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return format(x, spec) if math.isfinite(x) else str(x)
    return str(x)


def print_table(record: dict) -> None:
    print(f"-- {record['problem']} [{record['size']}, {record['device']}, {record['dtype']}]")
    print(f"   {'method':<22}{'setting':<18}{'run_s':>10}{'compile_s':>10}{'steps':>10}{'error':>10}{'roof%':>8}")
    for name, entry in record["methods"].items():
        if entry["status"] != "ok":
            print(f"   {name:<22}skipped: {entry['reason']}")
            continue
        for p in entry["points"]:
            setting = ",".join(f"{k}={fmt(v, '.3g')}" for k, v in p.get("setting", {}).items())
            roof = p.get("roofline_fraction")
            print(f"   {name:<22}{setting:<18}{fmt(p.get('run_s')):>10}{fmt(p.get('compile_s')):>10}"
                  f"{fmt(p.get('steps')):>10}{fmt(p.get('error')):>10}{fmt(None if roof is None else 100 * roof):>8}")
    for t in record["targets"]:
        met = {True: "met", False: "MISSED", None: "n/a"}[t["met"]]
        print(f"   target {t['name']}: {t['target']}; measured {fmt(t['measured'])} -> {met} {t['note']}")


def main_for(run, description: str, argv=None) -> list[Path]:
    """Parse the common flags and run `run(args, size, dtype) -> record` per dtype."""
    global WARMUP
    args, _ = parser(description).parse_known_args(argv)
    WARMUP = not args.no_warmup
    size = size_of(args)
    import netbench

    netbench.TORCH_THREADS = args.torch_threads or (1 if size != "full" and jax.default_backend() == "cpu" else None)
    paths = []
    for dtype in dtypes_of(args):
        precision = set_precision(dtype)
        record = run(args, size, dtype, precision)
        record["torch_threads"] = netbench.TORCH_THREADS
        path = write(record, args.out)
        plot_work_precision(record, path)
        print_table(record)
        print(f"wrote {path} (+ .png)", flush=True)
        paths.append(path)
    return paths
