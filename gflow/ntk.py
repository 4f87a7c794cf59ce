"""Jacot, Gabriel & Hongler 2018 (arXiv:1806.07572): the neural tangent kernel and the linearized (lazy) flow."""

from ._theory.ntk import LinearizedMSE as LinearizedMSE
from ._theory.ntk import empirical_ntk as empirical_ntk
from ._models import LinearizedModel as LinearizedModel

__all__ = [
    "LinearizedMSE",
    "empirical_ntk",
    "LinearizedModel",
]
