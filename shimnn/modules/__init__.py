"""shimnn's modules, under torch.nn's names."""

from .activation import ReLU, Tanh
from .container import Sequential
from .linear import Linear
from .loss import MSELoss
from .module import Module, Parameter

__all__ = ["Linear", "MSELoss", "Module", "Parameter", "ReLU", "Sequential", "Tanh"]
