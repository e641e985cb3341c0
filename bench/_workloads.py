"""The benchmarked configurations and the closures that run them, shared by every benchmark.

A configuration is a network, a batch size and an optimizer; for each framework (``torch.nn`` +
``torch.optim`` or ``shimnn`` + ``shimnn.optim``) the model is built from the same seed, so both
frameworks start from the same weights, see the same data, and (shimnn being bit-identical)
compute the same numbers at every step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

import shimnn
import shimnn.optim
from shimnn.disc import disc_data, make_network

__all__ = [
    "CNN_NETWORKS",
    "ConvNet",
    "SEQUENCE_NETWORKS",
    "SequenceNetwork",
    "TOKEN_NETWORKS",
    "TokenNetwork",
    "FRAMEWORKS",
    "NETWORKS",
    "OPTIMIZERS",
    "EPOCH_OPTIMIZERS",
    "make_optimizer",
    "BATCHES",
    "SEED_TASK",
    "Network",
    "Workload",
    "epoch_workload",
    "build_cnn",
    "cnn_workload",
    "sequence_workload",
    "token_workload",
    "sklearn_epoch",
    "RL_TASK",
    "RLNetwork",
    "rl_workload",
    "workload",
]

FRAMEWORKS: dict[str, tuple[ModuleType, ModuleType]] = {
    "torch": (torch.nn, torch.optim),
    "shimnn": (shimnn, shimnn.optim),
}
"""Framework name -> (module namespace, optimizer namespace)."""

OPTIMIZERS: dict[str, tuple[str, dict[str, float]]] = {
    "sgd": ("SGD", {"lr": 0.1}),
    "momentum": ("SGD", {"lr": 0.1, "momentum": 0.9}),
    "adam": ("Adam", {"lr": 1e-3}),
}
"""Optimizer name -> (class in ``torch.optim``/``shimnn.optim``, keyword arguments)."""
EPOCH_OPTIMIZERS = ("sgd", "momentum", "adam")
"""The optimizers of the per-epoch comparison with scikit-learn (``solver='sgd'`` for the
first two, ``solver='adam'`` for Adam)."""


def make_optimizer(optim: ModuleType, name: str, params: Any) -> Any:
    """The optimizer ``name`` of ``OPTIMIZERS`` from ``optim`` over ``params``."""
    cls, kwargs = OPTIMIZERS[name]
    return getattr(optim, cls)(params, **kwargs)


@dataclass(frozen=True)
class Network:
    """A multi-layer perceptron: Linear + ReLU hidden layers, a Linear output (then Tanh for the
    seed network), MSE loss; trained on the disc task or on random inputs and targets."""

    sizes: tuple[int, ...]
    batch: int
    seed_task: bool = False

    @property
    def name(self) -> str:
        shape = "-".join(map(str, self.sizes))
        return f"{'seed ' if self.seed_task else ''}{shape} b{self.batch}"

    @property
    def slug(self) -> str:
        """The name without spaces, for benchmark ids."""
        return self.name.replace(" ", "-")


SEED_TASK = Network((2, 25, 25, 25, 1), 50, seed_task=True)

NETWORKS: tuple[Network, ...] = (
    SEED_TASK,
    Network((2, 25, 25, 25, 1), 1000, seed_task=True),
    Network((64, 256, 256, 10), 64),
    Network((784, 1024, 1024, 10), 256),
)


def build_model(nn: ModuleType, network: Network, seed: int = 0) -> Any:
    """The network under ``nn`` with weights from ``torch.manual_seed(seed)``; the seed network
    is ``shimnn.disc.make_network`` itself (ReLU hidden layers, Tanh output)."""
    torch.manual_seed(seed)
    if network.seed_task:
        return make_network(nn, network.sizes[1:-1])
    layers: list[Any] = []
    for i, (a, b) in enumerate(zip(network.sizes, network.sizes[1:])):
        if i:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(a, b))
    return nn.Sequential(*layers)


BATCHES = 20
"""Mini-batches a step workload cycles through. Training one fixed batch for thousands of
steps fits it almost exactly: gradients and momentum buffers then fall into the denormal
range, where CPU arithmetic is many times slower, which says nothing about training."""


def batch_data(network: Network, seed: int = 0, batches: int = 1
               ) -> tuple[Tensor, Tensor]:
    """``batches`` consecutive batches stacked (``batches * batch`` rows): disc training points
    for the seed network, otherwise standard normal inputs and targets from a generator seeded
    with ``seed``."""
    n = network.batch * batches
    if network.seed_task:
        x, y = disc_data(seed, n_train=max(n, 1000))[:2]
        return x[:n], y[:n]
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, network.sizes[0], generator=g)
    return x, torch.randn(n, network.sizes[-1], generator=g)


@dataclass
class Workload:
    """A model with its optimizer, loss and mini-batches, and the operations timed on it."""

    model: Any
    optimizer: Any
    criterion: Any
    x: Tensor  # the first mini-batch (forward passes use it)
    y: Tensor
    batches: list[tuple[Tensor, Tensor]]
    next_batch: int = 0

    def step(self) -> Tensor:
        """One training step on the next mini-batch (cycling): forward, loss, zero_grad,
        backward, optimizer step."""
        x, y = self.batches[self.next_batch]
        self.next_batch = (self.next_batch + 1) % len(self.batches)
        loss = self.criterion(self.model(x), y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return loss

    def forward(self) -> Tensor:
        """The forward pass in grad mode (torch builds its graph, shimnn records its node)."""
        return self.model(self.x)

    def forward_no_grad(self) -> Tensor:
        """The forward pass under ``torch.no_grad()``."""
        with torch.no_grad():
            return self.model(self.x)


def workload(framework: str, network: Network, optimizer: str = "sgd",
             seed: int = 0) -> Workload:
    """``network`` under ``framework`` with the ``optimizer`` of ``OPTIMIZERS``."""
    nn, optim = FRAMEWORKS[framework]
    model = build_model(nn, network, seed)
    opt = make_optimizer(optim, optimizer, model.parameters())
    x, y = batch_data(network, seed, BATCHES)
    batches = [(x[i:i + network.batch], y[i:i + network.batch])
               for i in range(0, len(x), network.batch)]
    return Workload(model, opt, nn.MSELoss(), *batches[0], batches)


def epoch_workload(framework: str, optimizer: str = "sgd", seed: int = 0,
                   batch_size: int = 50) -> Callable[[], float]:
    """One epoch of the seed task as ``shimnn.disc.train`` runs it (1000 disc points in order,
    mini-batches of ``batch_size``, each loss read with ``.item()``, as scikit-learn also
    accumulates each batch's loss); returns the mean batch loss."""
    nn, optim = FRAMEWORKS[framework]
    model = build_model(nn, SEED_TASK, seed)
    opt = make_optimizer(optim, optimizer, model.parameters())
    criterion = nn.MSELoss()
    x, y = disc_data(seed)[:2]
    starts = range(0, x.shape[0], batch_size)
    batches = [(x[i:i + batch_size], y[i:i + batch_size]) for i in starts]

    def epoch() -> float:
        total = 0.0
        for xb, yb in batches:
            loss = criterion(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
        return total / len(batches)

    return epoch


def sklearn_epoch(optimizer: str = "sgd", seed: int = 0,
                  batch_size: int = 50) -> Callable[[], object]:
    """One epoch of scikit-learn's ``MLPRegressor`` on the same 1000 disc points.

    Settings that match the torch loop: ``solver='sgd'``, hidden layers (25, 25, 25) with ReLU,
    constant learning rate 0.1, the same batch size, ``momentum`` 0 or 0.9 without Nesterov
    (for ``"adam"``: ``solver='adam'``, learning rate 1e-3, torch's betas and eps),
    no L2 penalty (``alpha=0``; scikit-learn's default 1e-4 is weight decay, which plain SGD
    does not do), no shuffling (the torch loop takes batches in order), float32 data (kept as
    float32 by scikit-learn). Differences that remain: an identity output instead of Tanh, its
    own initialisation; neither changes the work per epoch meaningfully.

    An epoch is one ``partial_fit`` call, not ``fit`` with ``max_iter=1, warm_start=True``:
    ``partial_fit`` runs exactly one pass over the data and keeps the optimizer between calls,
    as an epoch loop does, whereas each ``fit`` call builds a new ``SGDOptimizer`` (resetting
    the momentum velocities, so momentum 0.9 would not be the same algorithm) and warns about
    non-convergence every time. The first call (weight initialisation) happens here, untimed.
    Each timed call still includes scikit-learn's per-call input and parameter validation: that
    is the cost of its epoch API.
    """
    from sklearn.neural_network import MLPRegressor

    x, y = disc_data(seed)[:2]
    x_np, y_np = x.numpy(), y.numpy().ravel()
    cls, kwargs = OPTIMIZERS[optimizer]
    common = dict(hidden_layer_sizes=(25, 25, 25), activation="relu", alpha=0.0,
                  batch_size=batch_size, learning_rate_init=kwargs["lr"], shuffle=False,
                  random_state=seed)
    if cls == "Adam":  # torch's defaults: betas (0.9, 0.999), eps 1e-8
        model = MLPRegressor(solver="adam", beta_1=0.9, beta_2=0.999, epsilon=1e-8, **common)
    else:
        model = MLPRegressor(solver="sgd", learning_rate="constant",
                             momentum=kwargs.get("momentum", 0.0), nesterovs_momentum=False,
                             **common)
    model.partial_fit(x_np, y_np)
    return lambda: model.partial_fit(x_np, y_np)


@dataclass(frozen=True)
class RLNetwork:
    """A reinforcement-learning style update: an MLP with ``Tanh`` hidden layers (a policy or
    value network), Adam, ``clip_grad_norm_`` before each step, MSE to random targets."""

    sizes: tuple[int, ...] = (8, 64, 64, 2)
    batch: int = 64
    lr: float = 3e-4
    max_norm: float = 0.5

    @property
    def name(self) -> str:
        return f"RL {'-'.join(map(str, self.sizes))} Tanh b{self.batch}"

    @property
    def slug(self) -> str:
        return self.name.replace(" ", "-")


RL_TASK = RLNetwork()


def rl_workload(framework: str, optimizer_from: str = "own", network: RLNetwork = RL_TASK,
                seed: int = 0) -> Workload:
    """The RL update under ``framework``: Adam (lr ``network.lr``) from the framework's own
    optimizers (``optimizer_from="own"``) or from ``torch.optim`` (``"torch"``: a script that
    swaps only ``torch.nn``), ``nn.utils.clip_grad_norm_(params, max_norm)`` after backward."""
    nn, optim = FRAMEWORKS[framework]
    if optimizer_from == "torch":
        optim = torch.optim
    torch.manual_seed(seed)
    layers: list[Any] = []
    for i, (a, b) in enumerate(zip(network.sizes, network.sizes[1:])):
        if i:
            layers.append(nn.Tanh())
        layers.append(nn.Linear(a, b))
    model = nn.Sequential(*layers)
    params = list(model.parameters())
    opt = optim.Adam(params, lr=network.lr)
    clip = nn.utils.clip_grad_norm_
    g = torch.Generator().manual_seed(seed)
    batches = [(torch.randn(network.batch, network.sizes[0], generator=g),
                torch.randn(network.batch, network.sizes[-1], generator=g))
               for _ in range(BATCHES)]
    max_norm = network.max_norm
    w = Workload(model, opt, nn.MSELoss(), *batches[0], batches)
    criterion = w.criterion

    def step() -> Tensor:
        x, y = batches[w.next_batch]
        w.next_batch = (w.next_batch + 1) % len(batches)
        loss = criterion(model(x), y)
        opt.zero_grad()
        loss.backward()
        clip(params, max_norm)
        opt.step()
        return loss  # type: ignore[no-any-return]

    w.step = step  # type: ignore[method-assign]
    return w


# ---------------------------------------------------------------------------------------------
# convolutional networks
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvNet:
    """A CNN training configuration: ``kind`` ``"mnist"`` (the classic PyTorch MNIST example:
    conv 32, conv 64, max pool, dropout, linear 128, dropout, linear 10, log_softmax +
    nll_loss) or ``"residual"`` (the residual CNN of ``examples/residual_cnn.py``: conv-BN-ReLU
    stem, two basic blocks with BatchNorm, global average pooling, cross-entropy), on random
    images of shape ``image`` and random labels, with SGD."""

    kind: str
    image: tuple[int, int, int]
    batch: int

    @property
    def name(self) -> str:
        c, h, w = self.image
        return f"{self.kind} CNN {c}x{h}x{w} b{self.batch}"

    @property
    def slug(self) -> str:
        return self.name.replace(" ", "-")


CNN_NETWORKS: tuple[ConvNet, ...] = (
    ConvNet("mnist", (1, 28, 28), 64),
    ConvNet("mnist", (1, 8, 8), 64),
    ConvNet("residual", (3, 16, 16), 32),
)


def _functional(nn: ModuleType) -> Any:
    return torch.nn.functional if nn is torch.nn else shimnn.functional


def build_cnn(nn: ModuleType, network: ConvNet, seed: int = 0) -> Any:
    """The network under ``nn`` (``torch.nn`` or ``shimnn``) from ``torch.manual_seed(seed)``."""
    F = _functional(nn)
    torch.manual_seed(seed)
    c, h, w = network.image
    if network.kind == "mnist":
        flat = 64 * ((h - 4) // 2) * ((w - 4) // 2)

        class Net(nn.Module):  # type: ignore[name-defined,misc]
            def __init__(self) -> None:
                super().__init__()
                self.conv1 = nn.Conv2d(c, 32, 3, 1)
                self.conv2 = nn.Conv2d(32, 64, 3, 1)
                self.dropout1 = nn.Dropout(0.25)
                self.dropout2 = nn.Dropout(0.5)
                self.fc1 = nn.Linear(flat, 128)
                self.fc2 = nn.Linear(128, 10)

            def forward(self, x: Tensor) -> Tensor:
                x = F.relu(self.conv1(x))
                x = F.relu(self.conv2(x))
                x = self.dropout1(F.max_pool2d(x, 2))
                x = torch.flatten(x, 1)
                x = self.dropout2(F.relu(self.fc1(x)))
                return F.log_softmax(self.fc2(x), dim=1)  # type: ignore[no-any-return]

        return Net()

    class Block(nn.Module):  # type: ignore[name-defined,misc]
        def __init__(self, width: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(width, width, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(width)

        def forward(self, x: Tensor) -> Tensor:
            out = F.relu(self.bn1(self.conv1(x)))
            return F.relu(self.bn2(self.conv2(out)) + x)  # type: ignore[no-any-return]

    return nn.Sequential(nn.Conv2d(c, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16),
                         nn.ReLU(inplace=True), Block(16), Block(16), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(16, 4))


def cnn_workload(framework: str, network: ConvNet, seed: int = 0) -> Workload:
    """``network`` under ``framework`` with SGD (lr 0.01, momentum 0.9), on ``BATCHES``
    mini-batches of random images (a generator seeded with ``seed``) and random labels."""
    nn, optim = FRAMEWORKS[framework]
    model = build_cnn(nn, network, seed)
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(seed)
    classes = 10 if network.kind == "mnist" else 4
    batches = [(torch.randn(network.batch, *network.image, generator=g),
                torch.randint(0, classes, (network.batch,), generator=g))
               for _ in range(BATCHES)]
    criterion = nn.NLLLoss() if network.kind == "mnist" else nn.CrossEntropyLoss()
    return Workload(model, opt, criterion, *batches[0], batches)


# ---------------------------------------------------------------------------------------------
# sequence models
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SequenceNetwork:
    """A recurrent layer (``kind``: ``LSTM``, ``GRU``, ``RNN``) over a batch-first sequence,
    then a Linear read-out of every step, MSE to random targets."""

    kind: str
    input_size: int
    hidden: int
    steps: int
    batch: int

    @property
    def name(self) -> str:
        return (f"{self.kind} {self.input_size}-{self.hidden} seq{self.steps} b{self.batch}")

    @property
    def slug(self) -> str:
        return self.name.replace(" ", "-")


SEQUENCE_NETWORKS: tuple[SequenceNetwork, ...] = (SequenceNetwork("LSTM", 32, 32, 20, 16),)
"""The issue's LSTM row: hidden 32, sequence 20, batch 16 (float32: torch's oneDNN path)."""


def build_sequence_model(nn: ModuleType, network: SequenceNetwork, seed: int = 0) -> Any:
    """``network`` under ``nn`` (``torch.nn`` or ``shimnn``) from ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)

    class SequenceModel(nn.Module):  # type: ignore[name-defined,misc]
        def __init__(self) -> None:
            super().__init__()
            self.rnn = getattr(nn, network.kind)(network.input_size, network.hidden,
                                                 batch_first=True)
            self.head = nn.Linear(network.hidden, 1)

        def forward(self, x: Tensor) -> Tensor:
            out, _ = self.rnn(x)
            return self.head(out)  # type: ignore[no-any-return]

    return SequenceModel()


def sequence_workload(framework: str, network: SequenceNetwork, optimizer: str = "sgd",
                      seed: int = 0) -> Workload:
    """``network`` under ``framework``, cycling through ``BATCHES`` random batches."""
    nn, optim = FRAMEWORKS[framework]
    model = build_sequence_model(nn, network, seed)
    opt = make_optimizer(optim, optimizer, model.parameters())
    g = torch.Generator().manual_seed(seed)
    batches = [(torch.randn(network.batch, network.steps, network.input_size, generator=g),
                torch.randn(network.batch, network.steps, 1, generator=g))
               for _ in range(BATCHES)]
    return Workload(model, opt, nn.MSELoss(), *batches[0], batches)


# ---------------------------------------------------------------------------------------------
# token models: an Embedding + GRU language model, a Transformer encoder
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenNetwork:
    """A model over token ids: ``Embedding(vocab, embed)``, then ``kind`` (``GRU``: one
    batch-first GRU of ``hidden`` units; ``TransformerEncoder``: ``layers`` batch-first encoder
    layers of width ``embed`` with ``heads`` heads, feed-forward ``hidden``, torch's default
    dropout 0.1), a Linear read-out to the vocabulary, cross-entropy against random next
    tokens, ``batch`` sequences of ``steps`` tokens."""

    kind: str
    vocab: int
    embed: int
    hidden: int
    steps: int
    batch: int
    layers: int = 1
    heads: int = 4

    @property
    def name(self) -> str:
        if self.kind == "GRU":
            body = f"Embedding {self.vocab}x{self.embed} + GRU {self.hidden} LM"
        else:
            body = (f"TransformerEncoder {self.layers}x(d{self.embed} h{self.heads} "
                    f"ff{self.hidden})")
        return f"{body} seq{self.steps} b{self.batch}"

    @property
    def slug(self) -> str:
        return self.name.replace(" ", "-")


TOKEN_NETWORKS: tuple[TokenNetwork, ...] = (
    TokenNetwork("GRU", 64, 32, 64, 20, 16),
    TokenNetwork("TransformerEncoder", 64, 64, 128, 20, 16, layers=2),
)
"""The issue's rows: an Embedding + GRU language model and a 2-layer Transformer encoder with
d_model 64 (training mode: dropout on, so torch's SDPA takes its math path)."""


def build_token_model(nn: ModuleType, network: TokenNetwork, seed: int = 0) -> Any:
    """``network`` under ``nn`` (``torch.nn`` or ``shimnn``) from ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)

    class TokenModel(nn.Module):  # type: ignore[name-defined,misc]
        def __init__(self) -> None:
            super().__init__()
            self.embedding = nn.Embedding(network.vocab, network.embed)
            if network.kind == "GRU":
                self.body = nn.GRU(network.embed, network.hidden, batch_first=True)
                width = network.hidden
            else:
                layer = nn.TransformerEncoderLayer(network.embed, network.heads, network.hidden,
                                                   batch_first=True)
                self.body = nn.TransformerEncoder(layer, network.layers,
                                                  enable_nested_tensor=False)
                width = network.embed
            self.head = nn.Linear(width, network.vocab)

        def forward(self, x: Tensor) -> Tensor:
            h = self.body(self.embedding(x))
            if isinstance(h, tuple):
                h = h[0]
            return self.head(h).flatten(0, 1)  # type: ignore[no-any-return]

    return TokenModel()


def token_workload(framework: str, network: TokenNetwork, optimizer: str = "sgd",
                   seed: int = 0) -> Workload:
    """``network`` under ``framework``, cycling through ``BATCHES`` batches of random tokens
    (a generator seeded with ``seed``) and random next tokens (flattened, for the loss)."""
    nn, optim = FRAMEWORKS[framework]
    model = build_token_model(nn, network, seed)
    opt = make_optimizer(optim, optimizer, model.parameters())
    g = torch.Generator().manual_seed(seed)
    shape = (network.batch, network.steps)
    batches = [(torch.randint(0, network.vocab, shape, generator=g),
                torch.randint(0, network.vocab, shape, generator=g).flatten())
               for _ in range(BATCHES)]
    return Workload(model, opt, nn.CrossEntropyLoss(), *batches[0], batches)
