"""RNN, LSTM, GRU and their cells against torch: outputs, final states, input, initial-state and
parameter gradients, bit for bit, over every option, both CPU paths torch takes (oneDNN for a
float32 LSTM, the composite otherwise), packed sequences, dropout, and the ways a script can
use the outputs (hooks, retain_grad, in-place ops, partial backward, retain_graph)."""

from __future__ import annotations

import gc
import itertools
import warnings
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import (
    PackedSequence,
    pack_padded_sequence,
    pack_sequence,
    pad_packed_sequence,
    unpack_sequence,
)

import shimnn
from conftest import assert_no_autograd_graph, assert_same, autograd_forbidden
from parity import assert_error_like, check_raises_like, twin_modules
from test_gradcheck import numerical_grad

DTYPES = [torch.float32, torch.float64]
LAYERS = ["RNN", "LSTM", "GRU"]
CELLS = ["RNNCell", "LSTMCell", "GRUCell"]


# ---------------------------------------------------------------------------------------------
# the harness: the same leaves, forward and loss under torch and shimnn
# ---------------------------------------------------------------------------------------------


def _flat(x: Any) -> list[torch.Tensor]:
    if isinstance(x, PackedSequence):
        return [x.data]
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, (tuple, list)):
        return [t for v in x for t in _flat(v)]
    return []


def _loss(outputs: Sequence[torch.Tensor], seed: int, zero_first: bool = False,
          negative_zero: bool = False) -> torch.Tensor:
    """A random linear functional of the outputs (a random upstream gradient each)."""
    g = torch.Generator().manual_seed(seed)
    total: torch.Tensor | int = 0
    for k, o in enumerate(outputs):
        w = torch.randn(o.shape, generator=g, dtype=o.dtype)
        if zero_first and k == 0:
            w[..., ::2] = 0.0  # zero upstream gradients make -0.0 gradients: bits must agree
        if negative_zero:
            w.fill_(-0.0)  # every gradient is a signed zero: only the order of sums decides
        total = total + (o * w).sum()
    assert isinstance(total, torch.Tensor)
    return total


def run_both(ref: torch.nn.Module, shim: torch.nn.Module, leaves: Sequence[torch.Tensor],
             forward: Callable[[torch.nn.Module, list[torch.Tensor]], Sequence[torch.Tensor]],
             seed: int = 0, zero_first: bool = False, rng_seed: int = 7,
             negative_zero: bool = False) -> None:
    """Run ``forward`` on fresh copies of ``leaves`` (those floating point require grad) under
    torch, then under shimnn with autograd forbidden; compare outputs and every gradient."""
    results = []
    for module in (ref, shim):
        xs = [t.detach().clone().requires_grad_(t.dtype.is_floating_point) for t in leaves]
        torch.manual_seed(rng_seed)  # dropout draws the same masks in both
        if module is shim:
            with autograd_forbidden():
                outs = list(forward(module, xs))
                assert_no_autograd_graph(*outs)
                _loss(outs, seed, zero_first, negative_zero).backward()
        else:
            outs = list(forward(module, xs))
            _loss(outs, seed, zero_first, negative_zero).backward()
        results.append((outs, xs, dict(module.named_parameters()), torch.get_rng_state()))
    (r_out, r_in, r_par, r_rng), (s_out, s_in, s_par, s_rng) = results
    assert len(s_out) == len(r_out)
    for i, (a, b) in enumerate(zip(s_out, r_out)):
        assert_same(a, b, f"output {i}")
    for i, (a, b) in enumerate(zip(s_in, r_in)):
        assert_same(a.grad, b.grad, f"grad of input {i}")
    for name, p in s_par.items():
        assert_same(p.grad, r_par[name].grad, f"grad of {name}")
    assert torch.equal(s_rng, r_rng), "a different number of random draws"


def _randn(*shape: int, dtype: torch.dtype, seed: int = 1) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _layer_case(cls: str, dtype: torch.dtype, *, num_layers: int = 1, bidirectional: bool = False,
                batch_first: bool = False, bias: bool = True, proj_size: int = 0,
                nonlinearity: str = "tanh", dropout: float = 0.0, h0: bool = True,
                use: str = "ohc", steps: int = 4, batch: int = 3, input_size: int = 3,
                hidden: int = 5, zero_first: bool = False, unbatched: bool = False,
                negative_zero: bool = False) -> None:
    kwargs: dict[str, Any] = {"num_layers": num_layers, "bidirectional": bidirectional,
                              "batch_first": batch_first, "bias": bias, "dropout": dropout}
    if cls == "LSTM":
        kwargs["proj_size"] = proj_size
    if cls == "RNN":
        kwargs["nonlinearity"] = nonlinearity
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dropout with one layer
        ref, shim = twin_modules(
            lambda nn: getattr(nn, cls)(input_size, hidden, dtype=dtype, **kwargs))
    dirs = 2 if bidirectional else 1
    out_size = proj_size or hidden
    if unbatched:
        x = _randn(steps, input_size, dtype=dtype)
        states = [_randn(num_layers * dirs, out_size, dtype=dtype, seed=2),
                  _randn(num_layers * dirs, hidden, dtype=dtype, seed=3)]
    else:
        x = _randn(*((batch, steps) if batch_first else (steps, batch)), input_size, dtype=dtype)
        states = [_randn(num_layers * dirs, batch, out_size, dtype=dtype, seed=2),
                  _randn(num_layers * dirs, batch, hidden, dtype=dtype, seed=3)]
    lstm = cls == "LSTM"
    leaves = [x, *(states if lstm else states[:1])] if h0 else [x]

    def forward(m: torch.nn.Module, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        if h0:
            out, h = m(xs[0], (xs[1], xs[2]) if lstm else xs[1])
        else:
            out, h = m(xs[0])
        hs = list(h) if lstm else [h]
        picked = [out] if "o" in use else []
        picked += [hs[0]] if "h" in use else []
        picked += [hs[1]] if "c" in use and lstm else []
        return picked

    run_both(ref, shim, leaves, forward, zero_first=zero_first, negative_zero=negative_zero)


# ---------------------------------------------------------------------------------------------
# layers: every option, both dtypes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (1, True), (2, False),
                                                      (3, True)])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("h0", [False, True])
def test_layer_matches_torch(cls: str, dtype: torch.dtype, num_layers: int, bidirectional: bool,
                             batch_first: bool, bias: bool, h0: bool) -> None:
    _layer_case(cls, dtype, num_layers=num_layers, bidirectional=bidirectional,
                batch_first=batch_first, bias=bias, h0=h0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (2, True), (3, False)])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_lstm_projections(dtype: torch.dtype, num_layers: int, bidirectional: bool,
                          batch_first: bool, bias: bool) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's "not supported with oneDNN" note
        _layer_case("LSTM", dtype, num_layers=num_layers, bidirectional=bidirectional,
                    batch_first=batch_first, bias=bias, proj_size=2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (2, True)])
def test_rnn_relu(dtype: torch.dtype, num_layers: int, bidirectional: bool) -> None:
    _layer_case("RNN", dtype, num_layers=num_layers, bidirectional=bidirectional,
                nonlinearity="relu")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize("use", ["o", "h", "c", "hc", "oc"])
@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (2, True)])
def test_backward_through_some_outputs(cls: str, dtype: torch.dtype, use: str, num_layers: int,
                                       bidirectional: bool) -> None:
    """Only the output, only h_n, only c_n...: the others' gradients are undefined, not zero."""
    if cls != "LSTM" and "c" in use:
        pytest.skip("only an LSTM has c_n")
    _layer_case(cls, dtype, num_layers=num_layers, bidirectional=bidirectional, use=use)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize("steps,batch,hidden", [(1, 1, 1), (1, 4, 2), (6, 1, 1), (7, 2, 6)])
def test_small_and_odd_sizes(cls: str, dtype: torch.dtype, steps: int, batch: int,
                             hidden: int) -> None:
    """One step, one sample, a hidden size of 1 (where a matrix is both row- and column-major
    and torch's mm derivatives pick another operand order), with zero upstream gradients."""
    for batch_first in (False, True):
        _layer_case(cls, dtype, num_layers=2, bidirectional=True, batch_first=batch_first,
                    steps=steps, batch=batch, hidden=hidden, zero_first=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("h0", [False, True])
def test_unbatched(cls: str, dtype: torch.dtype, batch_first: bool, h0: bool) -> None:
    _layer_case(cls, dtype, num_layers=2, bidirectional=True, batch_first=batch_first, h0=h0,
                unbatched=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize("p", [0.3, 1.0])
def test_dropout_between_layers(cls: str, dtype: torch.dtype, p: float) -> None:
    """Same masks (same draws from the global generator, same state after), same gradients."""
    _layer_case(cls, dtype, num_layers=3, bidirectional=True, dropout=p)
    _layer_case(cls, dtype, num_layers=2, dropout=p, batch_first=True)


@pytest.mark.parametrize("cls", LAYERS)
def test_eval_mode_drops_nothing(cls: str) -> None:
    ref, shim = twin_modules(lambda nn: getattr(nn, cls)(3, 4, num_layers=2, dropout=0.5))
    ref.eval()
    shim.eval()
    x = _randn(5, 2, 3, dtype=torch.float32)
    run_both(ref, shim, [x], lambda m, xs: [m(xs[0])[0]])


def test_lstm_float32_without_onednn_is_the_composite() -> None:
    """With oneDNN disabled torch's float32 LSTM runs the composite: so does shimnn's."""
    with torch.backends.mkldnn.flags(enabled=False):
        _layer_case("LSTM", torch.float32, num_layers=2, bidirectional=True)
        _layer_case("LSTM", torch.float32, batch_first=True)


def test_noncontiguous_input_and_states() -> None:
    """torch's oneDNN path copies non-contiguous inputs and states (contiguous()): their
    gradients arrive summed, once; the composite differentiates the strided views."""
    for dtype, batch_first in itertools.product(DTYPES, (False, True)):
        ref, shim = twin_modules(lambda nn: nn.LSTM(3, 4, num_layers=2, bidirectional=True,
                                                    batch_first=batch_first, dtype=dtype))
        # (5 steps, 2 samples, 3) or batch first (2, 5, 3), strided either way
        x = _randn(*((5, 2) if batch_first else (2, 5)), 3, dtype=dtype).transpose(0, 1)
        h = _randn(2, 4, 4, dtype=dtype, seed=2).transpose(0, 1)[:, :2]  # (4, 2, 4) strided
        c = _randn(4, 4, 2, dtype=dtype, seed=3).permute(1, 2, 0)

        def forward(m: torch.nn.Module, xs: list[torch.Tensor]) -> list[torch.Tensor]:
            out, (h_n, c_n) = m(xs[0], (xs[1], xs[2]))
            return [out, h_n, c_n]

        for leaves in ([x, h, c], [x.contiguous(), h, c.contiguous()]):
            assert not leaves[1].is_contiguous()
            run_both(ref, shim, leaves, forward)


# ---------------------------------------------------------------------------------------------
# packed sequences
# ---------------------------------------------------------------------------------------------

LENGTHS = [[4, 2, 1], [3, 3, 1], [2, 2, 2], [5, 1], [5, 4, 4, 2, 2]]


def _packed_case(cls: str, dtype: torch.dtype, lengths: list[int], *, num_layers: int = 1,
                 bidirectional: bool = False, batch_first: bool = False, h0: bool = True,
                 use: str = "ohc", pad: bool = True, proj_size: int = 0,
                 dropout: float = 0.0, negative_zero: bool = False) -> None:
    kwargs: dict[str, Any] = {"num_layers": num_layers, "bidirectional": bidirectional,
                              "batch_first": batch_first, "dropout": dropout}
    if proj_size:
        kwargs["proj_size"] = proj_size
    ref, shim = twin_modules(lambda nn: getattr(nn, cls)(3, 4, dtype=dtype, **kwargs))
    dirs = 2 if bidirectional else 1
    batch, steps = len(lengths), max(lengths)
    x = _randn(*((batch, steps) if batch_first else (steps, batch)), 3, dtype=dtype)
    states = [_randn(num_layers * dirs, batch, proj_size or 4, dtype=dtype, seed=2),
              _randn(num_layers * dirs, batch, 4, dtype=dtype, seed=3)]
    lstm = cls == "LSTM"
    leaves = [x, *(states if lstm else states[:1])] if h0 else [x]

    def forward(m: torch.nn.Module, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        # shimnn's run sees the input as a shimnn tensor (as an embedding's output would be),
        # so that torch's pack_padded_sequence reaches shimnn's _pack_padded_sequence
        inp = xs[0] if m is ref else shimnn.TrackedTensor._make_subclass(
            shimnn.TrackedTensor, xs[0].detach(), True)
        packed = pack_padded_sequence(inp, lengths, batch_first=batch_first)
        hx = ((xs[1], xs[2]) if lstm else xs[1]) if h0 else None
        out, h = m(packed, hx)
        hs = list(h) if lstm else [h]
        data = pad_packed_sequence(out, batch_first=batch_first)[0] if pad else out.data
        if m is shim:
            forward.shim_input = inp  # type: ignore[attr-defined]
        picked = [data] if "o" in use else []
        picked += [hs[0]] if "h" in use else []
        picked += [hs[1]] if "c" in use and lstm else []
        return picked

    # compare the input gradient through the tracked alias: run_both compares xs[0].grad,
    # which the alias does not fill, so check it here
    results = []
    for module in (ref, shim):
        xs = [t.detach().clone().requires_grad_() for t in leaves]
        torch.manual_seed(7)
        ctx = autograd_forbidden() if module is shim else torch.enable_grad()
        with ctx:
            outs = forward(module, xs)
            _loss(outs, 0, zero_first=True, negative_zero=negative_zero).backward()
        x_grad = xs[0].grad if module is ref else forward.shim_input.grad  # type: ignore
        results.append((outs, x_grad, [t.grad for t in xs[1:]],
                        dict(module.named_parameters())))
    (r_out, r_x, r_h, r_par), (s_out, s_x, s_h, s_par) = results
    for i, (a, b) in enumerate(zip(s_out, r_out)):
        assert_same(a, b, f"output {i}")
    assert_same(s_x, r_x, "grad of the input")
    for i, (a, b) in enumerate(zip(s_h, r_h)):
        assert_same(a, b, f"grad of state {i}")
    for name, p in s_par.items():
        assert_same(p.grad, r_par[name].grad, f"grad of {name}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize("lengths", LENGTHS, ids=str)
@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (1, True), (2, True)])
@pytest.mark.parametrize("h0", [False, True])
def test_packed_matches_torch(cls: str, dtype: torch.dtype, lengths: list[int], num_layers: int,
                              bidirectional: bool, h0: bool) -> None:
    """torch's PackedLayer / ReversedPackedLayer (the hidden state sliced where sequences end
    and grown from h_0 where they start), or, for a float32 LSTM with equal lengths, oneDNN."""
    _packed_case(cls, dtype, lengths, num_layers=num_layers, bidirectional=bidirectional, h0=h0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize("use", ["o", "h", "c"])
def test_packed_partial_and_variants(cls: str, dtype: torch.dtype, use: str) -> None:
    if cls != "LSTM" and use == "c":
        pytest.skip("only an LSTM has c_n")
    for lengths in ([4, 2, 1], [3, 3, 3]):
        _packed_case(cls, dtype, lengths, num_layers=2, bidirectional=True, use=use)
        _packed_case(cls, dtype, lengths, num_layers=2, bidirectional=True, batch_first=True,
                     pad=False)
        _packed_case(cls, dtype, lengths, num_layers=3, bidirectional=True, dropout=0.4)
    if cls == "LSTM":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _packed_case(cls, dtype, [4, 2, 1], num_layers=2, bidirectional=True, proj_size=2)


@pytest.mark.parametrize("dtype", DTYPES)
def test_pack_sequence(dtype: torch.dtype) -> None:
    """pack_sequence (pad_sequence, then pack_padded_sequence) of shimnn tensors."""
    ref, shim = twin_modules(lambda nn: nn.GRU(3, 4, dtype=dtype))
    seqs = [_randn(n, 3, dtype=dtype, seed=n) for n in (5, 3, 2)]

    def forward(m: torch.nn.Module, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        # shimnn tensors (an embedding's outputs, say) reach shimnn's pad_sequence
        seq = [x * 1.0 for x in xs] if m is ref else [shimnn.ops.tensor.mul(x, 1.0) for x in xs]
        out, h = m(pack_sequence(seq))
        return [pad_packed_sequence(out)[0], h]

    run_both(ref, shim, seqs, forward)
    for side in ("right", "left"):
        torch_p = torch.nn.utils.rnn.pad_sequence(seqs, padding_side=side)
        with autograd_forbidden():
            shim_seqs = [shimnn.Parameter(s.clone()) for s in seqs]
            shim_p = torch.nn.utils.rnn.pad_sequence(shim_seqs, padding_side=side)
            (shim_p * torch.arange(shim_p.numel()).view(shim_p.shape)).sum().backward()
        torch_seqs = [s.clone().requires_grad_() for s in seqs]
        ref_p = torch.nn.utils.rnn.pad_sequence(torch_seqs, padding_side=side)
        (ref_p * torch.arange(ref_p.numel()).view(ref_p.shape)).sum().backward()
        assert_same(shim_p, torch_p, side)
        for a, b in zip(shim_seqs, torch_seqs):
            assert_same(a.grad, b.grad, f"{side} padded sequence gradient")


@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize("batch_first", [False, True])
def test_unsorted_lengths(cls: str, batch_first: bool) -> None:
    """enforce_sorted=False: torch sorts the batch (index_select of the input and of h_0) and
    pad_packed_sequence unsorts the output; every gradient goes back through the permutation."""
    ref, shim = twin_modules(lambda nn: getattr(nn, cls)(3, 4, bidirectional=True,
                                                         batch_first=batch_first))
    x = _randn(*((3, 4) if batch_first else (4, 3)), 3, dtype=torch.float32)
    states = [_randn(2, 3, 4, dtype=torch.float32, seed=s) for s in (2, 3)]
    lstm = cls == "LSTM"

    def forward(m: torch.nn.Module, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        inp = xs[0] * 1.0 if m is ref else shimnn.ops.tensor.mul(xs[0], 1.0)
        packed = pack_padded_sequence(inp, [2, 4, 1], batch_first=batch_first,
                                      enforce_sorted=False)
        out, h = m(packed, (xs[1], xs[2]) if lstm else xs[1])
        return [pad_packed_sequence(out, batch_first=batch_first)[0], *_flat(h)]

    run_both(ref, shim, [x, *(states if lstm else states[:1])], forward)


# ---------------------------------------------------------------------------------------------
# cells
# ---------------------------------------------------------------------------------------------


def _cell_case(cls: str, dtype: torch.dtype, *, bias: bool = True, nonlinearity: str = "tanh",
               state: bool = True, use: str = "hc", unbatched: bool = False, steps: int = 3,
               batch: int = 3, hidden: int = 4) -> None:
    kwargs: dict[str, Any] = {"bias": bias}
    if cls == "RNNCell":
        kwargs["nonlinearity"] = nonlinearity
    ref, shim = twin_modules(lambda nn: getattr(nn, cls)(3, hidden, dtype=dtype, **kwargs))
    lead = () if unbatched else (batch,)
    xs = [_randn(*lead, 3, dtype=dtype, seed=10 + t) for t in range(steps)]
    states = [_randn(*lead, hidden, dtype=dtype, seed=s) for s in (2, 3)]
    lstm = cls == "LSTMCell"
    leaves = [*xs, *(states if lstm else states[:1])] if state else xs

    def forward(m: torch.nn.Module, ts: list[torch.Tensor]) -> list[torch.Tensor]:
        s: Any = ((ts[steps], ts[steps + 1]) if lstm else ts[steps]) if state else None
        picked = []
        for x in ts[:steps]:
            s = m(x, s)
            parts = list(s) if lstm else [s]
            picked += [parts[0]] if "h" in use else []
            picked += [parts[1]] if "c" in use and lstm else []
        return picked

    run_both(ref, shim, leaves, forward, zero_first=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", CELLS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("state", [True, False])
@pytest.mark.parametrize("unbatched", [False, True])
def test_cell_matches_torch(cls: str, dtype: torch.dtype, bias: bool, state: bool,
                            unbatched: bool) -> None:
    _cell_case(cls, dtype, bias=bias, state=state, unbatched=unbatched)
    if cls == "RNNCell":
        _cell_case(cls, dtype, bias=bias, state=state, unbatched=unbatched,
                   nonlinearity="relu")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("use", ["h", "c"])
@pytest.mark.parametrize("batch,hidden", [(1, 1), (2, 1), (1, 5), (4, 3)])
def test_lstm_cell_partial_and_sizes(dtype: torch.dtype, use: str, batch: int,
                                     hidden: int) -> None:
    _cell_case("LSTMCell", dtype, use=use, batch=batch, hidden=hidden, steps=1)
    _cell_case("GRUCell", dtype, batch=batch, hidden=hidden, steps=2)


def test_cell_input_as_its_own_state() -> None:
    """One tensor as both input and state: its gradients arrive in torch's order."""
    for cls in CELLS:
        ref, shim = twin_modules(lambda nn: getattr(nn, cls)(4, 4, dtype=torch.float64))
        x = _randn(2, 4, dtype=torch.float64)

        def forward(m: torch.nn.Module, xs: list[torch.Tensor]) -> list[torch.Tensor]:
            out = m(xs[0], (xs[0], xs[0]) if cls == "LSTMCell" else xs[0])
            return list(out) if isinstance(out, tuple) else [out]

        run_both(ref, shim, [x], forward)


# ---------------------------------------------------------------------------------------------
# torch's own test samples
# ---------------------------------------------------------------------------------------------

_MODULE_DB_CLASSES = [torch.nn.RNN, torch.nn.LSTM, torch.nn.GRU, torch.nn.RNNCell,
                      torch.nn.LSTMCell, torch.nn.GRUCell]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("torch_cls", _MODULE_DB_CLASSES, ids=lambda c: c.__name__)
def test_module_db_samples(torch_cls: type, dtype: torch.dtype, training: bool) -> None:
    """torch's module_db samples for each class, bit for bit (outputs, input and parameter
    gradients)."""
    common_modules = pytest.importorskip("torch.testing._internal.common_modules")
    info = next(m for m in common_modules.module_db if m.module_cls is torch_cls)
    samples = info.module_inputs_func(info, device="cpu", dtype=dtype, requires_grad=True,
                                      training=training)
    assert samples
    name = torch_cls.__name__
    for sample in samples:
        args, kwargs = sample.constructor_input.args, sample.constructor_input.kwargs
        ref, shim = twin_modules(lambda nn: getattr(nn, name)(*args, **kwargs).to(dtype))
        ref.train(training)
        shim.train(training)
        inputs = list(sample.forward_input.args)
        leaves = _flat(inputs)

        def forward(m: torch.nn.Module, xs: list[torch.Tensor], inputs: Any = inputs
                    ) -> list[torch.Tensor]:
            it = iter(xs)

            def rebuild(v: Any) -> Any:
                if isinstance(v, torch.Tensor):
                    return next(it)
                if isinstance(v, tuple):
                    return tuple(rebuild(u) for u in v)
                return v

            return _flat(m(*[rebuild(v) for v in inputs], **sample.forward_input.kwargs))

        run_both(ref, shim, leaves, forward)


# ---------------------------------------------------------------------------------------------
# a second oracle: finite differences in float64
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ["LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell"])
def test_finite_differences(cls: str) -> None:
    torch.manual_seed(0)
    layer = "Cell" not in cls
    kwargs: dict[str, Any] = {"num_layers": 2, "bidirectional": True} if layer else {}
    if cls == "LSTM":
        kwargs["proj_size"] = 2
    m = getattr(shimnn, cls)(2, 3, dtype=torch.float64, **kwargs)
    x = shimnn.Parameter(_randn(3, 2, 2, dtype=torch.float64) if layer else
                         _randn(2, 2, dtype=torch.float64))
    w_out = _randn(*((3, 2, 4) if cls == "LSTM" else (3, 2, 6) if layer else (2, 3)),
                   dtype=torch.float64, seed=5)

    def f() -> torch.Tensor:
        out = m(x)
        out = out[0]
        return (out * w_out).sum()

    tensors = [x, *m.parameters()]
    with autograd_forbidden():
        f().backward()
    for t in tensors:
        expected = numerical_grad(f, t)
        torch.testing.assert_close(t.grad, expected, rtol=1e-6, atol=1e-8)


# ---------------------------------------------------------------------------------------------
# the ways a script uses the outputs
# ---------------------------------------------------------------------------------------------


def _twin_lstm(dtype: torch.dtype = torch.float32, **kwargs: Any
               ) -> tuple[torch.nn.Module, torch.nn.Module]:
    return twin_modules(lambda nn: nn.LSTM(3, 4, dtype=dtype, **kwargs))


@pytest.mark.parametrize("dtype", DTYPES)
def test_hooks_and_retain_grad_on_outputs_and_states(dtype: torch.dtype) -> None:
    ref, shim = _twin_lstm(dtype, num_layers=2)
    seen: dict[str, list[torch.Tensor]] = {"ref": [], "shim": []}

    def forward(m: torch.nn.Module, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        key = "ref" if m is ref else "shim"
        out, (h, c) = m(xs[0])
        out.retain_grad()
        h.register_hook(lambda g: seen[key].append(g.clone()))
        c.register_hook(lambda g: g * 2)  # a hook that replaces the gradient
        out.register_hook(lambda g: seen[key].append(g.clone()))
        forward.kept[key] = out  # type: ignore[attr-defined]
        return [out, h, c]

    forward.kept = {}  # type: ignore[attr-defined]
    run_both(ref, shim, [_randn(4, 2, 3, dtype=dtype)], forward)
    assert len(seen["shim"]) == len(seen["ref"]) == 2
    for a, b in zip(seen["shim"], seen["ref"]):
        assert_same(a, b, "hook gradient")
    assert_same(forward.kept["shim"].grad, forward.kept["ref"].grad, "retained")  # type: ignore


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", LAYERS)
def test_outputs_used_twice_and_in_place_ops(cls: str, dtype: torch.dtype) -> None:
    """out.relu_() on the composite's output (a stack nobody saved), outputs used twice."""
    ref, shim = twin_modules(lambda nn: getattr(nn, cls)(3, 4, bidirectional=True,
                                                         dtype=dtype))

    def forward(m: torch.nn.Module, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        out, h = m(xs[0])
        h = h[0] if isinstance(h, tuple) else h
        y = out * 2.0
        out = out.relu_()
        return [y, out, out * h.sum(), h]

    run_both(ref, shim, [_randn(4, 2, 3, dtype=dtype)], forward)


def test_in_place_on_a_saved_output_raises_like_torch() -> None:
    """torch's oneDNN LSTM saves its output: an in-place op on it, then backward, raises."""
    for batch_first in (False, True):
        ref, shim = _twin_lstm(batch_first=batch_first)
        x = _randn(4, 2, 3, dtype=torch.float32)

        def run(m: torch.nn.Module) -> None:
            out, _ = m(x.clone().requires_grad_())
            out.relu_()
            out.sum().backward()

        ref_e, shim_e = check_raises_like(lambda: run(ref), lambda: run(shim))
        assert "modified by an inplace operation" in str(shim_e)


def test_optimizer_step_before_backward_raises_like_torch() -> None:
    """A weight changed in place between forward and backward (a saved tensor): torch raises."""
    for dtype in DTYPES:
        ref, shim = twin_modules(lambda nn: nn.GRU(3, 4, dtype=dtype))
        x = _randn(4, 2, 3, dtype=dtype)

        def run(m: torch.nn.Module) -> None:
            out, _ = m(x)
            with torch.no_grad():
                m.weight_hh_l0.add_(1.0)
            out.sum().backward()

        check_raises_like(lambda: run(ref), lambda: run(shim))


@pytest.mark.parametrize("dtype", DTYPES)
def test_retain_graph_twice_then_freed(dtype: torch.dtype) -> None:
    ref, shim = _twin_lstm(dtype, num_layers=2, bidirectional=True)
    x = _randn(5, 2, 3, dtype=dtype)
    grads = []
    for m in (ref, shim):
        ctx = autograd_forbidden() if m is shim else torch.enable_grad()
        with ctx:
            out, (h, c) = m(x)
            loss = _loss([out, h, c], 3)
            loss.backward(retain_graph=True)
            loss.backward(retain_graph=True)
            h.sum().backward()  # frees the graph
            with pytest.raises(RuntimeError, match="backward through the graph a second time"):
                out.sum().backward()
        grads.append({k: p.grad for k, p in m.named_parameters()})
    for k in grads[0]:
        assert_same(grads[1][k], grads[0][k], k)


def test_weights_shared_by_several_calls() -> None:
    """A siamese use: one module on two sequences. A weight's per-step gradients reach the
    leaf one by one, newest call first, so the sum matches torch's."""
    for cls, dtype in itertools.product(LAYERS, DTYPES):
        ref, shim = twin_modules(lambda nn: getattr(nn, cls)(3, 4, num_layers=2, dtype=dtype))

        def forward(m: torch.nn.Module, xs: list[torch.Tensor]) -> list[torch.Tensor]:
            a, _ = m(xs[0])
            b, _ = m(xs[1])
            c, _ = m(a[:, :, :3])
            return [a, b, c]

        run_both(ref, shim, [_randn(4, 2, 3, dtype=dtype), _randn(6, 2, 3, dtype=dtype, seed=4)],
                 forward)


def test_decoder_step_by_step() -> None:
    """A seq2seq decoder: the layer called once per step on its own previous state."""
    for cls, dtype in itertools.product(LAYERS, DTYPES):
        ref, shim = twin_modules(lambda nn: getattr(nn, cls)(3, 3, dtype=dtype))

        def forward(m: torch.nn.Module, xs: list[torch.Tensor]) -> list[torch.Tensor]:
            inp, state, outs = xs[0], None, []
            for _ in range(4):
                out, state = m(inp, state)
                outs.append(out)
                inp = out
            return outs

        run_both(ref, shim, [_randn(1, 2, 3, dtype=dtype)], forward)


def test_forward_without_backward_frees_the_graph() -> None:
    """Freed as soon as the outputs are: no reference cycle waits for the collector (every
    step's values, oneDNN's workspace...)."""
    gc.collect()
    gc.disable()
    try:
        for cls, dtype in itertools.product(LAYERS + ["LSTMCell"], DTYPES):
            m = getattr(shimnn, cls)(3, 4, dtype=dtype, **({} if "Cell" in cls else
                                                           {"num_layers": 2}))
            out = m(_randn(*((2, 3) if "Cell" in cls else (5, 2, 3)), dtype=dtype))
            backward = weakref.ref(out[0].shim_fn.backward)  # the closure over the steps
            del out
            assert backward() is None, cls
    finally:
        gc.enable()


def test_no_grad_forward_records_nothing() -> None:
    for cls, dtype in itertools.product(LAYERS + CELLS, DTYPES):
        ref, shim = twin_modules(lambda nn: getattr(nn, cls)(3, 4, dtype=dtype))
        x = _randn(*((5, 2, 3) if "Cell" not in cls else (2, 3)), dtype=dtype)
        with torch.no_grad():
            r, s = ref(x), shim(x)
        for a, b in zip(_flat(s), _flat(r)):
            assert_same(a, b)
            assert not a.requires_grad and a.shim_fn is None


def test_torch_functions_on_shimnn_tensors() -> None:
    """torch.lstm, torch.gru_cell... called directly reach shimnn's ops."""
    torch.manual_seed(0)
    w = [torch.randn(16, 3), torch.randn(16, 4), torch.randn(16), torch.randn(16)]
    x = torch.randn(5, 2, 3)
    hx = [torch.zeros(1, 2, 4), torch.zeros(1, 2, 4)]
    ref_w = [t.clone().requires_grad_() for t in w]
    ref = torch.lstm(x, hx, ref_w, True, 1, 0.0, True, False, False)
    ref[0].sum().backward()
    with autograd_forbidden():
        shim_w = [shimnn.Parameter(t.clone()) for t in w]
        out = torch.lstm(x, hx, shim_w, True, 1, 0.0, True, False, False)
        assert isinstance(out[0], shimnn.TrackedTensor)
        out[0].sum().backward()
    for a, b in zip(out, ref):
        assert_same(a, b)
    for a, b in zip(shim_w, ref_w):
        assert_same(a.grad, b.grad)
    cell_ref = torch.gru_cell(x[0], hx[0][0], *[t[:12].clone().requires_grad_() for t in
                                                (w[0], w[1][:, :4])])
    with autograd_forbidden():
        cell = torch.gru_cell(x[0], hx[0][0], *[shimnn.Parameter(t[:12].clone()) for t in
                                                (w[0], w[1][:, :4])])
    assert_same(cell, cell_ref)


# ---------------------------------------------------------------------------------------------
# the module: torch's class, torch's API
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", LAYERS + CELLS)
def test_module_api(cls: str) -> None:
    kwargs: dict[str, Any] = {} if "Cell" in cls else {"num_layers": 2, "bidirectional": True,
                                                         "batch_first": True, "dropout": 0.25}
    if cls == "LSTM":
        kwargs["proj_size"] = 2
    if cls in ("RNN", "RNNCell"):
        kwargs["nonlinearity"] = "relu"
    ref, shim = twin_modules(lambda nn: getattr(nn, cls)(3, 4, bias=False, **kwargs))
    assert isinstance(shim, getattr(torch.nn, cls))
    assert isinstance(shim, shimnn.Module)
    assert repr(shim) == repr(ref)
    assert list(shim.state_dict()) == list(ref.state_dict())
    assert type(shim).__constants__ == type(ref).__constants__
    assert all(type(p) is shimnn.Parameter for p in shim.parameters())
    if "Cell" not in cls:
        shim.flatten_parameters()  # a no-op on CPU, as torch's
        assert [n for n, _ in shim.named_parameters()] == shim._flat_weights_names
        assert shim.all_weights[0][0] is shim.weight_ih_l0
        shim.double()
        assert shim._flat_weights[0].dtype == torch.float64  # _apply re-gathers them
        assert type(shim._flat_weights[0]) is shimnn.Parameter


def test_warnings_match_torch() -> None:
    for make in (lambda nn: nn.LSTM(3, 4, dropout=0.5), lambda nn: nn.GRU(3, 4, dropout=0.2)):
        with warnings.catch_warnings(record=True) as ref_w:
            warnings.simplefilter("always")
            make(torch.nn)
        with warnings.catch_warnings(record=True) as shim_w:
            warnings.simplefilter("always")
            make(shimnn)
        assert [str(w.message) for w in shim_w] == [str(w.message) for w in ref_w]
        assert [w.category for w in shim_w] == [w.category for w in ref_w]


def _bad_calls() -> list[tuple[str, Callable[[Any], Any], Callable[[Any], Any]]]:
    x3, x2 = torch.randn(4, 2, 3), torch.randn(4, 3)
    return [
        ("RNN", lambda nn: nn.RNN(3, 4), lambda m: m(torch.randn(4, 2, 5))),
        ("RNN", lambda nn: nn.RNN(3, 4), lambda m: m(torch.randn(2, 2, 2, 3))),
        ("RNN", lambda nn: nn.RNN(3, 4), lambda m: m(x3, torch.randn(1, 3, 4))),
        ("RNN", lambda nn: nn.RNN(3, 4), lambda m: m(x3, torch.randn(2, 4))),
        ("RNN", lambda nn: nn.RNN(3, 4), lambda m: m(x2, torch.randn(1, 1, 4))),
        ("GRU", lambda nn: nn.GRU(3, 4), lambda m: m(x3.double())),
        ("GRU", lambda nn: nn.GRU(3, 4, num_layers=2), lambda m: m(x3, torch.randn(1, 2, 4))),
        ("LSTM", lambda nn: nn.LSTM(3, 4), lambda m: m(x3, (torch.randn(1, 2, 4),
                                                           torch.randn(1, 2, 5)))),
        ("LSTM", lambda nn: nn.LSTM(3, 4), lambda m: m(x3, (torch.randn(1, 2, 4),
                                                           torch.randn(2, 4)))),
        ("LSTM", lambda nn: nn.LSTM(3, 4), lambda m: m(x2, (torch.randn(1, 4),
                                                           torch.randn(1, 1, 4)))),
        ("LSTM", lambda nn: nn.LSTM(3, 4, batch_first=True),
         lambda m: m(x3, (torch.randn(1, 2, 4), torch.randn(1, 2, 4)))),
        ("LSTM", lambda nn: nn.LSTM(3, 4), lambda m: m(torch.randn(0, 2, 3))),
        ("LSTMCell", lambda nn: nn.LSTMCell(3, 4), lambda m: m(torch.randn(2, 5))),
        ("LSTMCell", lambda nn: nn.LSTMCell(3, 4),
         lambda m: m(torch.randn(2, 3), (torch.randn(3, 4), torch.randn(3, 4)))),
        ("LSTMCell", lambda nn: nn.LSTMCell(3, 4), lambda m: m(torch.randn(2, 2, 3))),
        ("GRUCell", lambda nn: nn.GRUCell(3, 4), lambda m: m(torch.randn(2, 3),
                                                             torch.randn(2, 5))),
        ("RNNCell", lambda nn: nn.RNNCell(3, 4), lambda m: m(torch.randn(2, 3),
                                                             torch.randn(2, 2, 4))),
        ("RNNCell", lambda nn: nn.RNNCell(3, 4, nonlinearity="relu"),
         lambda m: m(torch.randn(3), torch.randn(5))),
    ]


@pytest.mark.parametrize("case", range(len(_bad_calls())))
def test_bad_input_fails_like_torch(case: int) -> None:
    name, make, call = _bad_calls()[case]
    ref, shim = twin_modules(make)
    ref_e, shim_e = check_raises_like(lambda: call(ref), lambda: call(shim))
    assert_error_like(ref_e, shim_e, name)


def test_bad_constructor_arguments_fail_like_torch() -> None:
    for make in (lambda nn: nn.LSTM(3, 4, proj_size=4), lambda nn: nn.RNN(3, 4, proj_size=1),
                 lambda nn: nn.RNN(3, 4, nonlinearity="gelu"), lambda nn: nn.GRU(3, 0),
                 lambda nn: nn.LSTM(3, 4, dropout=2.0), lambda nn: nn.GRU(3, 4, bias=1)):
        ref_e, shim_e = check_raises_like(lambda: make(torch.nn), lambda: make(shimnn))
        assert str(shim_e) == str(ref_e)


def test_bad_functional_calls_fail_like_torch() -> None:
    """torch.lstm / torch.gru called directly with a wrong structure: torch's own errors."""
    w = [shimnn.Parameter(torch.randn(16, 3)), shimnn.Parameter(torch.randn(16, 4))]
    x = torch.randn(5, 2, 3)
    h = torch.zeros(1, 2, 4)
    calls = [
        lambda ws: torch.lstm(x, [h], ws, False, 1, 0.0, True, False, False),
        lambda ws: torch.lstm(x, [h, h], ws[:1], False, 1, 0.0, True, False, False),
        lambda ws: torch.gru(x, h, ws, False, 2, 0.0, True, False, False),
        lambda ws: torch.lstm_cell(x[0], [h[0]], ws[0], ws[1]),
    ]
    plain = [t.detach().clone().requires_grad_() for t in w]
    for call in calls:
        ref_e, shim_e = check_raises_like(lambda: call(plain), lambda: call(w))
        assert str(shim_e) == str(ref_e)


def test_outputs_written_into_plain_buffers() -> None:
    """``buf[t] = cell(x[t], h)`` and ``buf[:, t] = out[...]``: the buffer joins the graph."""
    for cls, dtype in itertools.product(CELLS, DTYPES):
        ref, shim = twin_modules(lambda nn: getattr(nn, cls)(3, 4, dtype=dtype))

        def forward(m: torch.nn.Module, xs: list[torch.Tensor]) -> list[torch.Tensor]:
            buf = torch.zeros(4, 2, 4, dtype=dtype)
            state: Any = None
            for t in range(4):
                state = m(xs[t], state)
                buf[t] = state[0] if isinstance(state, tuple) else state
            return [buf]

        run_both(ref, shim, [_randn(2, 3, dtype=dtype, seed=t) for t in range(4)], forward)
    ref, shim = twin_modules(lambda nn: nn.GRU(3, 4, batch_first=True))

    def forward_layer(m: torch.nn.Module, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        out, h = m(xs[0])
        buf = torch.zeros(2, 3, 4)
        buf[:, 0] = out[:, -1]
        buf[:, 1] = h[0]
        return [buf]

    run_both(ref, shim, [_randn(2, 5, 3, dtype=torch.float32)], forward_layer)


def test_weights_move_between_torch_and_shimnn() -> None:
    """torch's state_dict loads into shimnn's module (and back), and torch.save of the module
    round-trips: same outputs."""
    import io

    torch.manual_seed(0)
    ref = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2)
    shim = shimnn.LSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2)
    shim.load_state_dict(ref.state_dict())
    x = _randn(5, 2, 3, dtype=torch.float32)
    with torch.no_grad():
        for a, b in zip(_flat(shim(x)), _flat(ref(x))):
            assert_same(a, b)
    buffer = io.BytesIO()
    torch.save(shim, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert type(loaded) is shimnn.LSTM
    assert all(type(p) is shimnn.Parameter for p in loaded._flat_weights)
    run_both(ref, loaded, [x], lambda m, xs: _flat(m(xs[0])))
    back = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2)
    back.load_state_dict(loaded.state_dict())
    with torch.no_grad():
        assert_same(back(x)[0], ref(x)[0])


def test_other_dtypes_refuse_a_gradient() -> None:
    """Backward is written for float32 and float64: in another dtype a call that needs a
    gradient raises, naming the op; without one the values are torch's."""
    for cls in LAYERS:
        ref, shim = twin_modules(lambda nn: getattr(nn, cls)(3, 4, dtype=torch.bfloat16))
        x = _randn(5, 2, 3, dtype=torch.float32).bfloat16()
        with pytest.raises(NotImplementedError, match=cls.lower()):
            shim(x)
        with torch.no_grad():
            for a, b in zip(_flat(shim(x)), _flat(ref(x))):
                assert_same(a, b)


@pytest.mark.parametrize("batch_first", [False, True])
def test_pad_packed_sequence_total_length_and_padding(batch_first: bool) -> None:
    ref, shim = twin_modules(lambda nn: nn.GRU(3, 4, batch_first=batch_first,
                                               bidirectional=True, dtype=torch.float64))
    x = _randn(*((3, 4) if batch_first else (4, 3)), 3, dtype=torch.float64)

    def forward(m: torch.nn.Module, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        inp = xs[0] * 1.0 if m is ref else shimnn.ops.tensor.mul(xs[0], 1.0)
        out, h = m(pack_padded_sequence(inp, [4, 2, 2], batch_first=batch_first))
        padded, _ = pad_packed_sequence(out, batch_first=batch_first, total_length=7,
                                        padding_value=-3.0)
        return [padded, h]

    run_both(ref, shim, [x], forward)


@settings(max_examples=40, deadline=None)
@given(cls=st.sampled_from(LAYERS), dtype=st.sampled_from(DTYPES),
       steps=st.integers(1, 6), batch=st.integers(1, 4), input_size=st.integers(1, 5),
       hidden=st.integers(1, 6), num_layers=st.integers(1, 3), bidirectional=st.booleans(),
       batch_first=st.booleans(), bias=st.booleans(), h0=st.booleans(),
       use=st.sampled_from(["o", "h", "ohc", "oc"]))
def test_shapes_hypothesis(cls: str, dtype: torch.dtype, steps: int, batch: int,
                           input_size: int, hidden: int, num_layers: int, bidirectional: bool,
                           batch_first: bool, bias: bool, h0: bool, use: str) -> None:
    if cls != "LSTM" and use == "oc":
        use = "o"
    _layer_case(cls, dtype, num_layers=num_layers, bidirectional=bidirectional,
                batch_first=batch_first, bias=bias, h0=h0, use=use, steps=steps, batch=batch,
                input_size=input_size, hidden=hidden, zero_first=True)


@settings(max_examples=30, deadline=None)
@given(cls=st.sampled_from(LAYERS), dtype=st.sampled_from(DTYPES),
       lengths=st.lists(st.integers(1, 6), min_size=1, max_size=5),
       bidirectional=st.booleans(), num_layers=st.integers(1, 2), h0=st.booleans())
def test_packed_hypothesis(cls: str, dtype: torch.dtype, lengths: list[int],
                           bidirectional: bool, num_layers: int, h0: bool) -> None:
    _packed_case(cls, dtype, sorted(lengths, reverse=True), num_layers=num_layers,
                 bidirectional=bidirectional, h0=h0)


@pytest.mark.parametrize("cls", LAYERS + CELLS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_column_major_weights(cls: str, dtype: torch.dtype) -> None:
    """Weights stored transposed (column-major): torch's mm derivatives change operand order,
    and the gradients keep the weights' strides."""
    ref, shim = twin_modules(lambda nn: getattr(nn, cls)(3, 4, dtype=dtype))
    suffix = "" if "Cell" in cls else "_l0"
    for m in (ref, shim):
        for name in ("weight_ih", "weight_hh"):
            w = getattr(m, name + suffix).detach()
            setattr(m, name + suffix, torch.nn.Parameter(w.t().contiguous().t()))
    x = _randn(*((2, 3) if "Cell" in cls else (5, 2, 3)), dtype=dtype)
    run_both(ref, shim, [x], lambda m, xs: _flat(m(xs[0])))
    for name, p in shim.named_parameters():
        assert p.grad.stride() == dict(ref.named_parameters())[name].grad.stride(), name


@pytest.mark.parametrize("cls,dtype", [("GRU", torch.float64), ("RNN", torch.float32),
                                       ("LSTM", torch.float32), ("LSTM", torch.float64)])
def test_input_changed_in_place_before_backward_raises_like_torch(cls: str,
                                                                  dtype: torch.dtype) -> None:
    """torch saves the input (oneDNN's layer, the composite's input linear): modified in place
    after the forward, the backward raises."""
    ref, shim = twin_modules(lambda nn: getattr(nn, cls)(3, 4, dtype=dtype))
    x0 = _randn(5, 2, 3, dtype=dtype)

    def run(m: torch.nn.Module) -> None:
        x = x0.clone().requires_grad_()
        inp = x * 1.0 if m is ref else shimnn.ops.tensor.mul(x, 1.0)
        out, _ = m(inp)
        with torch.no_grad():
            inp.add_(1.0)
        out.sum().backward()

    ref_e, shim_e = check_raises_like(lambda: run(ref), lambda: run(shim))
    assert "modified by an inplace operation" in str(shim_e)


@pytest.mark.parametrize("cls", ["GRU", "RNN"])
def test_strided_states_composite(cls: str) -> None:
    for dtype in DTYPES:
        ref, shim = twin_modules(lambda nn: getattr(nn, cls)(3, 4, num_layers=2,
                                                             bidirectional=True, dtype=dtype))
        x = _randn(2, 5, 3, dtype=dtype).transpose(0, 1)
        h = _randn(4, 4, 2, dtype=dtype, seed=2).permute(1, 2, 0)
        run_both(ref, shim, [x, h], lambda m, xs: _flat(m(xs[0], xs[1])))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", LAYERS)
def test_signed_zero_gradients(cls: str, dtype: torch.dtype) -> None:
    """Upstream gradients all -0.0: every gradient is a signed zero, whose sign only the order
    and grouping of torch's sums decide (a -0.0 survives a sum only if every term is -0.0)."""
    for bidirectional, batch_first in itertools.product((False, True), (False, True)):
        _layer_case(cls, dtype, num_layers=2, bidirectional=bidirectional,
                    batch_first=batch_first, negative_zero=True)
    for lengths in ([4, 2, 1], [3, 3, 3], [2, 2, 1]):
        _packed_case(cls, dtype, lengths, num_layers=2, bidirectional=True,
                     negative_zero=True)
        _packed_case(cls, dtype, lengths, negative_zero=True)


def test_pack_and_unpack_sequences_unsorted() -> None:
    """pack_sequence(enforce_sorted=False) of shimnn tensors through an LSTM, unpack_sequence
    back: each sequence's gradient through the sort, the padding and the unsort."""
    ref, shim = twin_modules(lambda nn: nn.LSTM(3, 4, dtype=torch.float64))
    seqs = [_randn(n, 3, dtype=torch.float64, seed=n) for n in (2, 5, 3)]

    def forward(m: torch.nn.Module, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        seq = [x * 1.0 for x in xs] if m is ref else [shimnn.ops.tensor.mul(x, 1.0) for x in xs]
        out, _ = m(pack_sequence(seq, enforce_sorted=False))
        return list(unpack_sequence(out))

    run_both(ref, shim, seqs, forward)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("options", [{}, {"bidirectional": True, "num_layers": 2},
                                     {"batch_first": True}])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_printed_outputs_name_torchs_grad_fn(kind: str, options: dict[str, Any],
                                             dtype: torch.dtype) -> None:
    printed = []
    for mod in (torch.nn, shimnn):
        torch.manual_seed(0)
        layer = getattr(mod, kind)(3, 4, **options).to(dtype)
        out, state = layer(torch.randn(2, 5, 3, dtype=dtype))
        states = state if isinstance(state, tuple) else (state,)
        printed.append([repr(t) for t in (out, *states)])
        cell = getattr(mod, kind + "Cell")(3, 4).to(dtype)
        cell_out = cell(torch.randn(2, 3, dtype=dtype))
        printed[-1] += [repr(t) for t in (cell_out if isinstance(cell_out, tuple) else
                                          (cell_out,))]
    assert printed[1] == printed[0]
