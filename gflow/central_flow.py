"""Cohen, Damian, Talwalkar, Kolter & Lee, "Understanding Optimization in Deep Learning with
Central Flows" (ICLR 2025, arXiv:2410.24206): the time-averaged trajectory of gradient descent
at the edge of stability, the sharpness tools it is built from, and its figure."""

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
    "central_flow_runs",
    "edge_of_stability_problem",
    "hessian_vector_product",
    "plot_central_flow",
    "sharpness",
    "sharpness_and_gradient",
    "sharpness_gradient",
    "sliding_mean",
    "top_hessian_eigenpair",
]
