"""Saxe, McClelland & Ganguli 2013 (arXiv:1312.6120): exact mode dynamics of deep linear networks."""
