"""Recurrent layers and cells: ``RNN``, ``LSTM``, ``GRU``, ``RNNCell``, ``LSTMCell``, ``GRUCell``.

Each class is torch's own class as well (``shimnn.LSTM`` subclasses ``torch.nn.LSTM``): the
constructor, its validation and warnings, the parameters (``weight_ih_l0``, ...,
``weight_hr_l0`` with projections, ``_reverse`` for the second direction) created and drawn
from the RNG in torch's order, ``_flat_weights``, ``flatten_parameters`` (a no-op on CPU, as
torch's), ``check_forward_args``, ``extra_repr`` and ``state_dict`` are torch's code. Only
``forward`` is shimnn's: torch's, line for line, with its tensor operations (``unsqueeze``,
``index_select`` for packed sequences, ``_VF.lstm``...) replaced by shimnn's hand-written ones,
so the module's input may be a plain tensor that requires grad.

Backward: see :mod:`shimnn.ops.rnn` (backpropagation through time on torch's kernels).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence

from ..ops import index as I
from ..ops import rnn as F
from ..ops import shape as S
from .module import Module

__all__ = ["GRU", "GRUCell", "LSTM", "LSTMCell", "RNN", "RNNBase", "RNNCell", "RNNCellBase"]


def _permute(hx: Tensor, permutation: Tensor | None) -> Tensor:
    """torch's ``_apply_permutation``: ``hx.index_select(1, permutation)``, by shimnn's op."""
    return hx if permutation is None else I.index_select(hx, 1, permutation)


class RNNBase(Module, torch.nn.RNNBase):
    """torch's ``RNNBase`` (construction, flat weights, checks) for shimnn's RNN, LSTM, GRU."""

    __init__ = torch.nn.RNNBase.__init__  # torch's: parameters, checks, RNG draws

    def permute_hidden(self, hx: Tensor, permutation: Tensor | None) -> Tensor:
        return _permute(hx, permutation)


def _zeros(layers: int, batch: Any, size: int, like: Tensor) -> Tensor:
    return torch.zeros(layers, batch, size, dtype=like.dtype, device=like.device)


class _OneHidden(RNNBase):
    """``forward`` of torch's ``RNN`` and ``GRU`` (one hidden state)."""

    _name: str

    def _layer_fn(self) -> Any:
        raise NotImplementedError

    def forward(self, input: Any, hx: Tensor | None = None) -> Any:
        self._update_flat_weights()
        num_directions = 2 if self.bidirectional else 1
        orig_input = input
        if isinstance(orig_input, PackedSequence):
            input, batch_sizes, sorted_indices, unsorted_indices = input
            max_batch_size = batch_sizes[0]
            if hx is None:
                hx = _zeros(self.num_layers * num_directions, max_batch_size, self.hidden_size,
                            input)
            else:
                hx = self.permute_hidden(hx, sorted_indices)
        else:
            batch_sizes = None
            if input.dim() not in (2, 3):
                raise ValueError(
                    f"{self._name}: Expected input to be 2D or 3D, got {input.dim()}D "
                    f"{'tensor ' if self._name == 'RNN' else ''}instead")
            is_batched = input.dim() == 3
            batch_dim = 0 if self.batch_first else 1
            if not is_batched:
                input = S.unsqueeze(input, batch_dim)
                if hx is not None:
                    if hx.dim() != 2:
                        raise RuntimeError(
                            f"For unbatched 2-D input, hx should also be 2-D but got "
                            f"{hx.dim()}-D tensor")
                    hx = S.unsqueeze(hx, 1)
            elif hx is not None and hx.dim() != 3:
                raise RuntimeError(
                    f"For batched 3-D input, hx should also be 3-D but got {hx.dim()}-D tensor")
            max_batch_size = input.size(0) if self.batch_first else input.size(1)
            sorted_indices = None
            unsorted_indices = None
            if hx is None:
                hx = _zeros(self.num_layers * num_directions, max_batch_size, self.hidden_size,
                            input)
            else:
                hx = self.permute_hidden(hx, sorted_indices)
        self.check_forward_args(input, hx, batch_sizes)
        layer = self._layer_fn()
        if batch_sizes is None:
            result = layer(input, hx, self._flat_weights, self.bias, self.num_layers,
                           self.dropout, self.training, self.bidirectional, self.batch_first)
        else:
            result = layer(input, batch_sizes, hx, self._flat_weights, self.bias,
                           self.num_layers, self.dropout, self.training, self.bidirectional)
        output, hidden = result[0], result[1]
        if isinstance(orig_input, PackedSequence):
            output_packed = PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices)
            return output_packed, self.permute_hidden(hidden, unsorted_indices)
        if not is_batched:
            output = S.squeeze(output, batch_dim)
            hidden = S.squeeze(hidden, 1)
        return output, self.permute_hidden(hidden, unsorted_indices)


class RNN(_OneHidden, torch.nn.RNN):
    r"""Elman RNN: :math:`h_t = \tanh(x_t W_{ih}^T + b_{ih} + h_{t-1} W_{hh}^T + b_{hh})` (or
    ReLU), over ``num_layers`` layers and one or two directions; torch's signature
    ``RNN(input_size, hidden_size, num_layers=1, nonlinearity='tanh', bias=True,
    batch_first=False, dropout=0.0, bidirectional=False, device=None, dtype=None)``.

    Shape: input ``(L, N, H_in)`` (``(N, L, H_in)`` with ``batch_first``, ``(L, H_in)``
    unbatched, or a ``PackedSequence``); h_0 ``(D num_layers, N, H_out)``. Returns
    ``output, h_n``.

    Backward: through time, see :func:`shimnn.ops.rnn.rnn_tanh`.
    """

    __init__ = torch.nn.RNN.__init__

    _name = "RNN"

    def _layer_fn(self) -> Any:
        if self.mode == "RNN_TANH":
            return F.rnn_tanh
        if self.mode == "RNN_RELU":
            return F.rnn_relu
        raise AssertionError(f"mode must be RNN_TANH or RNN_RELU, got {self.mode}")


class GRU(_OneHidden, torch.nn.GRU):
    r"""Gated recurrent unit layers; torch's signature ``GRU(input_size, hidden_size,
    num_layers=1, bias=True, batch_first=False, dropout=0.0, bidirectional=False, device=None,
    dtype=None)``. Per step: :math:`r, z = \sigma(\cdot)`, :math:`n = \tanh(W_{in} x + b_{in} +
    r (W_{hn} h + b_{hn}))`, :math:`h' = (1 - z) n + z h`.

    Shape: as :class:`RNN`. Returns ``output, h_n``.

    Backward: through time, see :func:`shimnn.ops.rnn.gru`.
    """

    __init__ = torch.nn.GRU.__init__

    _name = "GRU"

    def _layer_fn(self) -> Any:
        return F.gru


class LSTM(RNNBase, torch.nn.LSTM):
    r"""Long short-term memory layers, with optional projections; torch's signature
    ``LSTM(input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
    bidirectional=False, proj_size=0, device=None, dtype=None)``.

    Shape: input as :class:`RNN`; ``(h_0, c_0)`` of shapes ``(D num_layers, N, H_out)`` and
    ``(D num_layers, N, H_cell)`` (``H_out = proj_size`` if set). Returns
    ``output, (h_n, c_n)``.

    Backward: through time, see :func:`shimnn.ops.rnn.lstm` (oneDNN's kernels where torch's
    CPU path takes them: float32 without projections).
    """

    __init__ = torch.nn.LSTM.__init__

    def permute_hidden(  # type: ignore[override]
        self, hx: tuple[Tensor, Tensor], permutation: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        if permutation is None:
            return hx
        return _permute(hx[0], permutation), _permute(hx[1], permutation)

    def forward(self, input: Any, hx: Any = None) -> Any:
        self._update_flat_weights()
        orig_input = input
        batch_sizes = None
        num_directions = 2 if self.bidirectional else 1
        real_hidden_size = self.proj_size if self.proj_size > 0 else self.hidden_size
        if isinstance(orig_input, PackedSequence):
            input, batch_sizes, sorted_indices, unsorted_indices = input
            max_batch_size = batch_sizes[0]
            if hx is None:
                hx = (_zeros(self.num_layers * num_directions, max_batch_size,
                             real_hidden_size, input),
                      _zeros(self.num_layers * num_directions, max_batch_size, self.hidden_size,
                             input))
            else:
                hx = self.permute_hidden(hx, sorted_indices)
        else:
            if input.dim() not in (2, 3):
                raise ValueError(
                    f"LSTM: Expected input to be 2D or 3D, got {input.dim()}D instead")
            is_batched = input.dim() == 3
            batch_dim = 0 if self.batch_first else 1
            if not is_batched:
                input = S.unsqueeze(input, batch_dim)
            max_batch_size = input.size(0) if self.batch_first else input.size(1)
            sorted_indices = None
            unsorted_indices = None
            if hx is None:
                hx = (_zeros(self.num_layers * num_directions, max_batch_size,
                             real_hidden_size, input),
                      _zeros(self.num_layers * num_directions, max_batch_size, self.hidden_size,
                             input))
                self.check_forward_args(input, hx, batch_sizes)
            else:
                if is_batched:
                    if hx[0].dim() != 3 or hx[1].dim() != 3:
                        raise RuntimeError(
                            "For batched 3-D input, hx and cx should also be 3-D but got "
                            f"({hx[0].dim()}-D, {hx[1].dim()}-D) tensors")
                else:
                    if hx[0].dim() != 2 or hx[1].dim() != 2:
                        raise RuntimeError(
                            "For unbatched 2-D input, hx and cx should also be 2-D but got "
                            f"({hx[0].dim()}-D, {hx[1].dim()}-D) tensors")
                    hx = (S.unsqueeze(hx[0], 1), S.unsqueeze(hx[1], 1))
                self.check_forward_args(input, hx, batch_sizes)
                hx = self.permute_hidden(hx, sorted_indices)
        if batch_sizes is None:
            result = F.lstm(input, hx, self._flat_weights, self.bias, self.num_layers,
                            self.dropout, self.training, self.bidirectional, self.batch_first)
        else:
            result = F.lstm(input, batch_sizes, hx, self._flat_weights, self.bias,
                            self.num_layers, self.dropout, self.training, self.bidirectional)
        output = result[0]
        hidden = result[1:]
        if isinstance(orig_input, PackedSequence):
            output_packed = PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices)
            return output_packed, self.permute_hidden(hidden, unsorted_indices)
        if not is_batched:
            output = S.squeeze(output, batch_dim)
            hidden = (S.squeeze(hidden[0], 1), S.squeeze(hidden[1], 1))
        return output, self.permute_hidden(hidden, unsorted_indices)


class RNNCellBase(Module, torch.nn.RNNCellBase):
    """torch's ``RNNCellBase`` (parameters ``weight_ih``, ``weight_hh``, ``bias_ih``,
    ``bias_hh`` drawn from :math:`\\mathcal{U}(-1/\\sqrt{H}, 1/\\sqrt{H})`) for shimnn's cells."""

    __init__ = torch.nn.RNNCellBase.__init__

    def _one_state_step(self, name: str, cell: Callable[..., Tensor], input: Tensor,
                        hx: Tensor | None) -> Tensor:
        """torch's ``RNNCell``/``GRUCell`` forward around ``cell``: the input and state checks
        (``name`` in their messages), an unbatched ``(H_in)`` input run as a batch of one, a
        zero state by default."""
        if input.dim() not in (1, 2):
            raise ValueError(
                f"{name}: Expected input to be 1D or 2D, got {input.dim()}D instead")
        if hx is not None and hx.dim() not in (1, 2):
            raise ValueError(
                f"{name}: Expected hidden to be 1D or 2D, got {hx.dim()}D instead")
        is_batched = input.dim() == 2
        if not is_batched:
            input = S.unsqueeze(input, 0)
        if hx is None:
            hx = torch.zeros(input.size(0), self.hidden_size, dtype=input.dtype,
                             device=input.device)
        else:
            hx = S.unsqueeze(hx, 0) if not is_batched else hx
        ret = cell(input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        return ret if is_batched else S.squeeze(ret, 0)


class RNNCell(RNNCellBase, torch.nn.RNNCell):
    r"""One Elman RNN step :math:`h' = \tanh(W_{ih} x + b_{ih} + W_{hh} h + b_{hh})` (or ReLU);
    torch's signature ``RNNCell(input_size, hidden_size, bias=True, nonlinearity='tanh',
    device=None, dtype=None)``. Shape: input ``(N, H_in)`` or ``(H_in)``, hx ``(N, H)`` or
    ``(H)``. Backward: see :func:`shimnn.ops.rnn.rnn_tanh_cell`."""

    __init__ = torch.nn.RNNCell.__init__

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        return self._one_state_step("RNNCell", self._cell, input, hx)

    def _cell(self, *args: Tensor | None) -> Tensor:
        """The step of ``nonlinearity`` (checked when the forward reaches it, as torch's)."""
        if self.nonlinearity == "tanh":
            return F.rnn_tanh_cell(*args)  # type: ignore[arg-type]
        if self.nonlinearity == "relu":
            return F.rnn_relu_cell(*args)  # type: ignore[arg-type]
        raise RuntimeError(f"Unknown nonlinearity: {self.nonlinearity}")


class LSTMCell(RNNCellBase, torch.nn.LSTMCell):
    r"""One LSTM step; torch's signature ``LSTMCell(input_size, hidden_size, bias=True,
    device=None, dtype=None)``. Shape: input ``(N, H_in)`` or ``(H_in)``, ``hx = (h, c)`` each
    ``(N, H)`` or ``(H)``; returns ``(h', c')``. Backward: see
    :func:`shimnn.ops.rnn.lstm_cell`."""

    __init__ = torch.nn.LSTMCell.__init__

    def forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None
                ) -> tuple[Tensor, Tensor]:
        if input.dim() not in (1, 2):
            raise ValueError(
                f"LSTMCell: Expected input to be 1D or 2D, got {input.dim()}D instead")
        if hx is not None:
            for idx, value in enumerate(hx):
                if value.dim() not in (1, 2):
                    raise ValueError(
                        f"LSTMCell: Expected hx[{idx}] to be 1D or 2D, got {value.dim()}D "
                        "instead")
        is_batched = input.dim() == 2
        if not is_batched:
            input = S.unsqueeze(input, 0)
        if hx is None:
            zeros = torch.zeros(input.size(0), self.hidden_size, dtype=input.dtype,
                                device=input.device)
            hx = (zeros, zeros)
        else:
            hx = (S.unsqueeze(hx[0], 0), S.unsqueeze(hx[1], 0)) if not is_batched else hx
        ret = F.lstm_cell(input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        if not is_batched:
            ret = (S.squeeze(ret[0], 0), S.squeeze(ret[1], 0))
        return ret


class GRUCell(RNNCellBase, torch.nn.GRUCell):
    r"""One GRU step; torch's signature ``GRUCell(input_size, hidden_size, bias=True,
    device=None, dtype=None)``. Shape: input ``(N, H_in)`` or ``(H_in)``, hx ``(N, H)`` or
    ``(H)``. Backward: see :func:`shimnn.ops.rnn.gru_cell`."""

    __init__ = torch.nn.GRUCell.__init__

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        return self._one_state_step("GRUCell", F.gru_cell, input, hx)
