"""Cohen, Damian, Talwalkar, Kolter & Lee, "Understanding Optimization in Deep Learning with
Central Flows" (ICLR 2025, arXiv:2410.24206): the time-averaged trajectory of gradient descent
at the edge of stability, the sharpness tools it is built from, and its figure; with the
gradient-descent-vs-flow pieces it is compared with (modified flows, the gd-vs-flow figure)."""

from ._figures.gd_vs_flow import gd_vs_flow_problem as gd_vs_flow_problem
from ._figures.gd_vs_flow import gd_vs_flow_runs as gd_vs_flow_runs
from ._figures.gd_vs_flow import plot_gd_vs_flow as plot_gd_vs_flow
from ._flow.modified import ModifiedLoss as ModifiedLoss
from ._flow.modified import original_flow as original_flow
from ._flow.modified import unmodified_loss as unmodified_loss
from ._flow.sharpness import hessian_vector_product as hessian_vector_product
from ._flow.sharpness import sharpness as sharpness
from ._flow.sharpness import sharpness_and_gradient as sharpness_and_gradient
from ._flow.sharpness import sharpness_gradient as sharpness_gradient
from ._flow.sharpness import top_hessian_eigenpair as top_hessian_eigenpair
from ._theory.central_flow.figures import central_flow_runs as central_flow_runs
from ._theory.central_flow.figures import plot_central_flow as plot_central_flow
from ._theory.central_flow.figures import sliding_mean as sliding_mean
from ._theory.central_flow.flow import CentralFlow as CentralFlow
from ._theory.central_flow.setup import edge_of_stability_problem as edge_of_stability_problem

__all__ = [
    "CentralFlow",
    "ModifiedLoss",
    "central_flow_runs",
    "edge_of_stability_problem",
    "gd_vs_flow_problem",
    "gd_vs_flow_runs",
    "hessian_vector_product",
    "original_flow",
    "plot_central_flow",
    "plot_gd_vs_flow",
    "sharpness",
    "sharpness_and_gradient",
    "sharpness_gradient",
    "sliding_mean",
    "top_hessian_eigenpair",
    "unmodified_loss",
]
