"""shimnn's modules, under torch.nn's names (each submodule's ``__all__`` is public here)."""

from . import activation, attention, container, dropout, flatten, linear, loss, module, sparse
from .activation import *  # noqa: F403
from .attention import *  # noqa: F403
from .container import *  # noqa: F403
from .dropout import *  # noqa: F403
from .flatten import *  # noqa: F403
from .linear import *  # noqa: F403
from .loss import *  # noqa: F403
from .module import *  # noqa: F403
from .sparse import *  # noqa: F403

__all__ = [
    *module.__all__, *container.__all__, *linear.__all__, *activation.__all__,
    *attention.__all__,
    *dropout.__all__, *flatten.__all__, *loss.__all__, *sparse.__all__,
]
