"""`gflow demo`: Saxe's deep linear modes and the linearised (NTK) flow, theory vs simulation."""

import time
from pathlib import Path


def main(out_dir: str | Path = ".", small: bool = False) -> dict[str, float]:
    import jax

    jax.config.update("jax_enable_x64", True)
    from ._plotting import _pyplot, plot_overlay
    from ._theory.base import compare
    from ._theory.ntk.figures import ntk_solution
    from ._theory.saxe.figures import saxe_solution

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    start = time.perf_counter()
    theory, sol = saxe_solution(depth=2)
    errors = compare(theory, sol)
    print("Saxe deep linear network (8 → 6 → 4, whitened, balanced aligned init, float64):")
    print(f"  solver steps: {int(sol.stats['num_steps'])}")
    for name, err in errors.items():
        print(f"  max relative error, {name:<15} {float(err):.2e}")
        results[f"saxe_{name}"] = float(err)
    path = out / "demo_saxe.png"
    fig = plot_overlay(theory, sol, ["mode_strengths", "loss"],
                          title="Saxe et al. 2013: mode strengths and loss (lines theory, circles simulation)")
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)

    theory, sol = ntk_solution(width=128 if small else 512)
    # The loss decays and keeps its sign: its error relative to each value. Outputs cross zero,
    # where a pointwise ratio is large beside a perfect overlay: their error relative to the
    # output scale (max |f_sim − f_th| / max |f_th| over the curve).
    errors = compare(theory, sol, ["loss"])
    outputs = [n for n in ("outputs", "test_outputs") if n in sol.observables]
    curve = compare(theory, sol, outputs, scale="curve")
    print("Linearised MSE (NTK) closed form vs a tanh network of width", 128 if small else 512, ":")
    for name, err in errors.items():
        print(f"  max relative error, {name:<15} {float(err):.2e}")
        results[f"ntk_{name}"] = float(err)
    for name, err in curve.items():
        print(f"  max error relative to the output scale, {name:<13} {float(err):.2e}")
        results[f"ntk_{name}"] = float(err)
    ntk_path = out / "demo_ntk.png"
    fig = plot_overlay(theory, sol, ["loss", "test_outputs"], title="Linearised (NTK) flow vs network")
    fig.savefig(ntk_path, dpi=120)
    _pyplot().close(fig)
    print(f"Wrote {path.resolve()} and {ntk_path.resolve()} ({time.perf_counter() - start:.1f} s).")
    return results
