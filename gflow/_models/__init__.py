"""Models: equinox Modules on one example whose inexact-array fields are the parameters."""

from .base import ACTIVATIONS as ACTIVATIONS
from .base import AbstractModel as AbstractModel
from .chain import ReLUChain as ReLUChain
from .linear import DeepLinear as DeepLinear
from .linearized import LinearizedModel as LinearizedModel
from .mlp import MLP as MLP
from .two_layer import TwoLayer as TwoLayer
