"""Check your own hand-written backward against torch: the checks shimnn runs on itself.

- :func:`assert_matches_torch`: the same module or function under shimnn and under torch, same
  inputs, same weights, a random upstream gradient; outputs, input gradients and parameter
  gradients compared bit for bit (or within an opt-in tolerance), with a report that names each
  differing tensor, how many elements differ, the largest differences and where, and whether a
  float64 rerun agrees (rounding) or not (a wrong formula).
- :func:`gradcheck`: central finite differences in float64 against shimnn's analytical
  Jacobian, with ``torch.autograd.gradcheck``'s arguments and message, without torch's autograd.
- :func:`assert_no_autograd`: a context manager in which any run of torch's autograd engine
  raises :class:`AutogradCalled`.
- :func:`assert_bitwise_equal` / :func:`compare_tensors`: one tensor against torch's;
  :func:`bitwise_identical`: tensors, floats and containers of them, bit for bit (identical
  NaNs are identical, ``-0.0`` is not ``0.0``).
- ``pytest -p shimnn.testing.plugin --shimnn`` (or ``pytest --shimnn`` with shimnn installed):
  run an existing torch test suite with shimnn serving ``torch.nn``, ``torch.nn.functional`` and
  ``torch.optim``.
"""

from ._gradcheck import GradcheckError, gradcheck
from ._guard import AutogradCalled, assert_no_autograd, assert_no_autograd_graph, torch_grad_fn
from ._parity import ParityResult, assert_matches_torch, random_like
from ._report import (
    ParityError,
    TensorDiff,
    assert_bitwise_equal,
    bits_equal,
    bitwise_identical,
    compare_tensors,
)

__all__ = [
    "AutogradCalled",
    "GradcheckError",
    "ParityError",
    "ParityResult",
    "TensorDiff",
    "assert_bitwise_equal",
    "assert_matches_torch",
    "assert_no_autograd",
    "assert_no_autograd_graph",
    "bits_equal",
    "bitwise_identical",
    "compare_tensors",
    "gradcheck",
    "random_like",
    "torch_grad_fn",
]
