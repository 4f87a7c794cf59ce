"""Jacot, Gabriel & Hongler 2018 (arXiv:1806.07572); Lee et al. 2019 (arXiv:1902.06720): the
neural tangent kernel and the linearized (lazy) flow.

`LinearizedMSE` (the closed form, seeded by `LinearizedMSE.from_flow(flow, x_test)`),
`empirical_ntk`, `LinearizedModel` (a network's first-order Taylor model, whose flow the closed
form solves exactly), the figure's problem (`ntk_figure_problem`) and its theory-plus-simulation
(`ntk_solution`).
"""

from ._models import LinearizedModel as LinearizedModel
from ._theory.ntk.figures import ntk_solution as ntk_solution
from ._theory.ntk.linearized import LinearizedMSE as LinearizedMSE
from ._theory.ntk.linearized import empirical_ntk as empirical_ntk
from ._theory.ntk.setup import ntk_figure_problem as ntk_figure_problem

__all__ = [
    "LinearizedMSE",
    "empirical_ntk",
    "LinearizedModel",
    "ntk_figure_problem",
    "ntk_solution",
]
