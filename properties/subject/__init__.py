"""The subject room: any model seen through one canonical form, and every way of calling it.

- :mod:`.canonical`: :class:`Subject` and :func:`make_subject` (grid, order, convention, the
  native <-> canonical call, structured outputs, diagnoses of a model that raised);
- :mod:`.layout`: layouts (``BCT``, ``BT``, ``BCT->BTC``...), parsed and inferred;
- :mod:`.adapters`: what an output that is not one prediction per position is, and the hook
  that fixes it;
- :mod:`.batching`: models that run at one batch size only;
- :mod:`.calls`: one forward pass in a known mode and RNG state, float64 copies, input checks;
- :mod:`.memory`: the measured bytes of a pass, and the memory budget.

Nothing here knows about evidence or verdicts.
"""

from properties.subject.canonical import CONVENTIONS, NAMED_ORDERS, Subject, make_subject

__all__ = ["CONVENTIONS", "NAMED_ORDERS", "Subject", "make_subject"]
