"""Markdown table of the suite's records: `python benchmarks/table.py [DIR] [--date YYYY-MM-DD]`.

One row per (problem, method): the point at the tightest accuracy ≤ 1e-4 reached fastest (else
its most accurate point), with steps, run and compile seconds, error, and the targets below."""

import json
import math
import sys
from pathlib import Path

from common import GD_TOLERANCE, RESULTS, fmt


def best(points):
    ok = [p for p in points if p.get("run_s") and p.get("error") is not None and math.isfinite(p["error"])]
    good = [p for p in ok if p["error"] <= GD_TOLERANCE]
    if good:
        return min(good, key=lambda p: p["run_s"])
    if ok:
        return min(ok, key=lambda p: p["error"])
    return points[-1] if points else None


def rows(record):
    for name, entry in record["methods"].items():
        if entry["status"] != "ok":
            yield f"| {record['problem']} | {name} | skipped: {entry['reason'][:90]} | | | | |"
            continue
        if record.get("plot") == "horizons":
            for p in entry["points"]:
                s = p["setting"]
                yield (f"| {record['problem']} t1={s['t1']:g} | {name} | rtol {fmt(s.get('rtol'))} "
                       f"| {fmt(p.get('steps'))} (result {p.get('result')}) | {fmt(p.get('run_s'))} "
                       f"| {fmt(p.get('compile_s'))} | {fmt(p.get('error'))} |")
            continue
        p = best(entry["points"])
        s = ", ".join(f"{k} {fmt(v)}" for k, v in p.get("setting", {}).items())
        extra = f" ({fmt(p['per_value_s'])} s/value)" if "per_value_s" in p else ""
        yield (f"| {record['problem']} | {name} | {s} | {fmt(p.get('steps'))} | {fmt(p.get('run_s'))}{extra} | "
               f"{fmt(p.get('compile_s'))} | {fmt(p.get('error'))} |")


def main(argv):
    folder = Path(argv[0]) if argv and not argv[0].startswith("--") else RESULTS
    date = argv[argv.index("--date") + 1] if "--date" in argv else None
    print("| problem | method | setting | steps | run s | compile s | error |")
    print("|---|---|---|---|---|---|---|")
    targets = []
    for path in sorted(folder.glob("p[1-4]-*.json")):
        record = json.loads(path.read_text())
        if date and record.get("date") != date:
            continue
        for row in rows(record):
            print(row)
        for t in record["targets"]:
            met = {True: "met", False: "**missed**", None: "recorded"}[t["met"]]
            targets.append(f"- {record['problem']}: {t['name']} ({t['target']}): {fmt(t['measured'])}, {met}"
                           f"{'; ' + t['note'] if t['note'] else ''}")
    print()
    print("\n".join(targets))


if __name__ == "__main__":
    main(sys.argv[1:])
