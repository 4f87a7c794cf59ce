"""Pellegrini & Biroli, "An analytic theory of shallow networks dynamics for hinge loss
classification", NeurIPS 2020 (arXiv:2006.11209): mean-field theory of one-hidden-layer networks
trained with the linear hinge, and everything needed to reproduce its figures.

Convention: x ~ N(0, I_d), y = sign(ŵ*·x); f(x) = (α/M) Σ_i a_i σ(w_i·x/√d); the flow of
`mean_field_hinge_flow` runs on the mean-field clock τ = α t / M.
"""

from ._theory.pellegrini_biroli.figures import fig1 as fig1
from ._theory.pellegrini_biroli.figures import hyperbolas as hyperbolas
from ._theory.pellegrini_biroli.figures import overfitting as overfitting
from ._theory.pellegrini_biroli.figures import rich_lazy as rich_lazy
from ._theory.pellegrini_biroli.figures import slowing_down as slowing_down
from ._theory.pellegrini_biroli.figures import width as width
from ._theory.pellegrini_biroli.finite_p import MeanFieldHingeFiniteP as MeanFieldHingeFiniteP
from ._theory.pellegrini_biroli.finite_p import frozen_dataset_gamma as frozen_dataset_gamma
from ._theory.pellegrini_biroli.linear_moments import LinearMeanFieldMoments as LinearMeanFieldMoments
from ._theory.pellegrini_biroli.mean_field import MeanFieldHinge as MeanFieldHinge
from ._theory.pellegrini_biroli.observables import a as a
from ._theory.pellegrini_biroli.observables import balance as balance
from ._theory.pellegrini_biroli.observables import node_observables as node_observables
from ._theory.pellegrini_biroli.observables import unsatisfied_fraction as unsatisfied_fraction
from ._theory.pellegrini_biroli.observables import v as v
from ._theory.pellegrini_biroli.observables import w_par as w_par
from ._theory.pellegrini_biroli.observables import w_perp as w_perp
from ._theory.pellegrini_biroli.setup import hinge_with_margin as hinge_with_margin
from ._theory.pellegrini_biroli.setup import mean_field_hinge_flow as mean_field_hinge_flow
from ._theory.pellegrini_biroli.setup import mean_field_time_scale as mean_field_time_scale
from ._theory.pellegrini_biroli.setup import separable_gaussian as separable_gaussian
from ._theory.pellegrini_biroli.setup import symmetric_population as symmetric_population
from ._theory.pellegrini_biroli.setup import teacher_of as teacher_of
from ._theory.pellegrini_biroli.width import WidthSweep as WidthSweep
from ._theory.pellegrini_biroli.width import finite_width_sweep as finite_width_sweep
from ._theory.pellegrini_biroli.width import fit_power_law as fit_power_law

__all__ = [
    # setup
    "separable_gaussian",
    "symmetric_population",
    "hinge_with_margin",
    "mean_field_hinge_flow",
    "mean_field_time_scale",
    "teacher_of",
    # observables (t, params, flow)
    "a",
    "w_par",
    "w_perp",
    "balance",
    "v",
    "unsatisfied_fraction",
    "node_observables",
    # theories
    "MeanFieldHinge",
    "MeanFieldHingeFiniteP",
    "LinearMeanFieldMoments",
    "frozen_dataset_gamma",
    # the finite-width study
    "finite_width_sweep",
    "WidthSweep",
    "fit_power_law",
    # figures
    "fig1",
    "hyperbolas",
    "rich_lazy",
    "slowing_down",
    "width",
    "overfitting",
]
