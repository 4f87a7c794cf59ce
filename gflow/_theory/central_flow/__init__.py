"""Cohen, Damian et al. 2024/2025 (arXiv:2410.24206): central flows at the edge of stability."""
