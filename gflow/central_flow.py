"""Cohen, Damian et al. 2024, "Understanding Optimization in Deep Learning with Central Flows"
(arXiv:2410.24206): the time-averaged trajectory of gradient descent at the edge of stability,
and the sharpness tools it is built from."""

from ._flow.sharpness import hessian_vector_product as hessian_vector_product
from ._flow.sharpness import sharpness as sharpness
from ._flow.sharpness import sharpness_and_gradient as sharpness_and_gradient
from ._flow.sharpness import sharpness_gradient as sharpness_gradient
from ._flow.sharpness import top_hessian_eigenpair as top_hessian_eigenpair

__all__ = [
    "hessian_vector_product",
    "sharpness",
    "sharpness_and_gradient",
    "sharpness_gradient",
    "top_hessian_eigenpair",
]
