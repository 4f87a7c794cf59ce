"""Entry point of `gflow bench`: runs the registered benchmark scripts (issue 13's suite).

    gflow bench all --small --peers          # P1–P5 at CPU size (`make bench`)
    gflow bench --full --peers --out DIR     # P1–P5 at GPU size (`make bench-gpu`)
    gflow bench p1_uniform --tiny --out /tmp/b   # the smoke test's size
    gflow bench pellegrini_biroli --small --peers

Each script in BENCHMARKS is a module in this folder with `main(argv)` returning the path(s) of
the JSON records it wrote (`<problem>-<device>-<dtype>-<date>.json` under `--out`, default
benchmarks/results/, each with a PNG beside it). Flags after the names are passed through to
every script unchanged (each ignores the flags it does not know). Common flags: --tiny / --small
/ --full, --out DIR, --dtype float64,float32, --repeats N, --no-warmup, --no-peers,
--solver NAME (P3), --torch-threads N. To add a problem: write `benchmarks/<name>.py` with such a
`main`, append `<name>`.
"""

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the scripts import their siblings (common, netbench)
    sys.path.insert(0, str(HERE))

#: Registered benchmark scripts (file stems in this folder), run in this order.
BENCHMARKS = [
    "p1_uniform",
    "p2_stiffness",
    "p3_long_time",
    "p4_reduced",
    "pellegrini_biroli",  # P5
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
        out = load(name).main(argv)
        paths.extend(out if isinstance(out, list) else [out])
    return paths


if __name__ == "__main__":
    main()
