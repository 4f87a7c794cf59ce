"""Tachet des Combes, Pezeshki, Shabanian, Courville & Bengio, "On the Learning Dynamics of Deep
Neural Networks", arXiv:1809.06848 (2018): independent modes of properly initialised ReLU
classifiers on orthogonal features. Public names: `gflow.tachet`."""
