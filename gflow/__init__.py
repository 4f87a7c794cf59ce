"""gflow: exact gradient-flow learning dynamics of neural networks, with theory on the same clock."""

from . import _losses as losses
from ._data import AbstractDataset as AbstractDataset
from ._data import Dataset as Dataset
from ._data import InputOutputModes as InputOutputModes
from ._data import input_output_modes as input_output_modes
from ._data import teacher_student as teacher_student
from ._data import whitened_regression as whitened_regression
from ._flow import OBSERVABLES as OBSERVABLES
from ._flow import FlowSolution as FlowSolution
from ._flow import AutoSwitch as AutoSwitch
from ._flow import GradientFlow as GradientFlow
from ._flow import MatrixFreeImplicit as MatrixFreeImplicit
from ._flow import TrainingEvent as TrainingEvent
from ._flow import all_correct as all_correct
from ._flow import default_times as default_times
from ._flow import gradient_norm_below as gradient_norm_below
from ._flow import loss_below as loss_below
from ._flow import margins_at_least as margins_at_least
from ._flow import outputs_at as outputs_at
from ._flow import solve_flow as solve_flow
from ._losses import cross_entropy as cross_entropy
from ._losses import hinge as hinge
from ._losses import logistic as logistic
from ._losses import quadratic_hinge as quadratic_hinge
from ._losses import smooth_hinge as smooth_hinge
from ._losses import squared_error as squared_error
from ._models import MLP as MLP
from ._models import AbstractModel as AbstractModel
from ._models import DeepLinear as DeepLinear
from ._models import LinearizedModel as LinearizedModel
from ._models import TwoLayer as TwoLayer
from ._plotting import plot_overlay as plot_overlay
from ._theory import AbstractReducedODE as AbstractReducedODE
from ._theory import AbstractTheory as AbstractTheory
from ._theory import DeepLinearModes as DeepLinearModes
from ._theory import LinearizedMSE as LinearizedMSE
from ._theory import compare as compare
from ._theory import empirical_ntk as empirical_ntk
from ._theory import relative_error as relative_error

# Berthier–Montanari–Zhou 2023: single-index data, reduced particle flow, time scales
from ._data import HermiteSeries as HermiteSeries
from ._data import SingleIndex as SingleIndex
from ._data import alignments as alignments
from ._data import hermite_coefficients as hermite_coefficients
from ._data import hermite_functions as hermite_functions
from ._data import layer_rates as layer_rates
from ._data import order_parameters as order_parameters
from ._data import quantile_weights as quantile_weights
from ._data import second_moment as second_moment
from ._data import single_index_network as single_index_network
from ._data import span_coordinates as span_coordinates
from ._theory import SingleIndexMeanField as SingleIndexMeanField
from ._theory import fit_time_scale as fit_time_scale

# Sweeps (issue 3): many inits x a grid in one compile, resumable stores, TOML configs
from ._config import ConfigError as ConfigError
from ._config import load_config as load_config
from ._store import SweepStoreError as SweepStoreError
from ._sweep import SweepError as SweepError
from ._sweep import SweepWarning as SweepWarning
from ._sweep import load_sweep as load_sweep
from ._sweep import plot_sweep as plot_sweep
from ._sweep import sweep as sweep

# Pellegrini & Biroli 2020 (mean-field hinge)
from ._theory import MeanFieldHinge as MeanFieldHinge
from ._theory import MeanFieldHingeFiniteP as MeanFieldHingeFiniteP
from ._theory import LinearMeanFieldMoments as LinearMeanFieldMoments
from ._theory import WidthSweep as WidthSweep
from ._theory import finite_width_sweep as finite_width_sweep
from ._theory import mean_field_time_scale as mean_field_time_scale
from ._theory import mean_field_hinge_flow as mean_field_hinge_flow
from ._theory import hinge_with_margin as hinge_with_margin

# Tachet des Combes et al. 2018 (independent modes, CE vs hinge, failed-training map)
from ._data import cooccurring_features as cooccurring_features
from ._data import orthogonal_features as orthogonal_features
from ._data import proper_chain_init as proper_chain_init
from ._data import proper_init as proper_init
from ._models import ReLUChain as ReLUChain
from ._theory import BalancedCEMargins as BalancedCEMargins
from ._theory import SoftmaxModes as SoftmaxModes
from ._theory import ChainModes as ChainModes
from ._theory import FrequencyStarvation as FrequencyStarvation
from ._theory import LinearCEMargins as LinearCEMargins
from ._theory import TwoLayerModes as TwoLayerModes
from ._theory import TwoLayerModesCE as TwoLayerModesCE
from ._theory import clock_delay as clock_delay
from ._theory import crossing_time as crossing_time
from ._theory import death_time as death_time
from ._theory import ensemble_error as ensemble_error
from ._theory import phase_region as phase_region

__version__ = "0.1.0"

# JAX's persistent compilation cache, on by default in a user cache directory (a rerun of the
# same sweep or CLI command compiles nothing); opt out with GFLOW_NO_COMPILATION_CACHE=1.
from ._flow.solvers import enable_compilation_cache as _enable_compilation_cache

_enable_compilation_cache()
