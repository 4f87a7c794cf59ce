"""Saxe, McClelland & Ganguli 2013 (arXiv:1312.6120): exact mode dynamics of deep linear networks.

`DeepLinearModes` (the closed forms, seeded by `DeepLinearModes.from_flow(flow)`), the data's
modes at their numerical rank (`data_modes`, `rank_rtol`), the simulation observables that pair
with the theory (`mode_strengths`, `mode_projection`), the figures' problem (`saxe_problem`) and
its theory-plus-simulation (`saxe_solution`).
"""

from ._theory.saxe.figures import saxe_solution as saxe_solution
from ._theory.saxe.modes import DeepLinearModes as DeepLinearModes
from ._theory.saxe.observables import data_modes as data_modes
from ._theory.saxe.observables import mode_projection as mode_projection
from ._theory.saxe.observables import mode_strengths as mode_strengths
from ._theory.saxe.observables import rank_rtol as rank_rtol
from ._theory.saxe.setup import saxe_problem as saxe_problem

__all__ = [
    "DeepLinearModes",
    "data_modes",
    "rank_rtol",
    "mode_strengths",
    "mode_projection",
    "saxe_problem",
    "saxe_solution",
]
