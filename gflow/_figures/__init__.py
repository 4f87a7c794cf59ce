"""Figure code for `gflow reproduce` and the notebooks (thin wrappers over the public API)."""
