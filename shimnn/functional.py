"""``torch.nn.functional``'s names that shimnn differentiates by hand.

The public surface only: each formula lives with its family in :mod:`shimnn.ops` (linear,
activation, loss...), computed with the ATen kernel torch itself uses and differentiated with
the kernels torch's own derivative formulas use, in the same order, so values and gradients are
bit-identical to torch on CPU. Each op's docstring states shapes and the derivative
(``Backward:``).

Called in grad mode on a tensor that needs a gradient, an op returns a
:class:`~shimnn.TrackedTensor` that records its backward; otherwise it records nothing. Any other
``torch.nn.functional`` name resolves to torch's own: its value is computed, and a gradient that
would flow through it raises an error naming it.
"""

from __future__ import annotations

from typing import Any

import torch

from .ops import activation as _activation
from .ops import attention as _attention
from .ops import conv as _conv
from .ops import embedding as _embedding
from .ops import index as _index
from .ops import linear as _linear
from .ops import loss as _loss
from .ops import norm as _norm
from .ops import pad as _pad
from .ops import pool as _pool
from .ops import vision as _vision
from .ops.activation import *  # noqa: F403
from .ops.attention import *  # noqa: F403
from .ops.conv import *  # noqa: F403
from .ops.embedding import *  # noqa: F403
from .ops.index import *  # noqa: F403
from .ops.linear import *  # noqa: F403
from .ops.loss import *  # noqa: F403
from .ops.norm import *  # noqa: F403
from .ops.pad import *  # noqa: F403
from .ops.pool import *  # noqa: F403
from .ops.vision import *  # noqa: F403

__all__ = sorted([*_linear.__all__, *_activation.__all__, *_attention.__all__, *_loss.__all__,
                  *_embedding.__all__, *_index.__all__, *_conv.__all__, *_pool.__all__,
                  *_norm.__all__, *_pad.__all__, *_vision.__all__])


def __getattr__(name: str) -> Any:
    # torch.nn.functional's other names: computed by torch, and a gradient through them raises.
    return getattr(torch.nn.functional, name)
