"""Berthier, Montanari & Zhou 2023 (arXiv:2303.00055): learning time scales of two-layer networks on single-index data."""

from ._data.single_index import SingleIndex as SingleIndex
from ._data.single_index import HermiteSeries as HermiteSeries
from ._data.single_index import alignments as alignments
from ._data.single_index import hermite_coefficients as hermite_coefficients
from ._data.single_index import hermite_functions as hermite_functions
from ._data.single_index import layer_rates as layer_rates
from ._data.single_index import order_parameters as order_parameters
from ._data.single_index import quantile_weights as quantile_weights
from ._data.single_index import second_moment as second_moment
from ._data.single_index import single_index_network as single_index_network
from ._data.single_index import span_coordinates as span_coordinates
from ._theory.bmz import SingleIndexMeanField as SingleIndexMeanField
from ._theory.bmz import fit_time_scale as fit_time_scale

__all__ = [
    "SingleIndex",
    "HermiteSeries",
    "alignments",
    "hermite_coefficients",
    "hermite_functions",
    "layer_rates",
    "order_parameters",
    "quantile_weights",
    "second_moment",
    "single_index_network",
    "span_coordinates",
    "SingleIndexMeanField",
    "fit_time_scale",
]
