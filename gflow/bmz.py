"""Berthier, Montanari & Zhou 2023 (arXiv:2303.00055): learning time scales of two-layer networks on single-index data.

The data and network of the paper (`SingleIndex`, `single_index_network`, `layer_rates`,
`quantile_weights`, `span_coordinates`), its Hermite machinery (`HermiteSeries`,
`hermite_coefficients`, `hermite_functions`, `second_moment`), the network observables that
pair with the theory (`alignments`, `order_parameters`), the reduced particle flow
(`SingleIndexMeanField`, seeded by `SingleIndexMeanField.from_flow(flow)` or `.from_data`), its
plateau exit times (`exit_times` → `ExitTimes`, `fit_time_scale`) and the figures F1–F4
(`bmz_problem`, `plot_staircase`, `plot_neurons`, `plot_networks`, `plot_timescales`).
"""

from ._theory.bmz.figures import bmz_problem as bmz_problem
from ._theory.bmz.figures import plot_networks as plot_networks
from ._theory.bmz.figures import plot_neurons as plot_neurons
from ._theory.bmz.figures import plot_staircase as plot_staircase
from ._theory.bmz.figures import plot_timescales as plot_timescales
from ._theory.bmz.hermite import HermiteSeries as HermiteSeries
from ._theory.bmz.hermite import hermite_coefficients as hermite_coefficients
from ._theory.bmz.hermite import hermite_functions as hermite_functions
from ._theory.bmz.hermite import second_moment as second_moment
from ._theory.bmz.mean_field import SingleIndexMeanField as SingleIndexMeanField
from ._theory.bmz.observables import alignments as alignments
from ._theory.bmz.observables import order_parameters as order_parameters
from ._theory.bmz.setup import SingleIndex as SingleIndex
from ._theory.bmz.setup import layer_rates as layer_rates
from ._theory.bmz.setup import quantile_weights as quantile_weights
from ._theory.bmz.setup import single_index_network as single_index_network
from ._theory.bmz.setup import span_coordinates as span_coordinates
from ._theory.bmz.time_scales import ExitTimes as ExitTimes
from ._theory.bmz.time_scales import exit_times as exit_times
from ._theory.bmz.time_scales import fit_time_scale as fit_time_scale

__all__ = [
    "SingleIndex",
    "single_index_network",
    "layer_rates",
    "quantile_weights",
    "span_coordinates",
    "HermiteSeries",
    "hermite_coefficients",
    "hermite_functions",
    "second_moment",
    "alignments",
    "order_parameters",
    "SingleIndexMeanField",
    "ExitTimes",
    "exit_times",
    "fit_time_scale",
    "bmz_problem",
    "plot_staircase",
    "plot_neurons",
    "plot_networks",
    "plot_timescales",
]
