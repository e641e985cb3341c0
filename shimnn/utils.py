"""``torch.nn.utils`` for shimnn models (``nn.utils`` after ``import shimnn as nn``).

Every name is torch's own (they read and write ``.grad`` and parameters, which shimnn fills as
torch does), except :func:`clip_grad_norm_`, which runs torch's kernels in torch's order from one
compiled call where the native fast paths are in use.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch.nn.utils as _torch_utils
from torch import Tensor

from . import _native

__all__ = ["clip_grad_norm_"]

_torch_clip_grad_norm_ = _torch_utils.clip_grad_norm_


def clip_grad_norm_(parameters: Tensor | Iterable[Tensor], max_norm: float,
                    norm_type: float = 2.0, error_if_nonfinite: bool = False,
                    foreach: bool | None = None) -> Tensor:
    """``torch.nn.utils.clip_grad_norm_``: scale the gradients by
    ``min(max_norm / (total_norm + 1e-6), 1)``, ``total_norm`` the ``norm_type``-norm of all
    gradients together; returns ``total_norm``. Where every gradient is a dense CPU float32 or
    float64 tensor of one dtype (and ``foreach`` is None, ``error_if_nonfinite`` False), torch's
    own kernels run in its order from C++ (``clip_grad_norm`` in ``shimnn/csrc/native.cpp``);
    otherwise torch's function runs."""
    native = _native.get()
    if native is not None and foreach is None and not error_if_nonfinite:
        params = ([parameters] if isinstance(parameters, Tensor)
                  else parameters if type(parameters) is list else list(parameters))
        total = native.clip_grad_norm(params, float(max_norm), float(norm_type))
        if total is not None:
            return total  # type: ignore[no-any-return]
        if params or type(parameters) is list:  # (an exhausted generator: torch's warning)
            parameters = params
    return _torch_clip_grad_norm_(parameters, max_norm, norm_type, error_if_nonfinite, foreach)


def __getattr__(name: str) -> Any:
    return getattr(_torch_utils, name)

