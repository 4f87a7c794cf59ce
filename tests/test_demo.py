"""The demo, the reproduce CLI and the plotting entry points."""

import pytest
from helpers import saxe_balanced_problem

import gflow as gf
from gflow.__main__ import main as cli


def _numbers(out: str) -> dict[str, float]:
    """The demo's printed agreement numbers, {saxe_loss: …, ntk_test_outputs: …}."""
    import re

    results, section = {}, None
    for line in out.splitlines():
        if line.startswith("Saxe"):
            section = "saxe"
        elif line.startswith("Linearised"):
            section = "ntk"
        m = re.match(r"\s+max (?:relative error|error relative to the output scale), (\w+)\s+([0-9.e+-]+)$", line)
        if m:
            results[f"{section}_{m.group(1)}"] = float(m.group(2))
    return results


def test_demo_small(tmp_path, capsys):
    cli(["demo", "--small", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    results = _numbers(out)
    assert (tmp_path / "demo_saxe.png").stat().st_size > 10_000
    assert "max relative error" in out and str(tmp_path / "demo_saxe.png") in out
    assert results["saxe_mode_strengths"] < 1e-6 and results["saxe_loss"] < 1e-6
    # Outputs cross zero: their error is reported relative to the output scale (a pointwise
    # relative error of ~1 sat beside a perfect overlay), so the number means what it says.
    assert "max error relative to the output scale, test_outputs" in out
    assert "max relative error, outputs" not in out
    assert results["ntk_test_outputs"] < 0.1 and results["ntk_outputs"] < 0.1


def test_reproduce_cli(tmp_path, capsys):
    cli(["reproduce", "--list"])
    assert "saxe-modes" in capsys.readouterr().out
    # Drawing goes through the same registry: the paper test files draw their own figures.
    with pytest.raises(SystemExit) as e:  # the CLI: a usage error, no traceback
        cli(["reproduce", "no-such-figure", "--out", str(tmp_path)])
    assert e.value.code == 2
    assert "gflow reproduce: unknown figure 'no-such-figure'; known: " in capsys.readouterr().err


def test_plot_overlay(tmp_path):
    flow = saxe_balanced_problem()
    sol = gf.solve_flow(flow, 50.0, num_times=30, observables=["loss", "mode_strengths"])
    fig = gf.plot_overlay(gf.saxe.DeepLinearModes.from_flow(flow), sol, path=tmp_path / "o.png")
    assert len(fig.axes) == 2 and (tmp_path / "o.png").exists()


def test_public_api():
    from gflow import DeepLinear, GradientFlow, compare, solve_flow  # noqa: F401
    from gflow.ntk import LinearizedMSE  # noqa: F401
    from gflow.saxe import DeepLinearModes  # noqa: F401

    assert set(gf.__all__) <= set(dir(gf))
    for fn in (gf.solve_flow, gf.compare, gf.whitened_regression, gf.plot_overlay):
        assert fn.__doc__ and fn.__annotations__, fn
    for cls in (gf.GradientFlow, gf.saxe.DeepLinearModes, gf.ntk.LinearizedMSE, gf.TwoLayer, gf.DeepLinear):
        assert "time" in cls.__doc__ or "shape" in cls.__doc__ or "(" in cls.__doc__
