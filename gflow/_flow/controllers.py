"""The base of gflow's step-size controller wrappers (divergence guard, stiffness monitor, the
slot runner's resumable controller): each wraps an adaptive controller `inner` and adds to its
state; tolerances, norm and direction handling are those of `inner`."""

import diffrax
import equinox as eqx
from equinox import AbstractVar


class AbstractWrappedController(diffrax.AbstractAdaptiveStepSizeController):
    """An adaptive controller that delegates its tolerances and norm to `inner` (so an implicit
    solver's root finder still reads the PID's rtol/atol through it)."""

    inner: AbstractVar[diffrax.AbstractAdaptiveStepSizeController]

    @property
    def rtol(self):
        return self.inner.rtol

    @property
    def atol(self):
        return self.inner.atol

    @property
    def norm(self):
        return self.inner.norm

    def wrap(self, direction):
        return eqx.tree_at(lambda s: s.inner, self, self.inner.wrap(direction))
