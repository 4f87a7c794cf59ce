"""The theory layer: `base.py` (AbstractTheory, AbstractReducedODE, compare), `_regime.py` (the
shared regime checks), one module or folder per paper. The public names are re-exported by the
paper namespaces (`gflow.saxe`, `gflow.tachet`, …)."""
