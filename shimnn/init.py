"""``torch.nn.init`` for shimnn: torch's own initialisation functions, re-exported.

They are the very same function objects as ``torch.nn.init``'s. They fill tensors in place
under ``torch.no_grad()`` and draw from torch's global generator exactly as torch does, so on
shimnn parameters they give torch's values for the same seed and leave the generator in
torch's state. A shimnn ``Parameter`` routes them through ``__torch_function__``, which runs
them as torch would (an initialisation is never differentiated).

Use ``import shimnn.init`` (or ``from shimnn import init``) where a script has
``torch.nn.init``. Names not listed here resolve to ``torch.nn.init``'s.
"""

from __future__ import annotations

from typing import Any

import torch.nn.init as _init
from torch.nn.init import _calculate_correct_fan as _calculate_correct_fan
from torch.nn.init import _calculate_fan_in_and_fan_out as _calculate_fan_in_and_fan_out
from torch.nn.init import (
    calculate_gain,
    constant,
    constant_,
    dirac,
    dirac_,
    eye,
    eye_,
    kaiming_normal,
    kaiming_normal_,
    kaiming_uniform,
    kaiming_uniform_,
    normal,
    normal_,
    ones_,
    orthogonal,
    orthogonal_,
    sparse,
    sparse_,
    trunc_normal_,
    uniform,
    uniform_,
    xavier_normal,
    xavier_normal_,
    xavier_uniform,
    xavier_uniform_,
    zeros_,
)

__all__ = [
    "calculate_gain",
    "uniform_",
    "normal_",
    "trunc_normal_",
    "constant_",
    "ones_",
    "zeros_",
    "eye_",
    "dirac_",
    "xavier_uniform_",
    "xavier_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "orthogonal_",
    "sparse_",
    "uniform",
    "normal",
    "constant",
    "eye",
    "dirac",
    "xavier_uniform",
    "xavier_normal",
    "kaiming_uniform",
    "kaiming_normal",
    "orthogonal",
    "sparse",
]

def __getattr__(name: str) -> Any:
    return getattr(_init, name)
