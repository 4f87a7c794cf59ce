"""Tachet des Combes, Pezeshki, Shabanian, Courville & Bengio, "On the Learning Dynamics of Deep
Neural Networks", arXiv:1809.06848 (2018): learning dynamics of properly initialised ReLU
classifiers on orthogonal features — independent modes, failed-training regions, sigmoidal error
curves, cross-entropy vs hinge, gradient starvation, depth and the multi-class extension.

Setup: `orthogonal_features`, `cooccurring_features`, `proper_init`, `proper_chain_init`,
`ReLUChain`. Theories (each `Theory.from_flow(flow)`, paired with `Theory.observables`):
`TwoLayerModes` (hinge), `TwoLayerModesCE`, `BalancedCEMargins`, `LinearCEMargins`,
`FrequencyStarvation`, `ChainModes`, `SoftmaxModes`. Single-unit results: `phase_region`
(`REGION_D/F/R/S`), `crossing_time`, `death_time`, `clock_delay`, `ensemble_error`, and the simulated
phase map `phase_map_margins`. Figures:
`FIGURES` and the `fig_*` functions (also `gflow reproduce tachet-…`).
"""

from ._models import ReLUChain as ReLUChain
from ._theory.tachet.chain import ChainModes as ChainModes
from ._theory.tachet.clocks import REGION_D as REGION_D
from ._theory.tachet.clocks import REGION_F as REGION_F
from ._theory.tachet.clocks import REGION_R as REGION_R
from ._theory.tachet.clocks import REGION_S as REGION_S
from ._theory.tachet.clocks import clock_delay as clock_delay
from ._theory.tachet.clocks import crossing_time as crossing_time
from ._theory.tachet.clocks import death_time as death_time
from ._theory.tachet.clocks import ensemble_error as ensemble_error
from ._theory.tachet.clocks import phase_region as phase_region
from ._theory.tachet.features import feature_modes as feature_modes
from ._theory.tachet.features import first_layer_strengths as first_layer_strengths
from ._theory.tachet.features import output_weights as output_weights
from ._theory.tachet.figures import fig_ce_vs_hinge as fig_ce_vs_hinge
from ._theory.tachet.figures import fig_depth as fig_depth
from ._theory.tachet.figures import fig_digits as fig_digits
from ._theory.tachet.figures import fig_error as fig_error
from ._theory.tachet.figures import fig_modes as fig_modes
from ._theory.tachet.figures import fig_phase as fig_phase
from ._theory.tachet.figures import fig_speed as fig_speed
from ._theory.tachet.figures import fig_starvation as fig_starvation
from ._theory.tachet.margins import BalancedCEMargins as BalancedCEMargins
from ._theory.tachet.margins import LinearCEMargins as LinearCEMargins
from ._theory.tachet.margins import linear_weights as linear_weights
from ._theory.tachet.phase_map import phase_map_margins as phase_map_margins
from ._theory.tachet.setup import cooccurring_features as cooccurring_features
from ._theory.tachet.setup import orthogonal_features as orthogonal_features
from ._theory.tachet.setup import proper_chain_init as proper_chain_init
from ._theory.tachet.setup import proper_init as proper_init
from ._theory.tachet.softmax import SoftmaxModes as SoftmaxModes
from ._theory.tachet.softmax import logit_gaps as logit_gaps
from ._theory.tachet.starvation import FrequencyStarvation as FrequencyStarvation
from ._theory.tachet.two_layer import TwoLayerModes as TwoLayerModes
from ._theory.tachet.two_layer import TwoLayerModesCE as TwoLayerModesCE
from ._theory.tachet.two_layer import TwoLayerUnits as TwoLayerUnits

#: The figures by name (`gflow reproduce NAME`): each `make(out_dir, small) -> [png paths]`.
FIGURES = {
    "tachet-modes": fig_modes,
    "tachet-error": fig_error,
    "tachet-phase": fig_phase,
    "tachet-speed": fig_speed,
    "tachet-ce-vs-hinge": fig_ce_vs_hinge,
    "tachet-starvation": fig_starvation,
    "tachet-depth": fig_depth,
    "tachet-digits": fig_digits,
}

__all__ = [
    # setup
    "orthogonal_features", "cooccurring_features", "proper_init", "proper_chain_init", "ReLUChain",
    "feature_modes",
    # theories
    "TwoLayerModes", "TwoLayerModesCE", "TwoLayerUnits", "BalancedCEMargins", "LinearCEMargins",
    "FrequencyStarvation", "ChainModes", "SoftmaxModes",
    # simulation observables the theories pair with
    "first_layer_strengths", "output_weights", "linear_weights", "logit_gaps",
    # single-unit results
    "phase_region", "REGION_D", "REGION_F", "REGION_R", "REGION_S", "crossing_time", "death_time",
    "clock_delay", "ensemble_error", "phase_map_margins",
    # figures
    "FIGURES", "fig_modes", "fig_error", "fig_phase", "fig_speed", "fig_ce_vs_hinge", "fig_starvation",
    "fig_depth", "fig_digits",
]
