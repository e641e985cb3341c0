"""shimnn's optimizers, under torch.optim's names.

A name shimnn does not implement yet resolves to torch.optim's (optimizers only read ``.grad``,
which shimnn fills), so ``import shimnn.optim as optim`` never breaks a script.
"""

from typing import Any

import torch.optim
from torch.optim import Optimizer, lr_scheduler

from .adagrad import Adagrad
from .adam import Adam, AdamW
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Optimizer", "lr_scheduler"]


def __getattr__(name: str) -> Any:
    return getattr(torch.optim, name)
