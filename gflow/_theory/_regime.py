"""The one home of the regime checks every theory's `from_flow` starts with.

A theory covers a flow only if the model, loss, data, rates and sizes are the ones its derivation
assumes. `check_flow` tests the common ones and raises one message format, through
`gflow._validate.regime_error`: "<Theory> assumes <assumption>; got <what was given>. <fix>".
"""

from collections.abc import Callable, Sequence
from typing import Any

from .._data.base import Dataset
from .._validate import check_unpadded, regime_error


def _name_of(obj: Any) -> str:
    return getattr(obj, "__name__", None) or type(obj).__name__


def _as_tuple(x) -> tuple:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def check_flow(
    theory: str,
    flow,
    *,
    model: type | Sequence[type] | None = None,
    model_description: str | None = None,
    loss: Callable | Sequence[Callable] | None = None,
    loss_description: str | None = None,
    data: type | Sequence[type] | None = Dataset,
    rates: bool = False,
    padded: bool = False,
) -> None:
    """Refuse a flow outside a theory's regime, by name.

    - `model`: the accepted model class(es) (`isinstance`), described by `model_description`.
    - `loss`: the accepted loss function(s) (identity: gflow's loss functions, or the theory's own).
    - `data`: the accepted dataset class(es) (default: a finite `Dataset`; None: any dataset).
    - `rates`: whether per-parameter rates (`GradientFlow(rates=…)`) are covered (default: no).
    - `padded`: whether a padded flow (`active_width`, `Dataset.first(n)`) is covered (default: no;
      the fix named is `flow.unpadded()`).
    """
    if not padded:
        check_unpadded(theory, flow)
    if model is not None:
        kinds = _as_tuple(model)
        got = flow.model0
        if not isinstance(got, kinds):
            want = model_description or " or ".join(f"a {k.__name__} model" for k in kinds)
            raise regime_error(theory, want, f"got {type(got).__name__}")
    if loss is not None:
        losses = _as_tuple(loss)
        if not any(flow.loss is fn for fn in losses):
            want = loss_description or "the loss " + " or ".join(_name_of(fn) for fn in losses)
            raise regime_error(theory, want, f"got {_name_of(flow.loss)}")
    if data is not None:
        kinds = _as_tuple(data)
        if not isinstance(flow.data, kinds):
            names = " or ".join(("a finite Dataset" if k is Dataset else f"a {k.__name__}") for k in kinds)
            raise regime_error(theory, names, f"got {type(flow.data).__name__}")
    if not rates and flow.rates is not None:
        raise regime_error(theory, "equal rates for all parameters", "got `rates`",
                           "Drop `rates=` from the GradientFlow (the theory is derived for one rate).")

