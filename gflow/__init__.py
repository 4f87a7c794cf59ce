"""gflow: exact gradient-flow learning dynamics of neural networks, with theory on the same clock.

The core names live here (models, losses, data, the flow and its solvers, events, theory
interface, sweeps); each reproduced paper's names live in its own namespace:
`gflow.saxe`, `gflow.ntk`, `gflow.tachet`, `gflow.pellegrini_biroli`, `gflow.bmz`.
"""

from . import _losses as losses
from ._config import ConfigError as ConfigError
from ._config import load_config as load_config
from ._config import parse_config as parse_config
from ._data import AbstractDataset as AbstractDataset
from ._data import Dataset as Dataset
from ._data import InputOutputModes as InputOutputModes
from ._data import input_output_modes as input_output_modes
from ._data import teacher_student as teacher_student
from ._data import whitened_regression as whitened_regression
from ._discrete import solve_discrete as solve_discrete
from ._flow import OBSERVABLES as OBSERVABLES
from ._flow import AutoSwitch as AutoSwitch
from ._flow import FlowSolution as FlowSolution
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
from ._flow.events import edge_of_stability as edge_of_stability
from ._flow.modified import modified_flow as modified_flow
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
from ._plotting import plot_sweep as plot_sweep
from ._sweep import SweepError as SweepError
from ._sweep import SweepStoreError as SweepStoreError
from ._sweep import SweepWarning as SweepWarning
from ._sweep import first_crossing as first_crossing
from ._sweep import load_sweep as load_sweep
from ._sweep import sweep as sweep
from ._theory.base import AbstractReducedODE as AbstractReducedODE
from ._theory.base import AbstractTheory as AbstractTheory
from ._theory.base import compare as compare
from ._theory.base import relative_error as relative_error
from ._version import __version__ as __version__

# The papers, one public namespace each, imported on first use (`gflow.tachet.…`): a user of
# one paper never pays the import of the others.
_NAMESPACES = ("saxe", "ntk", "tachet", "pellegrini_biroli", "bmz", "central_flow", "special", "store")


def __getattr__(name: str):
    if name in _NAMESPACES:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'gflow' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_NAMESPACES))

__all__ = [
    # models and losses
    "AbstractModel", "DeepLinear", "TwoLayer", "MLP", "LinearizedModel",
    "losses", "squared_error", "hinge", "smooth_hinge", "quadratic_hinge", "logistic", "cross_entropy",
    # data
    "AbstractDataset", "Dataset", "InputOutputModes", "input_output_modes", "teacher_student",
    "whitened_regression",
    # the flow, its solvers, observables and events
    "GradientFlow", "solve_flow", "FlowSolution", "default_times", "OBSERVABLES", "outputs_at",
    "MatrixFreeImplicit", "AutoSwitch",
    "TrainingEvent", "loss_below", "gradient_norm_below", "margins_at_least", "all_correct",
    "edge_of_stability",
    # gradient descent on the flow's clock
    "solve_discrete", "modified_flow",
    # theory
    "AbstractTheory", "AbstractReducedODE", "compare", "relative_error", "plot_overlay",
    # sweeps
    "sweep", "load_sweep", "plot_sweep", "first_crossing", "load_config", "parse_config", "SweepError", "SweepWarning",
    "SweepStoreError", "ConfigError",
    # paper namespaces
    "saxe", "ntk", "tachet", "pellegrini_biroli", "bmz", "central_flow", "special", "store",
    "__version__",
]

# JAX's persistent compilation cache, on by default in a user cache directory (a rerun of the
# same sweep or CLI command compiles nothing); opt out with GFLOW_NO_COMPILATION_CACHE=1.
from ._flow.solvers import enable_compilation_cache as _enable_compilation_cache  # noqa: E402

_enable_compilation_cache()
