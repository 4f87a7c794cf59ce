from .base import AbstractDataset as AbstractDataset
from .base import Dataset as Dataset
from .base import InputOutputModes as InputOutputModes
from .base import input_output_modes as input_output_modes
from .generators import teacher_student as teacher_student
from .generators import whitened_regression as whitened_regression
