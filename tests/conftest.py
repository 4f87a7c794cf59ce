import os

os.environ.setdefault("MPLBACKEND", "Agg")
# gflow turns on JAX's persistent compilation cache at import; the tests keep theirs in a
# temporary directory of this run (shared with the CLI subprocesses), never in the user's home.
if "GFLOW_COMPILATION_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["GFLOW_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="gflow-test-jax-cache-")

# The test problems are tiny: XLA's compile, not the run, is most of the suite's time, and LLVM's
# optimisation passes are a fifth of that compile (measured: 15–20 % less CPU per theory row at
# level 0). The level changes code speed, not the arithmetic's semantics (no fast-math either way);
# the benchmarks and user runs keep XLA's default.
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

import jax
import jax.random as jr
import pytest

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture
def getkey():
    """A fresh PRNG key per call (deterministic per test)."""
    state = {"key": jr.PRNGKey(5678)}

    def _getkey():
        state["key"], sub = jr.split(state["key"])
        return sub

    return _getkey


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: full-size check outside `make test`; run with GFLOW_SLOW=1")


def pytest_collection_modifyitems(config, items):
    """Skip `@pytest.mark.slow` tests unless GFLOW_SLOW=1."""
    if os.environ.get("GFLOW_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set GFLOW_SLOW=1 to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
