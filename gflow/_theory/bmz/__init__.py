"""Berthier, Montanari & Zhou, "Learning time-scales in two-layers neural networks", Foundations
of Computational Mathematics 2024 (arXiv:2303.00055): single-index data and its Hermite series
(`hermite`, `setup`), the network observables (`observables`), the reduced particle flow
(`mean_field`), its plateau exit times (`time_scales`) and the figures (`figures`)."""
