"""shimnn's hand-written forward/backward pairs, one module per op family.

- :mod:`.linear`: the affine map (and the matmul path rules it shares with ``matmul``);
- :mod:`.activation`: element-wise activations, softmax, dropout;
- :mod:`.loss`: loss functions;
- :mod:`.tensor`: arithmetic, reductions, element-wise math on tracked tensors;
- :mod:`.shape`: views, indexing, ``cat``, ``matmul``, copies and dtype conversions;
- :mod:`.conv`: convolutions and transposed convolutions;
- :mod:`.pool`: max, average and adaptive pooling;
- :mod:`.norm`: batch, instance, group, layer and RMS normalization;
- :mod:`.pad`: ``F.pad`` (constant, reflect, replicate, circular);
- :mod:`.vision`: ``interpolate``, ``pixel_shuffle``.

Importing this package registers every op with the engine (``_graph.implements``); the public
names are served by :mod:`shimnn.functional`.
"""

from . import activation, conv, linear, loss, norm, pad, pool, shape, tensor, vision

__all__ = ["activation", "conv", "linear", "loss", "norm", "pad", "pool", "shape", "tensor",
           "vision"]
