"""Pellegrini & Biroli, "An analytic theory of shallow networks dynamics for hinge loss
classification", NeurIPS 2020 (arXiv:2006.11209): the mean-field hinge dynamics of one-hidden-layer
networks. `setup` (data, initial populations, the flow on the mean-field clock), `observables`
(the node observables), one module per theory, `width` (the finite-width study), `figures`."""
