"""``rnn``: recurrent layers and cells, with backpropagation through time written by hand.

RNN (tanh, relu), LSTM (with projections) and GRU layers, their cells, and the packed-sequence
helpers, following the path torch's CPU implementation takes (``aten/src/ATen/native/RNN.cpp``;
measured on torch 2.13 by printing the ``grad_fn`` graph of each case):

- **LSTM on oneDNN**: an LSTM over a padded input (torch 2.13: or packed with equal batch
  sizes), without projections, in float32 (bfloat16 where the CPU supports it) while
  ``torch.backends.mkldnn`` is enabled (whether torch takes this path is asked of the installed
  torch: :func:`shimnn.ops._paths.rnn_uses_mkldnn`): one ``mkldnn_rnn_layer`` per layer and
  direction, ``at::dropout`` between layers, ``cat`` of the two directions, ``stack`` of the
  final states; backward ``mkldnn_rnn_layer_backward``.
  shimnn calls the same two kernels (forward in grad mode, as torch's does, for the workspace).
- **the composite** (everything else: float64, GRU, RNN, projections, packed sequences,
  oneDNN disabled): per layer and direction one ``linear`` of the whole input
  (``W_ih x + b_ih``), then per step ``linear(h, W_hh, b_hh).add_(x_t)``, ``unsafe_chunk``,
  in-place ``sigmoid_``/``tanh_`` and the cell's arithmetic; ``stack`` (or, packed, ``cat``) of
  the steps. The cells (``lstm_cell``...) are one such step with their own input ``linear``.

One call is ONE shimnn node whose backward runs backpropagation through time with the kernels
torch's autograd runs over that graph (``sigmoid_backward``, ``tanh_backward``,
``threshold_backward``, the ``mm`` derivatives of ``addmm``, ``select_backward``,
``slice_backward``...), and sums the gradients that fan in as torch's engine does. torch runs
the reachable nodes of a graph in descending creation order and its input buffers add
``old + new``, which fixes every sum: ``h_t`` receives the output's gradient first, then the
next step's (a GRU: its subtraction's, then its matrix product's); a weight used at every step
receives one gradient per step, newest first. The node hands each of those to the engine
separately (its input edges list the weight once per step), so the leaf sums them in torch's
order even when the same weights serve several calls.

A call with several outputs (``output, h_n, c_n``) is one node with several outputs
(``record_outputs``): the engine hands its backward the list of their gradients.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from .._graph import (
    Edge,
    TrackedTensor,
    edge,
    implements,
    is_grad_enabled,
    no_dispatch,
    record,
    record_outputs,
    set_grad_enabled,
    wrap,
)
from ._common import _check_real
from ._paths import rnn_uses_mkldnn
from .activation import _dropout_noise
from .linear import _is_column_major, _weight_is_row_major, linear_forward, linear_rows_backward

__all__ = [
    "gru",
    "gru_cell",
    "lstm",
    "lstm_cell",
    "pack_padded_sequence_data",
    "pad_packed_sequence_data",
    "pad_sequence",
    "rnn_relu",
    "rnn_relu_cell",
    "rnn_tanh",
    "rnn_tanh_cell",
]

_sigmoid_backward = torch.ops.aten.sigmoid_backward.default._op
_tanh_backward = torch.ops.aten.tanh_backward.default._op
_threshold_backward = torch.ops.aten.threshold_backward.default._op
_select_backward = torch.ops.aten.select_backward.default._op
_slice_backward = torch.ops.aten.slice_backward.default._op
_pack_padded_sequence_backward = torch.ops.aten._pack_padded_sequence_backward.default._op
_mkldnn_rnn_layer = torch.ops.aten.mkldnn_rnn_layer.default._op
_mkldnn_rnn_layer_backward = torch.ops.aten.mkldnn_rnn_layer_backward.default._op
_MKLDNN_LSTM = 2  # ideep::rnn_kind::LSTM, the mode torch's lstm_mkldnn passes

LSTM, GRU, RNN_TANH, RNN_RELU = "LSTM", "GRU", "RNN_TANH", "RNN_RELU"
_GATES = {LSTM: 4, GRU: 3, RNN_TANH: 1, RNN_RELU: 1}


# ---------------------------------------------------------------------------------------------
# several outputs, one node
# ---------------------------------------------------------------------------------------------


def _record_outputs(results: Sequence[Tensor], node_name: str,
                    backward: Callable[..., list[Tensor | None]], inputs: Sequence[Edge],
                    saved: Sequence[Tensor], names: Sequence[str] | None = None
                    ) -> list[TrackedTensor]:
    """One node for the outputs (output, h_n[, c_n]); ``backward(g_out, g_h[, g_c])`` gets each
    output's gradient (``None`` where none flowed) and returns one gradient per input edge."""

    count = len(inputs)

    def joint(grads: list[Tensor | None]) -> list[Tensor | None]:
        result = backward(*grads)
        assert len(result) == count, "shimnn: an RNN backward out of step with its edges"
        return result

    return record_outputs(results, node_name, joint, tuple(inputs), tuple(saved), names=names)


def _acc(*grads: Tensor | None) -> Tensor | None:
    """torch's input buffer over gradients in arrival order: the first, then ``old + new``."""
    total: Tensor | None = None
    for g in grads:
        if g is not None:
            total = g if total is None else total + g
    return total


# ---------------------------------------------------------------------------------------------
# parameters
# ---------------------------------------------------------------------------------------------


class _Weights(NamedTuple):
    """One layer and direction's parameters (``b_*`` without biases, ``w_hr`` without a
    projection: ``None``), and where their gradients go."""

    w_ih: Tensor
    w_hh: Tensor
    b_ih: Tensor | None
    b_hh: Tensor | None
    w_hr: Tensor | None
    e_w_ih: Edge
    e_w_hh: Edge
    e_b_ih: Edge
    e_b_hh: Edge
    e_w_hr: Edge


def _gather_params(params: Sequence[Tensor], has_biases: bool, has_projections: bool,
                   tracking: bool) -> list[_Weights] | None:
    """torch's ``gather_params``: the flat list, 2-5 tensors per layer and direction.
    ``None`` when the count is wrong (the caller lets torch raise)."""
    per = 2 + 2 * has_biases + has_projections
    if len(params) % per:
        return None
    out = []
    for i in range(0, len(params), per):
        w_ih, w_hh = params[i], params[i + 1]
        b_ih = params[i + 2] if has_biases else None
        b_hh = params[i + 3] if has_biases else None
        w_hr = params[i + per - 1] if has_projections else None
        if tracking:
            out.append(_Weights(w_ih, w_hh, b_ih, b_hh, w_hr, edge(w_ih), edge(w_hh), edge(b_ih),
                                edge(b_hh), edge(w_hr)))
        else:
            out.append(_Weights(w_ih, w_hh, b_ih, b_hh, w_hr, None, None, None, None, None))
    return out


def _hh(h: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    """``at::linear(h, w, b)`` on a matrix: ``addmm`` with a bias, else ``mm``."""
    return torch.addmm(b, h, w.t()) if b is not None else h.mm(w.t())


def _hh_backward(g: Tensor, h: Tensor, w: Tensor, need_h: bool, e_w: Edge, e_b: Edge
                 ) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """The gradients of :func:`_hh` (addmm's / mm's derivatives, by the operands' layout)."""
    return linear_rows_backward(g, h, w, need_h, e_w is not None, e_b is not None,
                                need_h and _is_column_major(h),
                                e_w is not None and _weight_is_row_major(w))


# ---------------------------------------------------------------------------------------------
# one step of each cell (the input's linear already applied: x_t = W_ih x + b_ih)
# ---------------------------------------------------------------------------------------------
#
# A step returns (h', c', record): c' is None but for LSTM; the record holds what its backward
# reads. A step's backward gets the gradient of h' (``dh``) and the gradient that reached c'
# before the step's own tanh(c') did (``dc``); it returns the gradient of x_t, the
# contributions to h in arrival order, the gradient of c, and those of w_hr, b_hh, w_hh.

StepOut = tuple[Tensor, list[Tensor | None], Tensor | None, Tensor | None, Tensor | None,
                Tensor | None]


def _lstm_step(x_t: Tensor, h: Tensor, c: Tensor | None, w: _Weights
               ) -> tuple[Tensor, Tensor, tuple[Any, ...]]:
    gates = _hh(h, w.w_hh, w.b_hh)
    gates.add_(x_t)
    i, f, g, o = gates.unsafe_chunk(4, 1)
    i.sigmoid_()
    f.sigmoid_()
    g.tanh_()
    o.sigmoid_()
    cy = (f * c).add_(i * g)  # type: ignore[operator]  # an LSTM always has c
    tcy = cy.tanh()
    hy = o * tcy
    out = hy.mm(w.w_hr.t()) if w.w_hr is not None else hy  # matmul of matrices: mm
    return out, cy, (h, c, i, f, g, o, tcy, hy)


def _lstm_step_backward(rec: tuple[Any, ...], dh: Tensor | None, dc: Tensor | None,
                        w: _Weights, need_h: bool, need_c: bool) -> StepOut:
    h, c, i, f, g, o, tcy, hy = rec
    d_w_hr = None
    if dh is not None and w.w_hr is not None:  # h' = hy @ w_hr.t(): MmBackward0
        dh, d_w_hr, _ = linear_rows_backward(
            dh, hy, w.w_hr, True, w.e_w_hr is not None, False, _is_column_major(hy),
            w.e_w_hr is not None and _weight_is_row_major(w.w_hr))
    if dh is not None:  # hy = o * tanh(c'): MulBackward0, then TanhBackward0
        d_o = dh * tcy
        d_c = _tanh_backward(dh * o, tcy)
        dc = d_c if dc is None else dc + d_c  # the next step's (or c_n's) arrived first
        go = _sigmoid_backward(d_o, o)
    else:  # no gradient reached h': unsafe_split's backward fills the o gate with zeros
        go = torch.zeros(o.shape, dtype=o.dtype, device=o.device)
    assert dc is not None
    gi = _sigmoid_backward(dc * g, i)  # c' = f * c + i * g
    gf = _sigmoid_backward(dc * c, f)
    gg = _tanh_backward(dc * i, g)
    d_c_prev = dc * f if need_c else None
    d_gates = torch.cat([gi, gf, gg, go], 1)
    d_h, d_w_hh, d_b_hh = _hh_backward(d_gates, h, w.w_hh, need_h, w.e_w_hh, w.e_b_hh)
    return d_gates, [d_h], d_c_prev, d_w_hr, d_b_hh, d_w_hh


def _gru_step(x_t: Tensor, h: Tensor, c: Tensor | None, w: _Weights
              ) -> tuple[Tensor, None, tuple[Any, ...]]:
    ig_r, ig_z, ig_n = x_t.unsafe_chunk(3, 1)
    hg_r, hg_z, hg_n = _hh(h, w.w_hh, w.b_hh).unsafe_chunk(3, 1)
    r = hg_r.add_(ig_r).sigmoid_()
    z = hg_z.add_(ig_z).sigmoid_()
    # torch runs hg_n.mul_(r) and s.mul_(z) in place and differentiates with the values
    # before (its in-place mul saves the original self): out of place, the same values.
    hn = hg_n * r
    n = ig_n.add(hn).tanh_()
    s = h - n
    hy = (s * z).add_(n)
    return hy, None, (h, r, z, n, hg_n, s)


def _gru_step_backward(rec: tuple[Any, ...], dh: Tensor | None, dc: Tensor | None,
                       w: _Weights, need_h: bool, need_c: bool) -> StepOut:
    h, r, z, n, hg_n, s = rec
    assert dh is not None
    d_s = dh * z  # h' = (h - n) * z + n
    d_z = dh * s
    d_n = dh + d_s.neg()  # add_(n)'s gradient first, then the subtraction's -grad
    d_pre = _tanh_backward(d_n, n)  # n = tanh(x_n + hg_n * r)
    d_hg_n = d_pre * r
    d_r = d_pre * hg_n
    g_z = _sigmoid_backward(d_z, z)
    g_r = _sigmoid_backward(d_r, r)
    d_x = torch.cat([g_r, g_z, d_pre], 1)
    d_h, d_w_hh, d_b_hh = _hh_backward(torch.cat([g_r, g_z, d_hg_n], 1), h, w.w_hh, need_h,
                                       w.e_w_hh, w.e_b_hh)
    return d_x, [d_s if need_h else None, d_h], None, None, d_b_hh, d_w_hh


def _rnn_step(x_t: Tensor, h: Tensor, c: Tensor | None, w: _Weights, relu: bool
              ) -> tuple[Tensor, None, tuple[Any, ...]]:
    pre = _hh(h, w.w_hh, w.b_hh).add_(x_t)
    hy = torch.relu(pre) if relu else torch.tanh(pre)
    return hy, None, (h, hy)


def _rnn_step_backward(rec: tuple[Any, ...], dh: Tensor | None, relu: bool, w: _Weights,
                       need_h: bool) -> StepOut:
    h, hy = rec
    assert dh is not None
    d_pre = _threshold_backward(dh, hy, 0) if relu else _tanh_backward(dh, hy)
    d_h, d_w_hh, d_b_hh = _hh_backward(d_pre, h, w.w_hh, need_h, w.e_w_hh, w.e_b_hh)
    return d_pre, [d_h], None, None, d_b_hh, d_w_hh


def _step_fns(kind: str) -> tuple[Callable[..., Any], Callable[..., StepOut]]:
    if kind == LSTM:
        return _lstm_step, _lstm_step_backward
    if kind == GRU:
        return _gru_step, _gru_step_backward
    relu = kind == RNN_RELU

    def step(x_t: Tensor, h: Tensor, c: Tensor | None, w: _Weights) -> Any:
        return _rnn_step(x_t, h, c, w, relu)

    def step_backward(rec: tuple[Any, ...], dh: Tensor | None, dc: Tensor | None, w: _Weights,
                      need_h: bool, need_c: bool) -> StepOut:
        return _rnn_step_backward(rec, dh, relu, w, need_h)

    return step, step_backward


# ---------------------------------------------------------------------------------------------
# one direction of one layer (composite)
# ---------------------------------------------------------------------------------------------


class _Direction:
    """One layer and direction of the composite: the input's linear, then the steps.

    ``batch_sizes`` is ``None`` for a padded input (torch's FullLayer: ``unbind`` of the
    projected input, ``stack`` of the outputs) or the packed sequence's batch sizes
    (PackedLayer / ReversedPackedLayer: ``narrow`` per step, ``cat``, and the hidden state
    sliced where the batch shrinks, or grown from the initial state where it grows).
    """

    def __init__(self, kind: str, w: _Weights, reverse: bool,
                 batch_sizes: list[int] | None) -> None:
        self.kind = kind
        self.w = w
        self.reverse = reverse
        self.batch_sizes = batch_sizes
        self.step, self.step_backward = _step_fns(kind)
        self.is_lstm = kind == LSTM

    # ----- forward -----

    def forward(self, input: Tensor, h0: Tensor, c0: Tensor | None, need_input: bool,
                need_h0: bool, need_c0: bool) -> tuple[Tensor, Tensor, Tensor | None]:
        """Run over ``input`` (``(T, B, *)``, or packed ``(N, *)``); returns the stacked
        (or concatenated) outputs and the final hidden (and cell) state."""
        w = self.w
        self.need_h0, self.need_c0 = need_h0, need_c0
        xw, self.xw_backward, self.saved, _ = linear_forward(
            input, w.w_ih, w.b_ih, need_input, w.e_w_ih is not None, w.e_b_ih is not None)
        self.xw_shape = xw.shape
        if self.batch_sizes is None:
            return self._forward_full(xw, h0, c0)
        if self.reverse:
            return self._forward_packed_reversed(xw, h0, c0)
        return self._forward_packed(xw, h0, c0)

    def _forward_full(self, xw: Tensor, h: Tensor, c: Tensor | None
                      ) -> tuple[Tensor, Tensor, Tensor | None]:
        steps = xw.unbind(0)
        count = len(steps)
        times = range(count - 1, -1, -1) if self.reverse else range(count)
        step, w = self.step, self.w
        outs: list[Tensor] = [None] * count  # type: ignore[list-item]
        recs = []
        for t in times:
            h, c, rec = step(steps[t], h, c, w)
            recs.append(rec)
            outs[t] = h
        self.recs, self.times = recs, list(times)
        return torch.stack(outs, 0), h, c

    def _forward_packed(self, xw: Tensor, h: Tensor, c: Tensor | None
                        ) -> tuple[Tensor, Tensor, Tensor | None]:
        step, w, sizes = self.step, self.w, self.batch_sizes
        assert sizes is not None
        last = sizes[0]
        offset = 0
        tails_h, tails_c = [], []
        recs, outs = [], []
        for size in sizes:
            x_t = xw.narrow(0, offset, size)
            offset += size
            dec = last - size
            if dec > 0:  # sequences ended: keep their final state, go on with the rest
                tails_h.append(h.narrow(0, last - dec, dec))
                if c is not None:
                    tails_c.append(c.narrow(0, last - dec, dec))
                h = h.narrow(0, 0, last - dec)
                if c is not None:
                    c = c.narrow(0, 0, last - dec)
            last = size
            h, c, rec = step(x_t, h, c, w)
            recs.append(rec)
            outs.append(h)
        self.recs = recs
        final_h = torch.cat([h, *reversed(tails_h)], 0)
        final_c = torch.cat([c, *reversed(tails_c)], 0) if c is not None else None
        return torch.cat(outs, 0), final_h, final_c

    def _forward_packed_reversed(self, xw: Tensor, h0: Tensor, c0: Tensor | None
                                 ) -> tuple[Tensor, Tensor, Tensor | None]:
        step, w, sizes = self.step, self.w, self.batch_sizes
        assert sizes is not None
        count = len(sizes)
        last = sizes[-1]
        offset = xw.shape[0]
        h = h0.narrow(0, 0, last)
        c = c0.narrow(0, 0, last) if c0 is not None else None
        recs, outs = [], []
        for i in range(count - 1, -1, -1):
            size = sizes[i]
            inc = size - last
            if inc > 0:  # longer sequences start here, from their initial state
                grow_h = h0.narrow(0, last, inc)
                grow_c = c0.narrow(0, last, inc) if c0 is not None else None
                h = torch.cat([h, grow_h], 0)
                if c is not None:
                    c = torch.cat([c, grow_c], 0)  # type: ignore[list-item]
            x_t = xw.narrow(0, offset - size, size)
            offset -= size
            last = size
            h, c, rec = step(x_t, h, c, w)
            recs.append(rec)
            outs.append(h)
        self.recs = recs
        outs.reverse()
        return torch.cat(outs, 0), h, c

    # ----- backward -----

    def backward(self, g_out: Tensor | None, g_h: Tensor | None, g_c: Tensor | None
                 ) -> tuple[list[Tensor | None], Tensor | None, Tensor | None, Tensor | None]:
        """The gradients of this direction's outputs -> (weight gradients in emission order:
        per step newest first ``w_hr, b_hh, w_hh``, then ``b_ih, w_ih``; the input's gradient;
        h0's; c0's)."""
        if g_out is None and g_h is None and g_c is None:
            return [None] * (3 * len(self.recs) + 2), None, None, None
        if self.batch_sizes is None:
            d_xw, emitted, d_h0, d_c0 = self._backward_full(g_out, g_h, g_c)
        elif self.reverse:
            d_xw, emitted, d_h0, d_c0 = self._backward_packed_reversed(g_out, g_h, g_c)
        else:
            d_xw, emitted, d_h0, d_c0 = self._backward_packed(g_out, g_h, g_c)
        d_input, d_b_ih, d_w_ih = self.xw_backward(d_xw)  # linear_forward order
        emitted.append(d_b_ih)
        emitted.append(d_w_ih)
        return emitted, d_input, d_h0, d_c0

    def _backward_full(self, g_out: Tensor | None, g_h: Tensor | None, g_c: Tensor | None
                       ) -> tuple[Tensor, list[Tensor | None], Tensor | None, Tensor | None]:
        recs, times, w = self.recs, self.times, self.w
        step_backward = self.step_backward
        count = len(recs)
        g_steps = g_out.unbind(0) if g_out is not None else None  # StackBackward0
        d_xw: list[Tensor] = [None] * count  # type: ignore[list-item]
        emitted: list[Tensor | None] = []
        h_in: list[Tensor | None] = []
        dc = g_c
        for k in range(count - 1, -1, -1):
            t = times[k]
            g_t = g_steps[t] if g_steps is not None else None
            # h_T receives the final states' stack first, then the outputs'; an earlier
            # h_t the outputs' stack first, then the next step's contributions.
            dh = _acc(g_h, g_t) if k == count - 1 else _acc(g_t, *h_in)
            first = k == 0
            d_xw[t], h_in, dc, d_w_hr, d_b_hh, d_w_hh = step_backward(
                recs[k], dh, dc, w, not first or self.need_h0, not first or self.need_c0)
            emitted += (d_w_hr, d_b_hh, d_w_hh)
        return torch.stack(d_xw, 0), emitted, _acc(*h_in), dc  # UnbindBackward0: stack

    def _backward_packed(self, g_out: Tensor | None, g_h: Tensor | None, g_c: Tensor | None
                         ) -> tuple[Tensor, list[Tensor | None], Tensor | None, Tensor | None]:
        recs, w, sizes = self.recs, self.w, self.batch_sizes
        assert sizes is not None
        step_backward = self.step_backward
        count = len(sizes)
        offsets = [0] * count
        for i in range(1, count):
            offsets[i] = offsets[i - 1] + sizes[i - 1]
        # The final state is cat([h_last, tails...]): rows [0, sizes[-1]) are the last
        # step's, then the tail cut at each step i where the batch shrank (CatBackward0).
        tail_rows = {}
        row = sizes[-1]
        for i in range(count - 1, 0, -1):
            if sizes[i - 1] > sizes[i]:
                tail_rows[i] = (row, sizes[i - 1] - sizes[i])
                row += sizes[i - 1] - sizes[i]
        emitted: list[Tensor | None] = []
        d_x_parts: list[Tensor] = []
        h_in: list[Tensor | None] = []
        dc_in: Tensor | None = None
        h_size = w.w_hh.shape[1]  # h as fed back (the projection's size with proj_size)
        c_size = w.w_hh.shape[0] // 4
        for i in range(count - 1, -1, -1):
            size = sizes[i]
            g_t = g_out.narrow(0, offsets[i], size) if g_out is not None else None
            if i == count - 1:
                dh = _acc(_rows(g_h, 0, size), g_t)
                dc = _rows(g_c, 0, size)
            else:
                nxt = sizes[i + 1]
                if size > nxt:  # step i+1 used rows [0, nxt) of h_i; rows [nxt, size) ended
                    start, length = tail_rows[i + 1]
                    dims = [size, h_size]
                    # h_i's gradient: the outputs' cat, then the two narrows of step i+1
                    # (the one it ran on was made second, so it runs first)
                    dh = _acc(g_t, _pad(_acc(*h_in), dims, 0, nxt),
                              _pad(_rows(g_h, start, length), dims, nxt, size))
                    if self.is_lstm:
                        dims_c = [size, c_size]
                        dc = _acc(_pad(dc_in, dims_c, 0, nxt),
                                  _pad(_rows(g_c, start, length), dims_c, nxt, size))
                    else:
                        dc = None
                else:
                    dh = _acc(g_t, *h_in)
                    dc = dc_in
            first = i == 0
            d_x, h_in, dc_in, d_w_hr, d_b_hh, d_w_hh = step_backward(
                recs[i], dh, dc, w, not first or self.need_h0, not first or self.need_c0)
            d_x_parts.append(d_x)
            emitted += (d_w_hr, d_b_hh, d_w_hh)
        # Each step's narrow of the projected input: SliceBackward0, newest step first.
        full = list(self.xw_shape)
        d_xw = _acc(*[_slice_backward(d, full, 0, offsets[i], offsets[i] + sizes[i], 1)
                      for d, i in zip(d_x_parts, range(count - 1, -1, -1))])
        assert d_xw is not None
        return d_xw, emitted, _acc(*h_in), dc_in

    def _backward_packed_reversed(
        self, g_out: Tensor | None, g_h: Tensor | None, g_c: Tensor | None
    ) -> tuple[Tensor, list[Tensor | None], Tensor | None, Tensor | None]:
        recs, w, sizes = self.recs, self.w, self.batch_sizes
        assert sizes is not None
        step_backward = self.step_backward
        count = len(sizes)
        offsets = [0] * count
        for i in range(1, count):
            offsets[i] = offsets[i - 1] + sizes[i - 1]
        batch = sizes[0]
        emitted: list[Tensor | None] = []
        d_x_parts: list[Tensor] = []
        h0_parts: list[Tensor | None] = []  # SliceBackward0 of the initial state, newest first
        c0_parts: list[Tensor | None] = []
        h_in: list[Tensor | None] = []
        dc_in: Tensor | None = None
        # processing order k = 0..count-1 is time i = count-1-k; backward runs k downwards
        for k in range(count - 1, -1, -1):
            i = count - 1 - k
            size = sizes[i]
            g_t = g_out.narrow(0, offsets[i], size) if g_out is not None else None
            if k == count - 1:
                dh = _acc(g_h, g_t)
                dc = g_c
            else:
                prev = sizes[i - 1]  # the batch of the step processed after this one
                if prev > size:  # that step ran on cat([h, h0[size:prev]])
                    d_cat_h = _acc(*h_in)
                    dh = _acc(g_t, _rows(d_cat_h, 0, size))
                    if self.need_h0:
                        h0_parts.append(_grow_part(d_cat_h, size, prev - size, batch))
                    if self.is_lstm:
                        dc = _rows(dc_in, 0, size)
                        if self.need_c0:
                            c0_parts.append(_grow_part(dc_in, size, prev - size, batch))
                    else:
                        dc = None
                else:
                    dh = _acc(g_t, *h_in)
                    dc = dc_in
            first = k == 0
            d_x, h_in, dc_in, d_w_hr, d_b_hh, d_w_hh = step_backward(
                recs[k], dh, dc, w, not first or self.need_h0, not first or self.need_c0)
            d_x_parts.append(d_x)
            emitted += (d_w_hr, d_b_hh, d_w_hh)
        # the first processed step ran on h0[:sizes[-1]]
        if self.need_h0:
            h0_parts.append(_grow_part(_acc(*h_in), 0, sizes[-1], batch))
        if self.is_lstm and self.need_c0:
            c0_parts.append(_grow_part(dc_in, 0, sizes[-1], batch))
        full = list(self.xw_shape)
        d_xw = _acc(*[_slice_backward(d, full, 0, offsets[count - 1 - k],
                                      offsets[count - 1 - k] + sizes[count - 1 - k], 1)
                      for d, k in zip(d_x_parts, range(count - 1, -1, -1))])
        assert d_xw is not None
        return d_xw, emitted, _acc(*h0_parts), _acc(*c0_parts)


def _rows(g: Tensor | None, start: int, length: int) -> Tensor | None:
    """CatBackward0's part of a gradient: ``narrow`` (``None`` stays ``None``)."""
    return g.narrow(0, start, length) if g is not None else None


def _pad(g: Tensor | None, sizes: list[int], start: int, end: int) -> Tensor | None:
    """SliceBackward0 of ``narrow(0, start, end - start)``: zeros with ``g`` at those rows."""
    return _slice_backward(g, sizes, 0, start, end, 1) if g is not None else None


def _grow_part(g: Tensor | None, start: int, length: int, batch: int) -> Tensor | None:
    """The initial state's slice ``[start, start + length)`` that a reversed packed layer
    appended: its gradient (CatBackward0's part), zero-padded to the batch (SliceBackward0)."""
    if g is None:
        return None
    part = g.narrow(0, g.shape[0] - length, length)
    return _slice_backward(part, [batch, g.shape[1]], 0, start, start + length, 1)


# ---------------------------------------------------------------------------------------------
# the layer stack (composite): torch's apply_layer_stack over Full/Packed layers
# ---------------------------------------------------------------------------------------------


def _composite(kind: str, input: Tensor, batch_sizes: list[int] | None, hx: Tensor,
               cx: Tensor | None, weights: list[_Weights], num_layers: int, dropout_p: float,
               train: bool, bidirectional: bool, batch_first: bool, tracking: bool
               ) -> tuple[list[Tensor], Callable[..., list[Tensor | None]] | None, list[Edge],
                          list[Tensor]]:
    """torch's ``_rnn_impl`` / ``_lstm_impl`` (the composite path) on plain tensors.

    Returns the outputs (output, h_n[, c_n]), and when ``tracking`` the backward, its input
    edges in emission order and the tensors it reads that a caller could modify in place.
    """
    dirs = 2 if bidirectional else 1
    e_x = edge(input) if tracking else None
    e_hx = edge(hx) if tracking else None
    e_cx = edge(cx) if tracking and cx is not None else None
    x = input.transpose(0, 1) if batch_first else input
    layer_hx = hx.unbind(0)
    layer_cx = cx.unbind(0) if cx is not None else None
    layers: list[list[_Direction]] = []
    noises: list[Tensor | None] = []
    finals_h: list[Tensor] = []
    finals_c: list[Tensor] = []
    need_below = e_x is not None  # does anything under this layer's input need a gradient?
    layer_input = x
    for layer in range(num_layers):
        runs = []
        outs = []
        for d in range(dirs):
            idx = layer * dirs + d
            w = weights[idx]
            run = _Direction(kind, w, d == 1, batch_sizes)
            out, h_n, c_n = run.forward(
                layer_input, layer_hx[idx], layer_cx[idx] if layer_cx is not None else None,
                need_below, e_hx is not None, e_cx is not None)
            runs.append(run)
            outs.append(out)
            finals_h.append(h_n)
            if c_n is not None:
                finals_c.append(c_n)
        layers.append(runs)
        # FullBidirectionalLayer: cat on the last dim (fw_output.dim() - 1); packed: -1
        layer_out = outs[0] if dirs == 1 else torch.cat(outs, outs[0].dim() - 1)
        need_below = need_below or e_hx is not None or e_cx is not None or any(
            e is not None for r in runs for e in r.w[5:])
        noise = None
        if dropout_p != 0 and train and layer < num_layers - 1:
            noise = _dropout_noise(layer_out, dropout_p)  # at::dropout(input, p, train=true)
            layer_out = layer_out * noise
        noises.append(noise)
        layer_input = layer_out
    output = layer_input
    h_n = torch.stack(finals_h, 0)
    results = [output.transpose(0, 1) if batch_first else output, h_n]
    if cx is not None:
        results.append(torch.stack(finals_c, 0))
    if not tracking:
        return results, None, [], []

    # The input edges, in the order the backward hands their gradients over.
    edges: list[Edge] = []
    x_direct = not batch_first  # linear's view of the input: straight to it, per direction
    for layer in range(num_layers - 1, -1, -1):
        for run in reversed(layers[layer]):
            w = run.w
            edges += [w.e_w_hr, w.e_b_hh, w.e_w_hh] * len(run.recs)
            edges += [w.e_b_ih, w.e_w_ih]
            if layer == 0 and x_direct:
                edges.append(e_x)
    if cx is not None:
        edges.append(e_cx)  # cx.unbind(0) was made after hx.unbind(0): it runs first
    edges.append(e_hx)
    if not x_direct:
        edges.append(e_x)  # through the batch_first transpose: one gradient
    saved = [t for layer_runs in layers for r in layer_runs for t in r.saved]
    saved += [t for layer_runs in layers for r in layer_runs for t in (r.w.w_hh, r.w.w_hr)
              if t is not None]
    hx_shape, cx_shape = hx.shape, cx.shape if cx is not None else hx.shape

    def backward(g_out: Tensor | None, g_h: Tensor | None, g_c: Tensor | None = None
                 ) -> list[Tensor | None]:
        if g_out is not None and batch_first:
            g_out = g_out.transpose(0, 1)
        g_hs = g_h.unbind(0) if g_h is not None else None  # StackBackward0
        g_cs = g_c.unbind(0) if g_c is not None else None
        grads: list[Tensor | None] = []
        d_h0s: list[Tensor | None] = [None] * len(finals_h)
        d_c0s: list[Tensor | None] = [None] * len(finals_h)
        g_layer = g_out
        x_grads: list[Tensor | None] = []
        for layer in range(num_layers - 1, -1, -1):
            runs = layers[layer]
            if dirs == 2 and g_layer is not None:  # CatBackward0
                half = g_layer.shape[-1] // 2
                g_dirs: list[Tensor | None] = [g_layer.narrow(-1, 0, half),
                                               g_layer.narrow(-1, half, half)]
            else:
                g_dirs = [g_layer] * dirs
            in_grads: list[Tensor | None] = []
            for d in range(dirs - 1, -1, -1):  # the reverse direction was made last
                idx = layer * dirs + d
                emitted, d_in, d_h0s[idx], d_c0s[idx] = runs[d].backward(
                    g_dirs[d], g_hs[idx] if g_hs is not None else None,
                    g_cs[idx] if g_cs is not None else None)
                grads += emitted
                in_grads.append(d_in)
                if layer == 0 and x_direct:
                    grads.append(d_in)
            if layer > 0:
                g_layer = _acc(*in_grads)
                noise = noises[layer - 1]
                if noise is not None and g_layer is not None:
                    g_layer = g_layer * noise  # MulBackward0: grad * other
            else:
                x_grads = in_grads
        if cx is not None:
            grads.append(_unbind_backward(d_c0s, cx_shape) if e_cx is not None else None)
        grads.append(_unbind_backward(d_h0s, hx_shape) if e_hx is not None else None)
        if not x_direct:
            d_x = _acc(*x_grads)
            grads.append(d_x.transpose(0, 1) if d_x is not None else None)
        return grads

    return results, backward, edges, saved


def _unbind_backward(grads: list[Tensor | None], shape: Sequence[int]) -> Tensor | None:
    """UnbindBackward0: ``stack`` of the parts' gradients, zeros where one got none."""
    like = next((g for g in grads if g is not None), None)
    if like is None:
        return None
    return torch.stack([g if g is not None else torch.zeros(shape[1:], dtype=like.dtype)
                        .expand(like.shape) for g in grads], 0)


# ---------------------------------------------------------------------------------------------
# LSTM on oneDNN
# ---------------------------------------------------------------------------------------------


def _detached(t: Tensor) -> Tensor:
    return t.detach() if t.requires_grad else t


def _same(t: Tensor) -> Tensor:
    return t


def _mkldnn_lstm(input: Tensor, hx: Tensor, cx: Tensor, weights: list[_Weights],
                 has_biases: bool, num_layers: int, dropout_p: float, train: bool,
                 bidirectional: bool, batch_first: bool, tracking: bool, grad_mode: bool,
                 steps: int | None = None
                 ) -> tuple[list[Tensor], Callable[..., list[Tensor | None]] | None, list[Edge],
                            list[Tensor]]:
    """torch's ``mkldnn_rnn`` (aten/src/ATen/native/mkldnn/RNN.cpp) on plain tensors.

    ``steps``: the input is a packed sequence's data whose batch sizes are all equal, which
    torch's packed ``lstm`` reshapes to ``(steps, batch, *)`` for oneDNN (and the output
    back to ``(steps * batch, *)``)."""
    dirs = 2 if bidirectional else 1
    e_x = edge(input) if tracking else None
    e_hx = edge(hx) if tracking else None
    e_cx = edge(cx) if tracking else None
    data_shape = input.shape
    if steps is not None:
        input = input.reshape(steps, data_shape[0] // steps, data_shape[-1])
    x = input.transpose(0, 1) if batch_first else input
    # the gradient reaches the caller's input directly (once per direction), or once through
    # the transpose, contiguous() copy or packed reshape
    x_direct = x.is_contiguous() and not batch_first and steps is None
    x = x.contiguous()
    h_direct, c_direct = hx.is_contiguous(), cx.is_contiguous()
    hxc, cxc = hx.contiguous(), cx.contiguous()
    hidden_size = hx.shape[2]
    layer_input = x
    runs: list[tuple[Any, ...]] = []
    noises: list[Tensor | None] = []
    finals_h, finals_c = [], []
    layer_hx, layer_cx = hxc.unbind(0), cxc.unbind(0)
    # In grad mode the kernel runs oneDNN's training primitive (and returns its workspace), as
    # torch's does: it then must see no tensor that requires grad (plain aliases, detach()).
    plain = _detached if grad_mode else _same
    for layer in range(num_layers):
        outs = []
        for d in range(dirs):
            idx = layer * dirs + d
            w = weights[idx]
            w0, w1 = plain(w.w_ih), plain(w.w_hh)
            if has_biases:
                w2, w3 = plain(w.b_ih), plain(w.b_hh)  # type: ignore[arg-type]
            else:
                w2 = torch.zeros(w0.shape, dtype=w0.dtype, device=w0.device)
                w3 = torch.zeros(w1.shape, dtype=w1.dtype, device=w1.device)
            h_l, c_l = plain(layer_hx[idx]), plain(layer_cx[idx])
            set_grad_enabled(grad_mode)
            try:
                out, hy, cy, workspace = _mkldnn_rnn_layer(
                    plain(layer_input), w0, w1, w2, w3, h_l, c_l, d == 1, [], _MKLDNN_LSTM,
                    hidden_size, num_layers, has_biases, bidirectional, batch_first, train)
            finally:
                set_grad_enabled(False)
            runs.append((layer_input, w0, w1, w2, w3, h_l, c_l, out, hy, cy, workspace))
            outs.append(out)
            finals_h.append(hy)
            finals_c.append(cy)
        layer_input = outs[0] if dirs == 1 else torch.cat(outs, -1)
        noise = None
        if dropout_p != 0 and train and layer < num_layers - 1:
            noise = _dropout_noise(layer_input, dropout_p)
            layer_input = layer_input * noise
        noises.append(noise)
    output = layer_input
    if batch_first:
        output = output.transpose(0, 1)
    if steps is not None:
        output = output.reshape(data_shape[0], output.shape[-1])
    results = [output, torch.stack(finals_h, 0), torch.stack(finals_c, 0)]
    if not tracking:
        return results, None, [], []

    edges: list[Edge] = []
    for layer in range(num_layers - 1, -1, -1):
        for d in range(dirs - 1, -1, -1):
            w = weights[layer * dirs + d]
            if layer == 0 and x_direct:
                edges.append(e_x)
            edges += [w.e_w_ih, w.e_w_hh]
            if has_biases:
                edges += [w.e_b_ih, w.e_b_hh]
            # its select of cx was made after that of hx: it runs first
            edges += [e_cx if c_direct else None, e_hx if h_direct else None]
    edges += [None if c_direct else e_cx, None if h_direct else e_hx]
    if not x_direct:
        edges.append(e_x)
    # what torch's MkldnnRnnLayerBackward0 nodes save (the caller's tensors among them)
    saved = [t for r in runs for t in (r[0], r[1], r[2], r[5], r[6], r[7], r[8], r[9])]
    if has_biases:
        saved += [t for r in runs for t in (r[3], r[4])]
    full_h, full_c = list(hx.shape), list(cx.shape)

    x_shape = list(input.shape)

    def backward(g_out: Tensor | None, g_h: Tensor | None, g_c: Tensor | None
                 ) -> list[Tensor | None]:
        if g_out is not None and steps is not None:
            g_out = g_out.reshape(x_shape[0], x_shape[1], g_out.shape[-1])
        if g_out is not None and batch_first:
            g_out = g_out.transpose(0, 1)
        g_hs = g_h.unbind(0) if g_h is not None else None
        g_cs = g_c.unbind(0) if g_c is not None else None
        grads: list[Tensor | None] = []
        h_late: list[Tensor | None] = []  # through the contiguous() copies: summed, then once
        c_late: list[Tensor | None] = []
        x_late: list[Tensor | None] = []
        g_layer = g_out
        for layer in range(num_layers - 1, -1, -1):
            if dirs == 2 and g_layer is not None:
                g_dirs: list[Tensor | None] = [g_layer.narrow(-1, 0, hidden_size),
                                               g_layer.narrow(-1, hidden_size, hidden_size)]
            else:
                g_dirs = [g_layer] * dirs
            in_grads: list[Tensor | None] = []
            for d in range(dirs - 1, -1, -1):
                idx = layer * dirs + d
                inp, w0, w1, w2, w3, h_l, c_l, out, hy, cy, workspace = runs[idx]
                d_x, d_w0, d_w1, d_b0, d_b1, d_hx, d_cx = _mkldnn_rnn_layer_backward(
                    inp, w0, w1, w2, w3, h_l, c_l, out, hy, cy, g_dirs[d],
                    g_hs[idx] if g_hs is not None else None,
                    g_cs[idx] if g_cs is not None else None, d == 1, _MKLDNN_LSTM,
                    hidden_size, num_layers, has_biases, train, bidirectional, [], batch_first,
                    workspace)
                if layer == 0 and x_direct:
                    grads.append(d_x)
                in_grads.append(d_x)
                grads += [d_w0, d_w1]
                if has_biases:
                    grads += [d_b0, d_b1]
                d_hx = _select_backward(d_hx, full_h, 0, idx) if e_hx is not None else None
                d_cx = _select_backward(d_cx, full_c, 0, idx) if e_cx is not None else None
                # (to the caller's states directly, or summed through their contiguous copy)
                grads += [d_cx if c_direct else None, d_hx if h_direct else None]
                if not c_direct:
                    c_late.append(d_cx)
                if not h_direct:
                    h_late.append(d_hx)
            if layer > 0:
                g_layer = _acc(*in_grads)
                noise = noises[layer - 1]
                if noise is not None and g_layer is not None:
                    g_layer = g_layer * noise
            else:
                x_late = in_grads
        grads += [None if c_direct else _acc(*c_late), None if h_direct else _acc(*h_late)]
        if not x_direct:
            d_x = _acc(*x_late)
            if d_x is not None and batch_first:
                d_x = d_x.transpose(0, 1)
            if d_x is not None and steps is not None:
                d_x = d_x.reshape(data_shape)
            grads.append(d_x)
        return grads

    return results, backward, edges, saved


# ---------------------------------------------------------------------------------------------
# the layers: torch.lstm / gru / rnn_tanh / rnn_relu (padded and packed forms)
# ---------------------------------------------------------------------------------------------


def _raise_like_torch(fn: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any],
                      error: BaseException | None = None) -> None:
    """Raise the error torch's own ``fn`` raises on these arguments (run on plain tensors
    under no_grad); if torch accepts them, raise ``error``, or say shimnn cannot."""

    def plain(a: Any) -> Any:
        if isinstance(a, Tensor):
            return a.detach()
        if isinstance(a, (list, tuple)):
            return type(a)(plain(x) for x in a)
        return a

    with no_dispatch(), torch.no_grad():
        try:
            fn(*plain(list(args)), **{k: plain(v) for k, v in kwargs.items()})
        except Exception as torch_error:
            raise torch_error.with_traceback(None) from None
    if error is not None:
        raise error
    raise NotImplementedError(
        f"shimnn: {getattr(fn, '__name__', fn)} with these arguments is not supported")


_LAYER_ARGS = ("has_biases", "num_layers", "dropout", "train", "bidirectional", "batch_first")


def _bind_layer(kind: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """The arguments of ``torch.<kind>``'s two overloads: ``(input, batch_sizes, hx, params,
    has_biases, num_layers, dropout, train, bidirectional, batch_first)``, ``batch_sizes``
    ``None`` for the padded one."""
    packed = (isinstance(args[1], Tensor) if kind == LSTM and len(args) > 1 else
              len(args) > 2 and isinstance(args[2], Tensor)) or "batch_sizes" in kwargs
    if len(args) == 9 and not kwargs:  # the modules' call
        if packed:
            return (args[0], *args[1:], False)
        return (args[0], None, *args[1:])
    names = (("data", "batch_sizes", "hx", "params", *_LAYER_ARGS[:-1]) if packed else
             ("input", "hx", "params", *_LAYER_ARGS))
    bound = dict(zip(names, args))
    bound.update(kwargs)
    if packed:
        bound["input"] = bound.pop("data")
        bound["batch_first"] = False
    else:
        bound["batch_sizes"] = None
    return tuple(bound[k] for k in ("input", "batch_sizes", "hx", "params", *_LAYER_ARGS))


def _layer(kind: str, torch_fn: Callable[..., Any], args: tuple[Any, ...],
           kwargs: dict[str, Any]) -> tuple[Tensor, ...]:
    try:
        (input, batch_sizes, hx_arg, params, has_biases, num_layers, dropout_p, train,
         bidirectional, batch_first) = _bind_layer(kind, args, kwargs)
    except (KeyError, IndexError, TypeError, ValueError):
        _raise_like_torch(torch_fn, args, kwargs)
    with no_dispatch():
        if kind == LSTM:
            if len(hx_arg) != 2:
                _raise_like_torch(torch_fn, args, kwargs)
            hx, cx = hx_arg
        else:
            hx, cx = hx_arg, None
        params = list(params)
        dirs = 2 if bidirectional else 1
        # torch's checks before any kernel (check_lstm_hidden_state_shapes, gather_params,
        # pair_vec, apply_layer_stack, "sequence length > 0"): on a mismatch, torch raises.
        states = [hx] if cx is None else [hx, cx]
        has_projections = cx is not None and hx.dim() == 3 and cx.dim() == 3 and \
            hx.shape[2] != cx.shape[2]
        grad_mode = is_grad_enabled()
        weights = _gather_params(params, has_biases, has_projections, grad_mode)
        steps = (len(batch_sizes) if batch_sizes is not None else
                 input.shape[1 if batch_first else 0] if input.dim() == 3 else 0)
        if (weights is None or len(weights) != num_layers * dirs or steps == 0
                or any(s.dim() != 3 or s.shape[0] != num_layers * dirs for s in states)):
            _raise_like_torch(torch_fn, args, kwargs)
        assert weights is not None
        tracking = grad_mode and (any(edge(t) is not None for t in (input, *states)) or any(
            e is not None for w in weights for e in w[5:]))
        if not tracking:
            # Nothing to record: torch's own function (its C++ loop over the same kernels, its
            # warnings), which gives torch's values by definition.
            return tuple(wrap(r) for r in torch_fn(*args, **kwargs))
        _check_real(kind.lower(), input)
        if input.dtype not in (torch.float32, torch.float64):
            raise NotImplementedError(
                f"shimnn: the backward of {kind.lower()} is written for float32 and float64; "
                f"got {input.dtype}")
        # the installed torch's choice (it changes between releases; the probe also gives
        # torch's own warnings, such as oneDNN's refusal of projections)
        use_mkldnn = rnn_uses_mkldnn(torch_fn, input, batch_sizes, states, params, has_biases,
                                     num_layers, dropout_p, train, bidirectional, batch_first)
        uniform = None  # packed with equal batch sizes: torch's packed lstm runs it padded
        if use_mkldnn:
            sizes_list = [] if batch_sizes is None else batch_sizes.tolist()
            if batch_sizes is not None and sizes_list.count(sizes_list[0]) == len(sizes_list):
                uniform = len(sizes_list)
            if kind != LSTM or has_projections or (batch_sizes is not None and uniform is None):
                form = "packed" if batch_sizes is not None else "padded"
                raise NotImplementedError(
                    f"shimnn: torch {torch.__version__}'s {kind.lower()} runs oneDNN "
                    f"(mkldnn_rnn_layer) for these arguments ({form}"
                    f"{', with projections' if has_projections else ''}); shimnn follows oneDNN "
                    "only for an LSTM without projections, padded or packed with equal batch "
                    "sizes")
        sizes = batch_sizes.tolist() if batch_sizes is not None else None
        set_grad_enabled(False)
        try:
            if use_mkldnn:
                assert cx is not None
                results, backward, edges, saved = _mkldnn_lstm(
                    input, hx, cx, weights, has_biases, num_layers, dropout_p, train,
                    bidirectional, batch_first, tracking, grad_mode, uniform)
            else:
                results, backward, edges, saved = _composite(
                    kind, input, sizes, hx, cx, weights, num_layers, dropout_p, train,
                    bidirectional, batch_first, tracking)
        except (RuntimeError, ValueError, IndexError, TypeError) as error:
            _raise_like_torch(torch_fn, args, kwargs, error)
        finally:
            set_grad_enabled(grad_mode)
        assert backward is not None
        name = _node_name(kind, use_mkldnn, batch_sizes is not None, dirs, batch_first)
        names = [name] + ["StackBackward0"] * (len(results) - 1)  # torch stacks the states
        return tuple(_record_outputs(results, name, backward, edges, saved, names))


def _node_name(kind: str, mkldnn: bool, packed: bool, dirs: int, batch_first: bool) -> str:
    """The name of torch's ``grad_fn`` of the output (for printing)."""
    if mkldnn and packed:
        return "ViewBackward0"
    if batch_first and not packed:
        return "TransposeBackward0" if kind == LSTM else "TransposeBackward1"
    if dirs == 2 or packed:
        return "CatBackward0"
    return "MkldnnRnnLayerBackward0" if mkldnn else "StackBackward0"


@implements(torch.lstm)
def lstm(*args: Any, **kwargs: Any) -> tuple[Tensor, Tensor, Tensor]:
    r"""``torch.lstm`` (``_VF.lstm``): an LSTM over a padded ``(T, B, H_in)`` input (``(B, T,
    H_in)`` with ``batch_first``) or a packed one (``data, batch_sizes``); ``hx = (h_0, c_0)``
    of shapes ``(L D, B, H_out)`` and ``(L D, B, H_cell)``; ``params`` torch's flat weights.
    Returns ``output, h_n, c_n``.

    Per step: gates = W_hh h + b_hh + (W_ih x + b_ih); i, f, g, o = sigmoid/tanh of its
    quarters; c' = f c + i g; h' = o tanh(c') (times W_hr with projections).

    Backward: backpropagation through time with torch's kernels, in torch's order (oneDNN's
    ``mkldnn_rnn_layer_backward`` where torch's forward took oneDNN)."""
    return _layer(LSTM, _torch_lstm, args, kwargs)  # type: ignore[return-value]


@implements(torch.gru)
def gru(*args: Any, **kwargs: Any) -> tuple[Tensor, Tensor]:
    r"""``torch.gru`` (``_VF.gru``): a GRU over a padded or packed input, ``hx`` of shape
    ``(L D, B, H)``. Returns ``output, h_n``.

    Per step: r, z = sigmoid(W_h{r,z} h + b_h{r,z} + W_i{r,z} x + b_i{r,z});
    n = tanh(W_in x + b_in + r (W_hn h + b_hn)); h' = (h - n) z + n.

    Backward: backpropagation through time with torch's kernels, in torch's order."""
    return _layer(GRU, _torch_gru, args, kwargs)  # type: ignore[return-value]


@implements(torch.rnn_tanh)
def rnn_tanh(*args: Any, **kwargs: Any) -> tuple[Tensor, Tensor]:
    r"""``torch.rnn_tanh``: h' = tanh(W_ih x + b_ih + W_hh h + b_hh) over a padded or packed
    input. Backward: through time, ``tanh_backward`` per step."""
    return _layer(RNN_TANH, _torch_rnn_tanh, args, kwargs)  # type: ignore[return-value]


@implements(torch.rnn_relu)
def rnn_relu(*args: Any, **kwargs: Any) -> tuple[Tensor, Tensor]:
    r"""``torch.rnn_relu``: h' = relu(W_ih x + b_ih + W_hh h + b_hh) over a padded or packed
    input. Backward: through time, ``threshold_backward(grad, h', 0)`` per step."""
    return _layer(RNN_RELU, _torch_rnn_relu, args, kwargs)  # type: ignore[return-value]


_torch_lstm, _torch_gru = torch.lstm, torch.gru
_torch_rnn_tanh, _torch_rnn_relu = torch.rnn_tanh, torch.rnn_relu


# ---------------------------------------------------------------------------------------------
# the cells
# ---------------------------------------------------------------------------------------------


def _cell(kind: str, torch_fn: Callable[..., Any], input: Tensor, hx: Any, w_ih: Tensor,
          w_hh: Tensor, b_ih: Tensor | None, b_hh: Tensor | None) -> Any:
    """One step of torch's ``LSTMCell``/``GRUCell``/``SimpleCell`` with its own input linear."""
    args = (input, hx, w_ih, w_hh, b_ih, b_hh)
    with no_dispatch():
        if kind == LSTM:
            if len(hx) != 2:
                _raise_like_torch(torch_fn, args, {})
            h, c = hx
        else:
            h, c = hx, None
        # torch's check_rnn_cell_forward_input / _weights / _hidden
        gates = _GATES[kind]
        hidden = w_hh.shape[1] if w_hh.dim() == 2 else -1
        states = [h] if c is None else [h, c]
        if (input.dim() != 2 or w_ih.dim() != 2 or input.shape[1] != w_ih.shape[1]
                or w_ih.shape[0] != gates * hidden or w_hh.shape[0] != gates * hidden
                or any(s.dim() != 2 or s.shape[0] != input.shape[0] or s.shape[1] != hidden
                       for s in states)):
            _raise_like_torch(torch_fn, args, {})
        grad_mode = is_grad_enabled()
        e_in, e_h, e_c = (edge(input), edge(h), edge(c)) if grad_mode else (None, None, None)
        w = _Weights(w_ih, w_hh, b_ih, b_hh, None,
                     *((edge(w_ih), edge(w_hh), edge(b_ih), edge(b_hh)) if grad_mode
                       else (None,) * 4), None)
        tracking = any(e is not None for e in (e_in, e_h, e_c, *w[5:]))
        if not tracking:  # nothing to record: torch's own function (see _layer)
            out = torch_fn(*args)
            return (wrap(out[0]), wrap(out[1])) if kind == LSTM else wrap(out)
        _check_real(f"{kind.lower()}_cell", input)
        step, step_backward = _step_fns(kind)
        set_grad_enabled(False)
        try:
            x_t = _hh(input, w_ih, b_ih)  # at::linear(input, w_ih, b_ih)
            hy, cy, rec = step(x_t, h, c, w)
        except (RuntimeError, ValueError, IndexError, TypeError) as error:
            _raise_like_torch(torch_fn, args, {}, error)
        finally:
            set_grad_enabled(grad_mode)
        in_column_major = _is_column_major(input)
        w_ih_row_major = _weight_is_row_major(w_ih)
        need_h, need_c = e_h is not None, e_c is not None

        def grads(g_h: Tensor | None, g_c: Tensor | None = None) -> list[Tensor | None]:
            d_x, h_in, d_c, _, d_b_hh, d_w_hh = step_backward(rec, g_h, g_c, w, need_h, need_c)
            d_input, d_w_ih, d_b_ih = linear_rows_backward(
                d_x, input, w_ih, e_in is not None, w.e_w_ih is not None,
                w.e_b_ih is not None, e_in is not None and in_column_major,
                w.e_w_ih is not None and w_ih_row_major)
            if kind == GRU:  # ih's linear was made first: hh's products run first
                return [h_in[0], d_b_hh, h_in[1], d_w_hh, d_b_ih, d_input, d_w_ih]
            out = [d_b_ih, d_input, d_w_ih, d_b_hh, h_in[0], d_w_hh]
            return [d_c, *out] if kind == LSTM else out

        ih = [w.e_b_ih, e_in, w.e_w_ih]
        saved = [t for t, e in ((input, w.e_w_ih), (w_ih, e_in), (h, w.e_w_hh)) if e is not None]
        saved += [w_hh]
        if kind == GRU:
            edges = [e_h, w.e_b_hh, e_h, w.e_w_hh, *ih]
            return record(hy, "AddBackward0", grads, tuple(edges), tuple(saved))
        if kind == LSTM:
            assert cy is not None
            edges = [e_c, *ih, w.e_b_hh, e_h, w.e_w_hh]
            outs = _record_outputs([hy, cy], "MulBackward0", grads, edges, [*saved, c],
                                   ("MulBackward0", "AddBackward0"))
            return outs[0], outs[1]
        edges = [*ih, w.e_b_hh, e_h, w.e_w_hh]
        name = "ReluBackward0" if kind == RNN_RELU else "TanhBackward0"
        return record(hy, name, grads, tuple(edges), tuple(saved))


@implements(torch.lstm_cell)
def lstm_cell(input: Tensor, hx: Sequence[Tensor], w_ih: Tensor, w_hh: Tensor,
              b_ih: Tensor | None = None, b_hh: Tensor | None = None) -> tuple[Tensor, Tensor]:
    r"""``torch.lstm_cell``: one LSTM step; input ``(B, H_in)``, ``hx = (h, c)`` each
    ``(B, H)``, ``w_ih`` ``(4H, H_in)``, ``w_hh`` ``(4H, H)``. Returns ``(h', c')``.

    Backward: the step's derivatives (``sigmoid_backward``, ``tanh_backward``, addmm's mm
    derivatives) in torch's order."""
    return _cell(LSTM, _torch_lstm_cell, input, hx, w_ih, w_hh, b_ih, b_hh)  # type: ignore


@implements(torch.gru_cell)
def gru_cell(input: Tensor, hx: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None = None,
             b_hh: Tensor | None = None) -> Tensor:
    r"""``torch.gru_cell``: one GRU step; input ``(B, H_in)``, hx ``(B, H)``, ``w_ih``
    ``(3H, H_in)``, ``w_hh`` ``(3H, H)``. Backward: the step's derivatives in torch's order."""
    return _cell(GRU, _torch_gru_cell, input, hx, w_ih, w_hh, b_ih, b_hh)  # type: ignore


@implements(torch.rnn_tanh_cell)
def rnn_tanh_cell(input: Tensor, hx: Tensor, w_ih: Tensor, w_hh: Tensor,
                  b_ih: Tensor | None = None, b_hh: Tensor | None = None) -> Tensor:
    r"""``torch.rnn_tanh_cell``: h' = tanh(W_ih x + b_ih + W_hh h + b_hh).
    Backward: ``tanh_backward(grad, h')``, then the two linears'."""
    return _cell(RNN_TANH, _torch_rnn_tanh_cell, input, hx, w_ih, w_hh, b_ih, b_hh)  # type: ignore


@implements(torch.rnn_relu_cell)
def rnn_relu_cell(input: Tensor, hx: Tensor, w_ih: Tensor, w_hh: Tensor,
                  b_ih: Tensor | None = None, b_hh: Tensor | None = None) -> Tensor:
    r"""``torch.rnn_relu_cell``: h' = relu(W_ih x + b_ih + W_hh h + b_hh).
    Backward: ``threshold_backward(grad, h', 0)``, then the two linears'."""
    return _cell(RNN_RELU, _torch_rnn_relu_cell, input, hx, w_ih, w_hh, b_ih, b_hh)  # type: ignore


_torch_lstm_cell, _torch_gru_cell = torch.lstm_cell, torch.gru_cell
_torch_rnn_tanh_cell, _torch_rnn_relu_cell = torch.rnn_tanh_cell, torch.rnn_relu_cell


# ---------------------------------------------------------------------------------------------
# packed sequences, and the permutation of hidden states
# ---------------------------------------------------------------------------------------------


@implements(torch._pack_padded_sequence)
def pack_padded_sequence_data(input: Tensor, lengths: Tensor, batch_first: bool
                              ) -> tuple[Tensor, Tensor]:
    """``_VF._pack_padded_sequence``: the packed ``data`` and ``batch_sizes``.
    Backward: ``_pack_padded_sequence_backward(grad, input.shape, batch_sizes, batch_first)``."""
    with no_dispatch():
        grad_mode = is_grad_enabled()
        e = edge(input) if grad_mode else None
        set_grad_enabled(False)
        try:
            data, batch_sizes = torch._pack_padded_sequence(input, lengths, batch_first)
        finally:
            set_grad_enabled(grad_mode)
        if e is None:
            return wrap(data), batch_sizes
        shape = list(input.shape)

        def backward(grad: Tensor) -> tuple[Tensor]:
            return (_pack_padded_sequence_backward(grad, shape, batch_sizes, batch_first),)

        return record(data, "PackPaddedSequenceBackward0", backward, (e,)), batch_sizes


@implements(torch._pad_packed_sequence)
def pad_packed_sequence_data(data: Tensor, batch_sizes: Tensor, batch_first: bool,
                             padding_value: float, total_length: int) -> tuple[Tensor, Tensor]:
    """``_VF._pad_packed_sequence``: the padded ``(T, B, *)`` (or ``(B, T, *)``) and lengths.

    Backward, as torch's composite records it (``full``, then one ``copy_`` per block of equal
    batch size from a ``view`` of a ``slice`` of ``data``): each block's region of the
    gradient, reshaped and zero-padded to ``data`` (SliceBackward0), summed newest first."""
    with no_dispatch():
        grad_mode = is_grad_enabled()
        e = edge(data) if grad_mode else None
        set_grad_enabled(False)
        try:
            padded, lengths = torch._pad_packed_sequence(data, batch_sizes, batch_first,
                                                         padding_value, total_length)
        finally:
            set_grad_enabled(grad_mode)
        if e is None:
            return wrap(padded), lengths
        sizes = batch_sizes.tolist()
        blocks = []  # (first step, end step, batch, data offset) of each copy_
        offset, prev_size, prev_i = 0, sizes[0], 0
        for i in range(len(sizes) + 1):
            size = sizes[i] if i < len(sizes) else 0
            if size != prev_size:
                blocks.append((prev_i, i, prev_size, offset))
                offset += prev_size * (i - prev_i)
                prev_i = i
            prev_size = size
        shape = list(data.shape)

        def backward(grad: Tensor) -> tuple[Tensor | None]:
            g = grad.transpose(0, 1) if batch_first else grad
            parts = []
            for first, end, size, off in reversed(blocks):
                region = g[first:end, :size].reshape(size * (end - first), *shape[1:])
                parts.append(_slice_backward(region, shape, 0, off, off + size * (end - first),
                                             1))
            return (_acc(*parts),)

        return record(padded, "CopySlices", backward, (e,)), lengths


@implements(torch._C._nn.pad_sequence)
def pad_sequence(sequences: Sequence[Tensor], batch_first: bool = False,
                 padding_value: float = 0.0, padding_side: str = "right") -> Tensor:
    """``torch._C._nn.pad_sequence``: the sequences ``(L_i, *)`` padded into ``(T, B, *)``
    (``(B, T, *)`` with ``batch_first``). Backward: each sequence's region of the gradient
    (torch copies each into a slice of the padded tensor)."""
    with no_dispatch():
        sequences = list(sequences)
        grad_mode = is_grad_enabled()
        edges = tuple(edge(s) for s in sequences) if grad_mode else ()
        set_grad_enabled(False)
        try:
            out = torch._C._nn.pad_sequence(sequences, batch_first, padding_value,
                                            padding_side)  # type: ignore[arg-type]
        finally:
            set_grad_enabled(grad_mode)
        if not any(e is not None for e in edges):
            return wrap(out)
        total = out.shape[1 if batch_first else 0]
        spans = [(total - s.shape[0] if padding_side == "left" else 0, s.shape[0])
                 for s in sequences]

        def backward(grad: Tensor) -> list[Tensor | None]:
            return [(grad.select(0, i).narrow(0, start, length) if batch_first else
                     grad.narrow(0, start, length).select(1, i)).clone()
                    if e is not None else None
                    for i, ((start, length), e) in enumerate(zip(spans, edges))]

        return record(out, "CopySlices", backward, edges)
