"""Entry point of `gflow bench`: runs the registered benchmark scripts.

    gflow bench                       # every benchmark, full size
    gflow bench all --small           # every benchmark, CPU-sized (or `gflow bench -- --small`)
    gflow bench pellegrini_biroli --small --peers

Each script in BENCHMARKS is a module in this folder with `main(argv) -> Path` that parses its own
flags and writes a JSON record to benchmarks/results/. Flags after the names are passed through
unchanged. To add a problem: write `benchmarks/<name>.py` with such a `main`, append `<name>`.
"""

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: Registered benchmark scripts (file stems in this folder), run in this order.
BENCHMARKS = [
    "pellegrini_biroli",
]


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"gflow_bench_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> list[Path]:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:  # `gflow bench -- --small`: argparse needs `--` before leading flags
        argv = argv[1:]
    names = []
    while argv and not argv[0].startswith("-"):
        names.append(argv.pop(0))
    unknown = [n for n in names if n not in BENCHMARKS and n != "all"]
    if unknown:
        sys.exit(f"gflow bench: unknown benchmark(s) {unknown}; registered: {BENCHMARKS}")
    if "-h" in argv or "--help" in argv:
        print(__doc__)
        print("registered:", ", ".join(BENCHMARKS))
        return []
    paths = []
    for name in [n for n in names if n != "all"] or BENCHMARKS:
        print(f"== {name}", flush=True)
        paths.append(load(name).main(argv))
    return paths


if __name__ == "__main__":
    main()
