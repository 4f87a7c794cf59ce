"""Pellegrini & Biroli 2020 (arXiv:2006.11209): mean-field theory of shallow networks trained with the hinge loss."""

from ._theory.pellegrini_biroli import MeanFieldHinge as MeanFieldHinge
from ._theory.pellegrini_biroli import MeanFieldHingeFiniteP as MeanFieldHingeFiniteP
from ._theory.pellegrini_biroli import LinearMeanFieldMoments as LinearMeanFieldMoments
from ._theory.pellegrini_biroli import WidthSweep as WidthSweep
from ._theory.pellegrini_biroli import finite_width_sweep as finite_width_sweep
from ._theory.pellegrini_biroli import mean_field_time_scale as mean_field_time_scale
from ._theory.pellegrini_biroli import mean_field_hinge_flow as mean_field_hinge_flow
from ._theory.pellegrini_biroli import hinge_with_margin as hinge_with_margin

__all__ = [
    "MeanFieldHinge",
    "MeanFieldHingeFiniteP",
    "LinearMeanFieldMoments",
    "WidthSweep",
    "finite_width_sweep",
    "mean_field_time_scale",
    "mean_field_hinge_flow",
    "hinge_with_margin",
]
