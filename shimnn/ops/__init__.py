"""shimnn's hand-written forward/backward pairs, one module per op family.

- :mod:`.linear`: the affine map (and the matmul path rules it shares with ``matmul``);
- :mod:`.activation`: element-wise activations, softmax, dropout;
- :mod:`.attention`: ``scaled_dot_product_attention``, ``multi_head_attention_forward``;
- :mod:`.transformer`: a ``TransformerEncoderLayer`` as one node;
- :mod:`.loss`: loss functions;
- :mod:`.embedding`: ``embedding`` (the lookup, ``max_norm``, ``padding_idx``);
- :mod:`.tensor`: arithmetic, reductions, element-wise math on tracked tensors;
- :mod:`.shape`: views, indexing, ``cat``, copies and dtype conversions;
- :mod:`.matmul`: ``matmul`` (torch's decomposition by rank), ``mm``, ``bmm``, ``baddbmm``;
- :mod:`.index`: ``gather``, ``index_select``, advanced indexing, ``masked_fill``, ``where``;
- :mod:`.reduce`: ``max``/``min``/``amax``, ``topk``/``sort``, ``logsumexp``, ``cumsum``,
  ``var``/``std``, norms;
- :mod:`.conv`: convolutions and transposed convolutions;
- :mod:`.pool`: max, average and adaptive pooling;
- :mod:`.norm`: batch, instance, group, layer and RMS normalization;
- :mod:`.pad`: ``F.pad`` (constant, reflect, replicate, circular);
- :mod:`.vision`: ``interpolate``, ``pixel_shuffle``.
- :mod:`.rnn`: recurrent layers and cells (RNN, LSTM, GRU), packed sequences.

Importing this package registers every op with the engine (``_graph.implements``); the public
names are served by :mod:`shimnn.functional`.
"""

from . import (
    activation,
    attention,
    conv,
    embedding,
    index,
    linear,
    loss,
    matmul,
    norm,
    pad,
    pool,
    reduce,
    rnn,
    shape,
    tensor,
    transformer,
    vision,
)

__all__ = ["activation", "attention", "conv", "embedding", "index", "linear", "loss", "matmul",
           "norm", "pad", "pool", "reduce", "rnn", "shape", "tensor", "transformer", "vision"]
