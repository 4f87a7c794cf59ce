"""Command line: `gflow demo | reproduce | run | sweep | plot | bench` (also `python -m gflow`)."""

import argparse
import sys


def _demo(args):
    from ._demo import main

    main(args.out, small=args.small)


def _reproduce(args):
    import jax

    jax.config.update("jax_enable_x64", True)
    from ._reproduce import load_all, reproduce

    if args.list:
        for name, r in sorted(load_all().items()):
            print(f"{name:<28} {r.description}")
        return
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
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
