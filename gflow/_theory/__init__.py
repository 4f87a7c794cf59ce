from .base import AbstractReducedODE as AbstractReducedODE
from .base import AbstractTheory as AbstractTheory
from .base import compare as compare
from .base import relative_error as relative_error
from .ntk import LinearizedMSE as LinearizedMSE
from .ntk import empirical_ntk as empirical_ntk
from .saxe import DeepLinearModes as DeepLinearModes
