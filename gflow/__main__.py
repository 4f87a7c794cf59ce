"""Command line: `gflow demo | reproduce | run | sweep | plot | bench` (also `python -m gflow`)."""

import argparse
import sys

#: Exit codes (also in `gflow sweep --help` / `gflow run --help`).
EXIT_OK = 0  # done; every solve succeeded
EXIT_ERROR = 1  # refused input (config, store, values), with a message naming it
EXIT_USAGE = 2  # a bad command line (argparse's code), e.g. an unknown figure NAME
EXIT_SOME_FAILED = 3  # sweep: some members failed (results kept, failed ones with their code); run: the solve failed
EXIT_ALL_FAILED = 4  # sweep: every member this process ran failed (results kept)

EXIT_CODES = f"""exit codes:
  {EXIT_OK}  done, every solve succeeded
  {EXIT_ERROR}  refused input (a config, store or value error; the message names it)
  {EXIT_USAGE}  bad command line
  {EXIT_SOME_FAILED}  sweep: some members failed (all results are kept, failed members with their
     `result` code); run: the solve failed
  {EXIT_ALL_FAILED}  sweep: every member run by this process failed (results kept)"""


def _demo(args):
    from ._demo import main

    main(args.out, small=args.small)


def _reproduce(args):
    import jax

    jax.config.update("jax_enable_x64", True)
    from ._reproduce import load_all, reproduce, select

    if args.list:
        for name, r in sorted(load_all().items()):
            print(f"{name:<28} {r.description}")
        return
    try:
        select(args.name)
    except ValueError:
        known = ", ".join(sorted(load_all()))
        print(f"gflow reproduce: unknown figure {args.name!r}; known: {known} (or 'all', or a paper prefix "
              "such as 'saxe'; `gflow reproduce --list` describes them)", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    for path in reproduce(args.name, args.out, small=args.small):
        print(f"wrote {path}")


def _bench(args):
    import runpy
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"
    if not script.exists():
        sys.exit("gflow bench: benchmarks/run.py not found (benchmarks ship with the source tree).")
    sys.argv = [str(script), *args.rest]
    runpy.run_path(str(script), run_name="__main__")


def _load(path):
    from ._config import ConfigError, apply_precision, load_config

    try:
        config = load_config(path)
    except ConfigError as e:
        sys.exit(f"gflow: {e}")
    apply_precision(config)
    return config


def _failure_message(result) -> str:
    """Why a solve failed, from its `RESULTS` code (the messages `throw=True` raises)."""
    import diffrax

    from ._flow.divergence import DIVERGED_MESSAGE, diverged
    from ._flow.solve import FAILED_MESSAGE, MAX_STEPS_MESSAGE

    if bool(result == diffrax.RESULTS.max_steps_reached):
        return MAX_STEPS_MESSAGE
    if bool(diverged(result)):
        return DIVERGED_MESSAGE
    return FAILED_MESSAGE


def _run(args):
    """One solve: the first member of the sweep at the first grid point, with a progress bar."""
    import jax.random as jr
    import numpy as np

    from ._flow import solve_flow
    from ._theory.base import compare

    config = _load(args.config)
    s, v = config.raw["solve"], config.raw["sweep"]
    hyper = {name: values[0] for name, values in config.grid_values().items()}
    try:
        flow = config.flow_factory()(jr.split(jr.PRNGKey(v["seed"]), v["members"])[0], hyper)
        flow = flow.unpadded()  # a swept width/data size: this member at its real sizes
        sol = solve_flow(flow, s["t1"], num_times=s["num_times"], observables=tuple(s["observables"]),
                         rtol=s["rtol"], atol=s["atol"], max_steps=s["max_steps"], solver=s["solver"],
                         progress=not args.no_progress, throw=False)
    except ValueError as e:  # a value the config schema cannot see (e.g. an overflowing init)
        sys.exit(f"gflow run: {e}")
    loss = np.asarray(sol.observables["loss"])
    last = loss[np.isfinite(loss)][-1] if np.isfinite(loss).any() else np.nan
    print(f"{config.raw['name']}: {', '.join(f'{k}={x:g}' for k, x in hyper.items()) or 'no grid'}")
    print(f"loss: {loss[0]:.6g} at t=0 -> {last:.6g} at t={float(sol.t_final):g} "
          f"({int(sol.stats['num_steps'])} steps)")
    if not bool(sol.succeeded):
        print(f"gflow run: the solve failed at t={float(sol.t_final):g} of t1={s['t1']:g}: "
              f"{_failure_message(sol.result)}", file=sys.stderr)
        sys.exit(EXIT_SOME_FAILED)
    theory = config.theory(flow)
    if theory is not None:
        for name, err in compare(theory, sol).items():
            print(f"theory {config.raw['theory']['name']} vs simulation, max rel. error in {name}: {float(err):.3g}")


def _sweep(args):
    import warnings

    from ._sweep import SweepStoreError, SweepWarning, sweep

    if args.coordinator:
        import jax

        jax.distributed.initialize(coordinator_address=args.coordinator, num_processes=args.num_processes,
                                   process_id=args.process_id)
    config = _load(args.config)
    kwargs = config.sweep_kwargs()
    if args.chunk_size:
        kwargs["chunk_size"] = args.chunk_size
    if args.worker is not None:
        if args.coordinator:
            sys.exit("gflow sweep: `--worker` and `--coordinator` must not be combined; got both "
                     "(a worker shares only the store, jax.distributed shares a coordinator).")
        kwargs["process_index"], kwargs["process_count"] = args.worker
    t1 = config.raw["solve"]["t1"]
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SweepWarning)
            ds = sweep(config.flow_factory(), config.raw["sweep"]["members"], t1, out=args.out,
                       progress=not args.no_progress, **kwargs)
    except SweepStoreError as e:
        sys.exit(f"gflow sweep: {e}")
    for w in caught:
        print(f"gflow sweep: warning: {w.message}", file=sys.stderr)
    summary, failure, code = sweep_report(ds)
    print(f"wrote {args.out}: {summary}")
    if code != EXIT_OK:
        print(f"gflow sweep: {failure}; exit code {code}", file=sys.stderr)
        sys.exit(code)


def sweep_report(ds) -> tuple[str, str | None, int]:
    """(summary line, failure line or None, exit code) of a sweep's labelled results `ds` (its
    `result` codes and `succeeded` flags, as `gflow.load_sweep` gives them)."""
    done = ds["result"] != -100
    n_done, n_ok = int(done.sum()), int((ds["succeeded"] & done).sum())
    summary = (f"{n_done} of {ds['result'].size} members done, {n_ok} succeeded "
               f"(config hash {ds.attrs['config_hash']})")
    if n_ok == n_done:
        return summary, None, EXIT_OK
    code = EXIT_ALL_FAILED if n_ok == 0 else EXIT_SOME_FAILED
    return summary, f"{n_done - n_ok} of {n_done} members failed (results kept; `result` says why)", code


def _worker(text: str) -> tuple[int, int]:
    """`I/N` -> (I, N) with 0 ≤ I < N (argparse type of `--worker`)."""
    try:
        i, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"`--worker` must be I/N with integers 0 ≤ I < N; got {text!r}") from None
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"`--worker` must be I/N with 0 ≤ I < N; got {text!r}")
    return i, n


def _plot(args):
    from ._plotting import plot_sweep
    from ._sweep import SweepStoreError
    from ._sweep.store import read_manifest

    try:
        read_manifest(args.dir, name="DIR")  # errors name the command-line argument
        paths = plot_sweep(args.dir, args.out)
    except SweepStoreError as e:
        sys.exit(f"gflow plot: {e}")
    for path in paths:
        print(f"wrote {path}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="Saxe + linearised-MSE demo: agreement numbers and demo_saxe.png")
    p.add_argument("--out", default=".", help="directory for the PNGs (default: .)")
    p.add_argument("--small", action="store_true", help="smaller problems (fast)")
    p.set_defaults(func=_demo)

    p = sub.add_parser("reproduce", help="draw a reproduced figure as PNG (NAME, paper prefix or 'all')")
    p.add_argument("name", nargs="?", default="all")
    p.add_argument("--out", default="reproduce_out")
    p.add_argument("--small", action="store_true", help="small problems (as in the tests)")
    p.add_argument("--list", action="store_true", help="list the registered figures")
    p.set_defaults(func=_reproduce)

    p = sub.add_parser("bench", help="run the benchmark suite (benchmarks/run.py)")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_bench)

    p = sub.add_parser("run", help="solve one flow from a TOML config (first member, first grid point)",
                       epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", metavar="CONFIG.toml")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)

    p = sub.add_parser("sweep", help="sweep a TOML config over members x grid into a resumable store",
                       epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", metavar="CONFIG.toml")
    p.add_argument("--out", required=True, help="store directory (rerun the same command to resume)")
    p.add_argument("--chunk-size", type=int, default=0,
                   help="members per compiled call (default: config / memory budget)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--coordinator", default=None, help="multi-host: jax.distributed coordinator HOST:PORT")
    p.add_argument("--num-processes", type=int, default=1, help="multi-host: number of processes")
    p.add_argument("--process-id", type=int, default=0, help="multi-host: this process's index")
    p.add_argument("--worker", type=_worker, default=None, metavar="I/N",
                   help="independent worker I of N (0 ≤ I < N) sharing only the store, e.g. a Slurm array "
                        "task: `--worker $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT` (array 0-(N-1)); "
                        "worker I takes chunks I, I+N, …; two workers on one slice, or a killed and "
                        "restarted one, never compute a chunk twice into the store")
    p.set_defaults(func=_sweep)

    p = sub.add_parser("plot", help="loss quantile bands and event-time histograms of a sweep store")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--out", default=None, help="directory for the PNGs (default: DIR/plots)")
    p.set_defaults(func=_plot)
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:
        # Everything after `bench` belongs to benchmarks/run.py (argparse's REMAINDER would
        # reject a leading flag such as `gflow bench --small`).
        return _bench(argparse.Namespace(rest=argv[1:]))
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
