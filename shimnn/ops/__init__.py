"""shimnn's hand-written forward/backward pairs, one module per op family.

- :mod:`.linear`: the affine map (and the matmul path rules it shares with ``matmul``);
- :mod:`.activation`: element-wise activations, softmax, dropout;
- :mod:`.loss`: loss functions;
- :mod:`.tensor`: arithmetic, reductions, element-wise math on tracked tensors;
- :mod:`.shape`: views, indexing, ``cat``, ``matmul``, copies and dtype conversions;
- :mod:`.rnn`: recurrent layers and cells (RNN, LSTM, GRU), packed sequences.

Importing this package registers every op with the engine (``_graph.implements``); the public
names are served by :mod:`shimnn.functional`.
"""

from . import activation, linear, loss, rnn, shape, tensor

__all__ = ["activation", "linear", "loss", "rnn", "shape", "tensor"]
