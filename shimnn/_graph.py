"""shimnn's engine: tracked tensors, recorded nodes and the backward walk.

Autograd is replaced, not wrapped. In grad mode every differentiable shimnn op returns a
:class:`TrackedTensor` carrying a :class:`Node`: the op's hand-written backward function, the
tensors that function saved, and one edge per input (a parent ``Node``, or a leaf tensor whose
``.grad`` receives the gradient). ``TrackedTensor.backward()`` walks the nodes newest first,
which is the order torch's engine runs them in, sums gradients that fan in the way torch's input
buffers do, and accumulates into leaf ``.grad`` the way torch's ``AccumulateGrad`` does.

Kernels always run with torch function dispatch for subclasses disabled and, while a graph is
recorded, with grad mode off, so torch never records a graph of its own: no tensor shimnn
returns has a ``grad_fn`` and torch's autograd engine never runs.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable, Sequence
from typing import Any, Union

import torch
from torch import Tensor

from ._traceback import trims_traceback

__all__ = ["Node", "Output", "Recorded", "TrackedTensor", "apply", "edge", "record",
           "record_outputs", "set_node", "wrap"]

# The sequence number orders nodes by creation. A node is always created after its inputs, so
# running the highest number first is a topological order, and it is the order torch's engine
# uses, which fixes the order in which fan-in gradients are summed.
_sequence = itertools.count()

no_dispatch = torch._C.DisableTorchFunctionSubclass
set_grad_enabled = torch._C._set_grad_enabled
is_grad_enabled = torch._C.is_grad_enabled
# torch's own attribute accessors, called directly (TrackedTensor overrides these properties).
_requires_grad: Any = vars(torch._C.TensorBase)["requires_grad"].__get__
_set_requires_grad: Any = vars(torch._C.TensorBase)["requires_grad"].__set__
_grad_fn: Any = vars(torch._C.TensorBase)["grad_fn"].__get__
# A non-view alias sharing storage and version counter (as_subclass would make a view whose
# _base keeps the plain result alive).
_make_subclass = Tensor._make_subclass

Edge = Union["Node", "Output", Tensor, None]
"""Where an input's gradient goes: its producer node (or one output of it), a leaf tensor, or
nowhere (None)."""
BackwardFn = Callable[..., Sequence[Tensor | None]]
"""Maps the gradient of an op's output to the gradients of its inputs (None where unneeded);
called as ``backward(grad)``, or ``backward(grad, retain_graph)`` for a node that
``takes_retain``."""
Recorded = tuple[Tensor, BackwardFn, tuple[Tensor, ...], str]
"""What an op's forward returns: output, backward function, the tensors it saved, node name."""

FREED_MESSAGE = (
    "Trying to backward through the graph a second time (or directly access saved tensors after "
    "they have already been freed). Saved intermediate values of the graph are freed when you "
    "call .backward(). Specify retain_graph=True if you need to backward through the graph a "
    "second time or if you need to access saved tensors after calling backward."
)


import torch.autograd.forward_ad as _forward_ad  # noqa: E402

_functorch_active = torch._C._are_functorch_transforms_active
_saved_tensors_hooks = torch._C._autograd._top_saved_tensors_default_hooks
_any_autocast = torch._C._is_any_autocast_enabled


def refuse_transforms() -> None:
    """shimnn computes reverse-mode gradients by hand: torch's forward-mode AD and torch.func
    transforms would silently see none (shimnn's kernels run below them)."""
    if _forward_ad._current_level >= 0:
        raise NotImplementedError(
            "shimnn computes gradients by hand in reverse mode: forward-mode AD "
            "(torch.autograd.forward_ad, torch.func.jvp) through shimnn's ops is not supported")
    if _functorch_active():
        raise NotImplementedError(
            "shimnn computes gradients by hand: torch.func transforms (grad, vjp, jacrev, "
            "vmap...) over shimnn's ops are not supported; use loss.backward() or "
            "torch.autograd.grad")


def refuse_recording_modes() -> None:
    """Modes of torch's autograd that change what a recorded op saves or computes."""
    refuse_transforms()
    if _any_autocast():
        raise NotImplementedError(
            "shimnn: differentiating through torch.autocast is not supported (torch records "
            "its dtype casts); run the forward in one dtype, or under torch.no_grad()")


class Node:
    """One recorded operation: how to turn its output's gradient into its inputs' gradients.

    Attributes:
        name: the op's name as torch spells its backward node (``AddmmBackward0``).
        backward: the hand-written backward function; ``None`` once the graph is freed.
        inputs: one :data:`Edge` per input of the op.
        saved: the tensors ``backward`` reads, checked against in-place changes and freed
            after a backward without ``retain_graph``.
    """

    __slots__ = ("name", "backward", "inputs", "saved", "versions", "seq", "hooks", "retained",
                 "takes_retain", "outputs", "output_names")

    def __init__(
        self,
        name: str,
        backward: BackwardFn,
        inputs: tuple[Edge, ...],
        saved: tuple[Tensor, ...] = (),
        versions: tuple[int, ...] | None = None,
    ) -> None:
        if saved and _saved_tensors_hooks(False) is not None:
            raise NotImplementedError(
                "shimnn keeps the tensors a backward needs itself: "
                "torch.autograd.graph.saved_tensors_hooks (save_on_cpu, "
                "torch.utils.checkpoint(use_reentrant=False)) is not supported; use "
                "checkpoint(..., use_reentrant=True)")
        self.name = name
        self.backward: BackwardFn | None = backward
        self.inputs = inputs
        self.saved: tuple[Tensor, ...] | None = saved
        # The versions at save time (a fused chain passes them: its later layers may modify
        # what an earlier one saved before the node exists).
        self.versions = tuple([t._version for t in saved]) if versions is None else versions
        self.seq = next(_sequence)
        # Tensor hooks of its outputs, as (output number, hook), in registration order.
        self.hooks: list[tuple[int, Callable[[Tensor], Tensor | None]]] | None = None
        self.retained: list[TrackedTensor] | None = None
        # A node whose backward is called as backward(grad, retain_graph), to free as it goes.
        self.takes_retain = False
        # A node with several outputs: how many (its backward then takes the list of their
        # gradients, None where none arrived); None for the usual single output. A count, not
        # the Output edges: those hold the node, and a node holding them would be a reference
        # cycle that keeps every saved tensor alive until the garbage collector runs.
        self.outputs: int | None = None
        # The name torch gives each output's grad_fn, where they differ (for printing).
        self.output_names: tuple[str, ...] | None = None

    @property
    def next_functions(self) -> tuple[tuple[Node | str | None, int], ...]:
        """The input edges, in the shape of torch's ``grad_fn.next_functions``.

        A leaf shows as the string ``"AccumulateGrad"``.
        """
        return tuple(
            (e if e is None or type(e) is Node else "AccumulateGrad", 0) for e in self.inputs
        )

    def __repr__(self) -> str:
        return f"<{self.name} (shimnn)>"

    def release(self) -> None:
        """Free what the backward function holds; a later backward through it raises."""
        if self.saved:
            self.backward = None
            self.saved = None


class Output:
    """The edge to output ``nr`` of a node with several outputs (``split``, an RNN's output and
    final states): their gradients reach the node's backward together, as a list."""

    __slots__ = ("node", "nr")

    def __init__(self, node: Node, nr: int) -> None:
        self.node = node
        self.nr = nr

    def __repr__(self) -> str:
        return f"<output {self.nr} of {self.node!r}>"


def edge(t: Tensor | None) -> Edge:
    """Where the gradient of ``t`` goes; ``None`` when ``t`` needs no gradient.

    Call under :data:`no_dispatch`.
    """
    if t is None:
        return None
    if type(t) is TrackedTensor:
        node = t._node
        if node is not None:
            if t._view_version is not None and t._version != t._view_version:
                # Its memory was written since: a view of its base's current node now.
                _dispatch.refresh_view(t)
                node = t._node
                assert node is not None
            return node if node.outputs is None else Output(node, t._output_nr)
        base = t._view_base
    else:
        base = t._base if type(t) is Tensor else None
    if _requires_grad(t):
        grad_fn = _grad_fn(t)
        if grad_fn is not None:
            return _torch_recorded(grad_fn)
        return t
    if base is not None and type(base) is TrackedTensor and base._node is not None:
        # A view taken before its base joined the graph (a value that needs a gradient was
        # written into the base since): a view of the base's node now, as torch replays it.
        _dispatch.view_of(t, base)
        return t._node  # type: ignore[attr-defined]
    return None


def _torch_recorded(grad_fn: Any) -> Node:
    """The edge of a tensor torch's autograd recorded (a torch module with parameters of its
    own, or an op between plain tensors that require grad): shimnn's graph cannot reach torch's,
    so a gradient through it raises, naming what the user wrote, instead of being lost."""

    def backward(grad: Tensor) -> Sequence[Tensor | None]:
        raise NotImplementedError(_torch_recorded_message(grad_fn))

    return Node(grad_fn.name(), backward, ())


def _torch_leaves(grad_fn: Any, limit: int = 200) -> list[Tensor]:
    """The leaf tensors (parameters) torch's graph from ``grad_fn`` accumulates into."""
    leaves: list[Tensor] = []
    seen: set[int] = set()
    stack = [grad_fn]
    while stack and len(seen) < limit:
        fn = stack.pop()
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        variable = getattr(fn, "variable", None)
        if isinstance(variable, Tensor):
            leaves.append(variable)
        stack.extend(next_fn for next_fn, _ in getattr(fn, "next_functions", ()))
    return leaves


def _owning_module(param: Tensor) -> torch.nn.Module | None:
    """The module whose ``_parameters`` hold ``param`` (found through the garbage collector's
    referrers: only on this error path)."""
    import gc

    for params in gc.get_referrers(param):
        if not isinstance(params, dict):
            continue
        for attrs in gc.get_referrers(params):
            if isinstance(attrs, dict) and attrs.get("_parameters") is params:
                for owner in gc.get_referrers(attrs):
                    if isinstance(owner, torch.nn.Module) and owner.__dict__ is attrs:
                        return owner
    return None


def _torch_recorded_message(grad_fn: Any) -> str:
    """Name the torch module (or function) whose result the gradient must enter, and what
    shimnn offers instead, when it has it."""
    import re

    import shimnn
    import shimnn.functional

    node = grad_fn.name()
    leaves = _torch_leaves(grad_fn)
    module = next((m for m in map(_owning_module, leaves) if m is not None), None)
    if module is not None:
        cls = type(module).__name__
        what = f"torch's {cls} layer `{module!r}` (its output's node: {node})"
        shim = getattr(shimnn, cls, None)
        if shim is not None and isinstance(shim, type) and shim.__module__.startswith("shimnn"):
            advice = (f"shimnn has it: build that layer as shimnn.{cls}, or run the script with "
                      f"`shimnn run` / inside shimnn.patch_torch(), where torch.nn.{cls} is "
                      "shimnn's")
        else:
            advice = (f"shimnn does not implement {cls} yet (`shimnn support` lists what it "
                      "does): freeze its parameters (requires_grad_(False)) if it needs no "
                      "training, or use a layer shimnn has")
    else:
        function = re.sub(r"Backward\d*$", "", node)
        lower = function[:1].lower() + function[1:]
        shapes = ", ".join(str(tuple(t.shape)) for t in leaves[:3])
        what = (f"torch's {lower} (node {node}), computed by torch's autograd on tensors that "
                f"require grad outside shimnn" + (f" (leaves of shape {shapes})" if shapes else ""))
        if hasattr(shimnn.functional, lower) or hasattr(torch.Tensor, lower):
            advice = ("make those tensors shimnn.Parameter(...) (or compute them with shimnn "
                      "modules), so that shimnn records the operation")
        else:
            advice = "shimnn has no hand-written backward for it (`shimnn support`)"
    return (f"shimnn: this backward has to go through {what}; shimnn's backward cannot enter "
            f"torch's graph. {advice}.")


def check_inplace_target(t: Tensor, name: str) -> None:
    """An in-place op on a view of a tracked tensor would have to rebase the view's base (torch
    does); shimnn refuses it rather than give the base a wrong gradient."""
    if type(t) is TrackedTensor and t._view_version is not None and t._node is not None:
        raise NotImplementedError(
            f"shimnn: in-place {name} on a view of a tensor that needs a gradient is not "
            "supported; use an out-of-place operation (x = x.op(...)).")


def _has_torch_graph(t: Tensor) -> bool:
    return type(t) is not TrackedTensor and _grad_fn(t) is not None


def wrap(result: Tensor) -> TrackedTensor:
    """The plain kernel result as a TrackedTensor without a graph."""
    refuse_transforms()
    out = _make_subclass(TrackedTensor, result)
    return out  # type: ignore[return-value]


def record(
    result: Tensor,
    name: str,
    backward: BackwardFn,
    inputs: tuple[Edge, ...],
    saved: tuple[Tensor, ...] = (),
    versions: tuple[int, ...] | None = None,
) -> TrackedTensor:
    """Return ``result`` as a TrackedTensor whose node runs ``backward``.

    Every tensor that ``backward`` reads must be in ``saved``: that is what makes in-place
    changes detectable and lets the graph be freed. ``versions``: theirs at save time, when
    an in-place op has run since (default: their versions now).
    """
    refuse_recording_modes()
    out = _make_subclass(TrackedTensor, result)
    out._node = Node(name, backward, inputs, saved, versions)
    return out  # type: ignore[return-value]


def record_outputs(
    results: Sequence[Tensor | None],
    name: str,
    backward: BackwardFn,
    inputs: tuple[Edge, ...],
    saved: tuple[Tensor, ...] = (),
    versions: tuple[int, ...] | None = None,
    names: Sequence[str] | None = None,
) -> list[Any]:
    """Record one node for several outputs (``None`` or non-floating ones carry no gradient).

    ``backward`` receives the list of the outputs' gradients, ``None`` for an output that got
    none (torch's undefined gradient: treat it as zeros), and returns one gradient per input.
    ``names``: the name torch gives each output's ``grad_fn``, where they differ (printing).
    """
    refuse_recording_modes()
    node = Node(name, backward, inputs, saved, versions)
    if names is not None:
        node.output_names = tuple(names)
    node.outputs = len(results)
    tracked: list[Any] = []
    for i, r in enumerate(results):
        if r is None or not (r.dtype.is_floating_point or r.dtype.is_complex):
            tracked.append(r)
            continue
        out = _make_subclass(TrackedTensor, r)
        out._node = node
        out._output_nr = i
        tracked.append(out)
    return tracked


def set_node(t: Tensor, node: Node) -> None:
    """Give ``t`` a new node after an in-place op: later uses differentiate through the op.

    ``retain_grad`` follows the tensor to its new node, as torch moves its hook; other tensor
    hooks stay on the old node (they see the gradient of the value before the op, as in torch).
    """
    old = t._node  # type: ignore[attr-defined]
    if old is not None and old.retained is not None and any(r is t for r in old.retained):
        old.retained = [r for r in old.retained if r is not t]
        node.retained = [*(node.retained or ()), t]  # type: ignore[list-item]
    t._node = node  # type: ignore[attr-defined]
    t._output_nr = 0  # type: ignore[attr-defined]


def apply(forward: Callable[..., Recorded], inputs: tuple[Edge, ...], *args: Any
          ) -> TrackedTensor:
    """Run an op's ``forward(*args)`` with grad mode off and record its backward."""
    set_grad_enabled(False)
    try:
        out, backward, saved, name = forward(*args)
    finally:
        set_grad_enabled(True)
    return record(out, name, backward, inputs, saved)


def run_kernel(fn: Callable[..., Any], *args: Any) -> Any:
    """Call ``fn`` with grad mode off, so torch records nothing for leaves that require grad."""
    set_grad_enabled(False)
    try:
        return fn(*args)
    finally:
        set_grad_enabled(True)


def sum_to(grad: Tensor, shape: Sequence[int]) -> Tensor:
    """Reduce a broadcast gradient back to ``shape`` exactly as torch's engine does."""
    if tuple(grad.shape) == tuple(shape):
        return grad
    if len(shape) == 0:
        return grad.sum()
    lead = grad.dim() - len(shape)
    inner = [i for i in range(lead, grad.dim()) if shape[i - lead] == 1 and grad.shape[i] != 1]
    if not inner:
        # Only leading dims: summing them without keepdim gives the same values as torch's
        # keepdim-then-view, and a tensor that is not a view (so .grad can keep it).
        return grad.sum(list(range(lead))) if lead else grad
    grad = grad.sum(list(range(lead)) + inner, keepdim=True)
    return grad.view(shape) if lead > 0 else grad


# ---------------------------------------------------------------------------------------------
# The tracked tensor
# ---------------------------------------------------------------------------------------------

HANDLED: dict[Any, Callable[..., Any]] = {}
"""torch callables (``torch.add``, ``Tensor.add``, ``Tensor.__rsub__``...) -> shimnn ops."""


def implements(*funcs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Route these torch callables, called on tracked tensors, to the decorated shimnn op."""

    def register(op: Callable[..., Any]) -> Callable[..., Any]:
        for f in funcs:
            HANDLED[f] = op
            if _may_mutate(f):
                MAY_MUTATE.add(f)
        return op

    return register


# HANDLED callables that may write into an argument (in-place ops, ``inplace=`` keywords):
# their calls go through the dispatcher's check for writes into views (see _dispatch.handled).
MAY_MUTATE: set[Any] = set()


def _may_mutate(func: Any) -> bool:
    name = getattr(func, "__name__", "") or ""
    if name.startswith("__i") or (name.endswith("_") and not name.startswith("_")):
        return True
    try:
        return "inplace" in inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False


def _torch_function(
    cls: type, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
) -> Any:
    op = HANDLED.get(func)
    if op is not None:
        if func in MAY_MUTATE or (kwargs and "out" in kwargs):
            return _dispatch.handled(func, op, args, kwargs or {})
        return op(*args, **kwargs) if kwargs else op(*args)
    return _dispatch.torch_function(func, args, kwargs)


class TrackedTensor(Tensor):
    """A ``torch.Tensor`` produced by a shimnn op: it remembers the node that made it.

    It behaves as a tensor everywhere. Differentiable torch calls on it go to shimnn's
    hand-written ops; others compute their value and, if a gradient would later flow through
    them, make that backward raise an error naming the op. ``grad_fn`` is always ``None``:
    ``shim_fn`` is the node, ``requires_grad`` and ``is_leaf`` answer as torch would.
    """

    _node: Node | None = None
    _output_nr: int = 0  # which output of its node (nodes with several outputs)
    _view_version: int | None = None  # set on views: the storage version when taken
    _view_base: Tensor | None = None  # set on views: the tensor whose memory they view

    __torch_function__: Any = classmethod(_torch_function)
    # Identity hashing, as Tensor.__hash__, without a Python-level call (optimizer state).
    __hash__ = object.__hash__

    @property
    def shim_fn(self) -> Node | None:
        """The shimnn node that computed this tensor (torch's ``grad_fn``, hand-written)."""
        return self._node

    @property
    def grad_fn(self) -> None:  # type: ignore[override]
        return None

    @property
    def requires_grad(self) -> bool:  # type: ignore[override]
        return self._node is not None or _requires_grad(self)

    @requires_grad.setter
    def requires_grad(self, value: bool) -> None:
        self.requires_grad_(value)

    @property
    def is_leaf(self) -> bool:  # type: ignore[override]
        return self._node is None

    def requires_grad_(self, requires_grad: bool = True) -> TrackedTensor:
        if self._node is not None:
            if not requires_grad:
                raise RuntimeError(
                    "you can only change requires_grad flags of leaf variables. If you want to "
                    "use a computed variable in a subgraph that doesn't require differentiation "
                    "use var_no_grad = var.detach()."
                )
            return self
        with no_dispatch():
            _set_requires_grad(self, requires_grad)
        return self

    def detach_(self) -> TrackedTensor:
        self._node = None
        with no_dispatch():
            _set_requires_grad(self, False)
        return self

    def retain_grad(self) -> None:
        node = self._node
        if node is None:
            if not self.requires_grad:
                raise RuntimeError("can't retain_grad on Tensor that has requires_grad=False")
            return
        if node.retained is None:
            node.retained = []
        if not any(t is self for t in node.retained):
            node.retained.append(self)

    @property
    def retains_grad(self) -> bool:  # type: ignore[override]
        node = self._node
        return node is not None and node.retained is not None and any(
            t is self for t in node.retained
        )

    def register_hook(self, hook: Callable[[Tensor], Tensor | None]) -> Any:
        node = self._node
        if node is None:
            return Tensor.register_hook(self, hook)
        if node.hooks is None:
            node.hooks = []
        entry = (self._output_nr, hook)
        node.hooks.append(entry)
        hooks = node.hooks

        class _Handle:
            def remove(self) -> None:
                if entry in hooks:
                    hooks.remove(entry)

        return _Handle()

    @trims_traceback
    def backward(  # type: ignore[override]
        self,
        gradient: Tensor | None = None,
        retain_graph: bool | None = None,
        create_graph: bool = False,
        inputs: Sequence[Tensor] | Tensor | None = None,
    ) -> None:
        """Compute gradients with shimnn's hand-written backward functions (no autograd)."""
        _engine.tensor_backward(self, gradient, retain_graph, create_graph, inputs)

    def numpy(self, *, force: bool = False) -> Any:
        if self._node is not None and not force:
            raise RuntimeError(
                "Can't call numpy() on Tensor that requires grad. Use tensor.detach().numpy() "
                "instead."
            )
        with no_dispatch():
            return Tensor.numpy(self, force=force)

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        if self._node is not None:
            raise RuntimeError(
                "Only Tensors created explicitly by the user (graph leaves) support the deepcopy "
                "protocol at the moment.  If you were attempting to deepcopy a module, this may "
                "be because of a torch.nn.utils.weight_norm usage, see "
                "https://github.com/pytorch/pytorch/pull/103001")
        with no_dispatch():
            copied = wrap(Tensor.__deepcopy__(self.detach(), memo))
            if _requires_grad(self):
                _set_requires_grad(copied, True)
            if self.grad is not None:
                copied.grad = Tensor.__deepcopy__(self.grad, memo)
        memo[id(self)] = copied
        return copied

    def __reduce_ex__(self, proto: Any) -> Any:
        # Saved as a plain tensor: a graph does not cross a pickle.
        with no_dispatch():
            plain = self.detach()
            if _requires_grad(self):
                _set_requires_grad(plain, True)
        return plain.__reduce_ex__(proto)


def _fallback(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Run a torch callable shimnn has no op for (see ``_dispatch.fallback``)."""
    return _dispatch.fallback(func, args, kwargs)


def tensor_backward(self: Tensor, gradient: Tensor | None = None,
                    retain_graph: bool | None = None, create_graph: bool = False,
                    inputs: Sequence[Tensor] | Tensor | None = None) -> None:
    """``Tensor.backward`` for shimnn's tensors (see ``_engine.tensor_backward``)."""
    _engine.tensor_backward(self, gradient, retain_graph, create_graph, inputs)


# The walk and the dispatcher live in their own modules, which import this one (names in them
# are looked up at call time, so either may be imported first).
from . import _dispatch, _engine  # noqa: E402
