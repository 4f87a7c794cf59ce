"""Jacot, Gabriel & Hongler 2018; Lee et al. 2019: the neural tangent kernel and the linearized flow."""
