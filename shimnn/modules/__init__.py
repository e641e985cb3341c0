"""shimnn's modules, under torch.nn's names (each submodule's ``__all__`` is public here)."""

from . import (
    activation,
    attention,
    batchnorm,
    container,
    conv,
    dropout,
    flatten,
    instancenorm,
    linear,
    loss,
    module,
    normalization,
    padding,
    pooling,
    rnn,
    sparse,
    transformer,
    upsampling,
)
from .activation import *  # noqa: F403
from .attention import *  # noqa: F403
from .batchnorm import *  # noqa: F403
from .container import *  # noqa: F403
from .conv import *  # noqa: F403
from .dropout import *  # noqa: F403
from .flatten import *  # noqa: F403
from .instancenorm import *  # noqa: F403
from .linear import *  # noqa: F403
from .loss import *  # noqa: F403
from .module import *  # noqa: F403
from .normalization import *  # noqa: F403
from .padding import *  # noqa: F403
from .pooling import *  # noqa: F403
from .rnn import *  # noqa: F403
from .sparse import *  # noqa: F403
from .transformer import *  # noqa: F403
from .upsampling import *  # noqa: F403

__all__ = [
    *module.__all__, *container.__all__, *linear.__all__, *activation.__all__,
    *attention.__all__, *dropout.__all__, *flatten.__all__, *loss.__all__, *conv.__all__,
    *pooling.__all__,
    *batchnorm.__all__, *instancenorm.__all__, *normalization.__all__, *padding.__all__,
    *upsampling.__all__, *sparse.__all__, *rnn.__all__, *transformer.__all__,
]

import torch as _torch  # noqa: E402

from .. import _graph  # noqa: E402

module.CALL_CONTEXT = (_graph.TrackedTensor, _graph.Node, container.Sequential, loss.MSELoss,
                       vars(_torch.nn.modules.module), _graph.refuse_recording_modes,
                       _graph.refuse_transforms, _graph.edge, vars(_graph._forward_ad),
                       _graph._functorch_active, _graph._any_autocast)
