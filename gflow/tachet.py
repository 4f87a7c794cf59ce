"""Tachet des Combes, Pezeshki, Shabanian, Courville & Bengio 2018 (arXiv:1809.06848): learning dynamics of properly initialised ReLU classifiers on orthogonal features."""

from ._theory.tachet import TwoLayerModes as TwoLayerModes
from ._theory.tachet import TwoLayerModesCE as TwoLayerModesCE
from ._theory.tachet import BalancedCEMargins as BalancedCEMargins
from ._theory.tachet import LinearCEMargins as LinearCEMargins
from ._theory.tachet import FrequencyStarvation as FrequencyStarvation
from ._theory.tachet import ChainModes as ChainModes
from ._theory.tachet import SoftmaxModes as SoftmaxModes
from ._theory.tachet import clock_delay as clock_delay
from ._theory.tachet import crossing_time as crossing_time
from ._theory.tachet import death_time as death_time
from ._theory.tachet import ensemble_error as ensemble_error
from ._theory.tachet import phase_region as phase_region
from ._data.tachet import cooccurring_features as cooccurring_features
from ._data.tachet import orthogonal_features as orthogonal_features
from ._data.tachet import proper_chain_init as proper_chain_init
from ._data.tachet import proper_init as proper_init
from ._models import ReLUChain as ReLUChain

__all__ = [
    "TwoLayerModes",
    "TwoLayerModesCE",
    "BalancedCEMargins",
    "LinearCEMargins",
    "FrequencyStarvation",
    "ChainModes",
    "SoftmaxModes",
    "clock_delay",
    "crossing_time",
    "death_time",
    "ensemble_error",
    "phase_region",
    "cooccurring_features",
    "orthogonal_features",
    "proper_chain_init",
    "proper_init",
    "ReLUChain",
]
