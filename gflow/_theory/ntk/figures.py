"""The linearized (NTK) flow against a finite network: the demo's and `gflow reproduce
ntk-outputs`' figure.

??? cite "Reference"
    Lee et al., "Wide Neural Networks of Any Depth Evolve as Linear Models Under Gradient
    Descent", NeurIPS 2019 (arXiv:1902.06720), Fig. 2 (outputs of wide networks follow the
    linearized model).
"""

from pathlib import Path

from ..._flow.observables import outputs_at
from ..._flow.solve import FlowSolution, solve_flow
from ..._plotting import _pyplot, plot_overlay
from ..._reproduce import register
from .linearized import LinearizedMSE
from .setup import ntk_figure_problem


def ntk_solution(width: int = 512, t1: float = 50.0) -> tuple[LinearizedMSE, FlowSolution]:
    """The theory and a simulation (rtol 1e-10) of `ntk_figure_problem(width)` to `t1` (flow clock),
    saving loss, training outputs and "test_outputs" on the problem's x_test."""
    flow, x_test = ntk_figure_problem(width)
    observables = {"loss": "loss", "outputs": "outputs", "test_outputs": outputs_at(x_test)}
    sol = solve_flow(flow, t1, observables=observables, rtol=1e-10, atol=1e-12)
    return LinearizedMSE.from_flow(flow, x_test), sol


@register("ntk-outputs", "Linearised (NTK) closed form vs a width-512 tanh network: loss and test outputs")
def ntk_outputs(out: Path, small: bool) -> list[Path]:
    """Loss and test outputs of a tanh network (width 512; 128 when `small`) over the closed form."""
    theory, sol = ntk_solution(128 if small else 512)
    fig = plot_overlay(theory, sol, ["loss", "test_outputs"], title="Linearised MSE flow vs network (NTK scaling)")
    path = out / "ntk-outputs.png"
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)
    return [path]
