"""The backward walk: torch's engine semantics, running shimnn's hand-written backward functions.

``backward(roots, grads, ...)`` does what ``torch.autograd.backward`` / ``torch.autograd.grad``
do, over shimnn's graph of :class:`~shimnn._graph.Node`\\ s:

1. **Plan.** From the roots, visit every reachable node once and count, for each leaf, how many
   gradients will arrive (torch's ``compute_dependencies``). With ``inputs``, mark the nodes that
   lead to one of them (torch's ``exec_info``): only those run.
2. **Walk.** Run the pending node with the highest sequence number first (a node is created
   after its inputs, so this is a topological order, and it is torch's order, which fixes how
   fan-in gradients are summed: first stored, then ``old + new``). Before a node runs, the
   tensor hooks and ``retain_grad`` of its outputs see its gradient, as torch's tensor
   pre-hooks do.
3. **Accumulate.** A leaf receives its summed gradient as soon as its last one has arrived (torch
   gives ``AccumulateGrad`` the highest priority), through torch's ``AccumulateGrad`` rules: hooks,
   nothing if the leaf no longer requires grad, store the gradient if nothing else references it
   and it has the leaf's layout (else a copy that has), later backwards add in place, then the
   post-accumulate hooks, then the hooks on the leaf's ``AccumulateGrad`` itself
   (:func:`register_accumulate_grad_hook`: what torch's DDP reducer hooks into), which also run
   for a leaf that was reached with no defined gradient, as torch's engine runs its node.
4. **Final callbacks.** :func:`queue_callback` during a walk adds a function that runs once the
   walk is over (torch's ``Variable._execution_engine.queue_callback``).

The seed gradient of a scalar root is created per backward, as torch's engine does: a gradient is
never shared between two owners unless torch would share it too.
"""

from __future__ import annotations

import heapq
import sys
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

import torch
from torch import Tensor
from torch.utils.hooks import RemovableHandle

from . import _native
from ._graph import (
    FREED_MESSAGE,
    Edge,
    Node,
    Output,
    TrackedTensor,
    _requires_grad,
    edge,
    implements,
    is_grad_enabled,
    no_dispatch,
    set_grad_enabled,
)
from ._traceback import trims_traceback

__all__ = ["backward", "grad", "queue_callback", "register_accumulate_grad_hook",
           "tensor_backward"]


def _check_saved(node: Node) -> None:
    """Raise torch's errors if the node's graph was freed or a saved tensor modified in place."""
    saved = node.saved
    if node.backward is None or saved is None:
        raise RuntimeError(FREED_MESSAGE)
    for t, v in zip(saved, node.versions):
        if t._version != v:
            raise RuntimeError(
                "one of the variables needed for gradient computation has been modified by an "
                f"inplace operation: [{t.type()} {list(t.shape)}], which was saved by "
                f"{node.name}, is at version {t._version}; expected version {v} instead."
            )


# ---------------------------------------------------------------------------------------------
# AccumulateGrad
# ---------------------------------------------------------------------------------------------


def _non_overlapping_and_dense(t: Tensor) -> bool:
    """Whether ``t``'s elements fill its memory exactly once, in some order of its dims."""
    if t.is_contiguous() or t.is_contiguous(memory_format=torch.channels_last):
        return True
    dims = sorted((s, n) for s, n in zip(t.stride(), t.shape) if n != 1)
    expected = 1
    for stride, size in dims:
        if stride != expected:
            return False
        expected *= size
    return True


def _obeys_layout_contract(grad: Tensor, leaf: Tensor) -> bool:
    """torch's gradient layout contract: the leaf's strides (dims of size 1 aside, but never
    stride 0), or contiguous when the leaf itself is not dense."""
    if _non_overlapping_and_dense(leaf):
        for size, g_stride, l_stride in zip(grad.shape, grad.stride(), leaf.stride()):
            if size != 1:
                if g_stride != l_stride:
                    return False
            elif g_stride == 0:
                return False
        return True
    return grad.is_contiguous()


def _clone_obey_contract(grad: Tensor, leaf: Tensor) -> Tensor:
    """A copy of ``grad`` with the leaf's layout (torch's ``clone_obey_contract``)."""
    if _non_overlapping_and_dense(leaf):
        return grad.new_empty_strided(leaf.shape, leaf.stride(), dtype=grad.dtype).copy_(grad)
    return grad.clone(memory_format=torch.contiguous_format)


# References to a gradient held when _accumulate_leaf decides whether to store it as is: its
# local variable and getrefcount's argument. Callers hand the gradient over in a one-element
# list (``box``) so that they hold no reference themselves; any more references mean something
# else (a hook, the caller of backward, a pending input of another node) still holds it.
_OWN_REFS = 2


def _accumulate_leaf(leaf: Tensor, box: list[Tensor]) -> None:
    """torch's ``AccumulateGrad`` for ``leaf``, given its gradient in ``box`` (popped here;
    it already has the leaf's dtype).

    Tensor hooks first; then nothing if the leaf stopped requiring grad. A first gradient is
    stored as is only if nothing else references it (a later backward adds into it in place)
    and it has the leaf's layout, else a copy with the leaf's layout is stored; later gradients
    are added in place. Post-accumulate hooks last.
    """
    grad = box.pop()
    hooks = leaf._backward_hooks
    if hooks:
        for hook in tuple(hooks.values()):
            replaced = hook(grad)
            if replaced is not None:
                grad = replaced
    if not _requires_grad(leaf):
        return
    old = leaf.grad
    if old is None:
        if (sys.getrefcount(grad) <= _OWN_REFS and grad._use_count() == 1  # type: ignore[attr-defined]
                and _obeys_layout_contract(grad, leaf)):
            leaf.grad = grad.detach() if grad._base is not None else grad
        else:
            leaf.grad = _clone_obey_contract(grad, leaf)
    else:
        old.add_(grad)
    post_hooks = leaf._post_accumulate_grad_hooks
    if post_hooks:
        for hook in tuple(post_hooks.values()):
            hook(leaf)


def _cast_to_leaf(leaf: Tensor, box: list[Tensor]) -> None:
    """The summed gradient in ``box`` in the leaf's dtype, as torch's engine casts it."""
    if box[0].dtype is not leaf.dtype:
        box[0] = box[0].to(leaf.dtype)


def _leaf_ready(leaf: Tensor, box: list[Tensor]) -> None:
    """Every gradient of ``leaf`` has arrived (in ``box``, held there alone): AccumulateGrad,
    then the hooks on it."""
    _cast_to_leaf(leaf, box)
    _accumulate_leaf(leaf, box)
    if _ACCUMULATE_GRAD_HOOKS:
        _run_accumulate_grad_hooks(leaf)


# Hooks on a leaf's AccumulateGrad node (torch: ``grad_accumulator(leaf)->add_post_hook``), by
# id(leaf): a weak reference to the leaf and its hooks. Empty unless something registered one
# (torch's DDP, through shimnn's reducer); the compiled walk reads it too.
_ACCUMULATE_GRAD_HOOKS: dict[int, tuple[weakref.ref[Tensor], OrderedDict[int, Any]]] = {}


def register_accumulate_grad_hook(leaf: Tensor, hook: Callable[[Tensor], None]
                                  ) -> RemovableHandle:
    """Run ``hook(leaf)`` each time a backward runs the leaf's ``AccumulateGrad``: when every
    gradient the walk plans for the leaf has arrived, even if none was defined (torch's engine
    runs the node then too), after the gradient was accumulated and the leaf's
    post-accumulate hooks ran. Not run by ``torch.autograd.grad`` (which accumulates nothing).
    Returns a handle whose ``remove()`` unregisters it."""
    key = id(leaf)
    entry = _ACCUMULATE_GRAD_HOOKS.get(key)
    if entry is None:
        entry = _ACCUMULATE_GRAD_HOOKS[key] = (weakref.ref(leaf), OrderedDict())
        weakref.finalize(leaf, _ACCUMULATE_GRAD_HOOKS.pop, key, None)
    handle = RemovableHandle(entry[1])
    entry[1][handle.id] = hook
    return handle


def _run_accumulate_grad_hooks(leaf: Tensor) -> None:
    entry = _ACCUMULATE_GRAD_HOOKS.get(id(leaf))
    if entry is not None:
        for hook in tuple(entry[1].values()):
            hook(leaf)


_callbacks = threading.local()  # .stack: the final callbacks of each walk running here


def queue_callback(callback: Callable[[], None]) -> None:
    """Run ``callback()`` when the backward walk running now has finished (torch's
    ``Variable._execution_engine.queue_callback``); callbacks run in the order queued, and one
    may queue more. Raises outside a backward, as torch does."""
    stack = getattr(_callbacks, "stack", None)
    if not stack:
        raise RuntimeError("Final callbacks can only be installed during backward pass.")
    stack[-1].append(callback)


# ---------------------------------------------------------------------------------------------
# Tensor hooks and retain_grad (torch's tensor pre-hooks of a node)
# ---------------------------------------------------------------------------------------------


def _retain(t: Tensor, grad: Tensor) -> None:
    """torch's retains_grad hook: a contiguous copy first, then ``old + new``."""
    old = t.grad
    t.grad = grad.clone(memory_format=torch.contiguous_format) if old is None else old + grad


def _run_tensor_hooks(node: Node, grad: Any) -> Any:
    """The hooks of the node's output tensors, then their ``retain_grad``: for a node with
    several outputs ``grad`` is the list of their gradients (``None`` where none arrived)."""
    if node.outputs is None:
        for _, hook in tuple(node.hooks or ()):
            replaced = hook(grad)
            if replaced is not None:
                grad = replaced
        for t in node.retained or ():
            _retain(t, grad)
        return grad
    grads = list(grad)
    for nr, hook in tuple(node.hooks or ()):
        if grads[nr] is not None:
            replaced = hook(grads[nr])
            if replaced is not None:
                grads[nr] = replaced
    for t in node.retained or ():
        g = grads[t._output_nr]
        if g is not None:
            _retain(t, g)
    return grads


# ---------------------------------------------------------------------------------------------
# The plan: what runs, and how many gradients each leaf waits for
# ---------------------------------------------------------------------------------------------


def _node_of(e: Edge) -> Node | None:
    t = type(e)
    if t is Node:
        return e  # type: ignore[return-value]
    if t is Output:
        return e.node  # type: ignore[union-attr]
    return None


def _reachable(root_edges: Sequence[Edge]) -> list[Node]:
    """Every node reachable from the roots, each once."""
    seen: set[int] = set()
    order: list[Node] = []
    stack = [n for n in map(_node_of, root_edges) if n is not None]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        order.append(node)
        for e in node.inputs:
            child = _node_of(e)
            if child is not None and id(child) not in seen:
                stack.append(child)
    return order


def _needed(nodes: list[Node], wanted_leaves: set[int], wanted_outputs: set[tuple[int, int]]
            ) -> set[int]:
    """The ids of the nodes with a path to a wanted leaf or a wanted output: only they run
    (torch's ``exec_info``). Nodes in ``nodes`` are visited newest first after sorting, so
    every node's inputs are decided before it."""
    needed: set[int] = set()
    for node in sorted(nodes, key=lambda n: n.seq):  # oldest first: inputs before consumers
        for e in node.inputs:
            t = type(e)
            if t is Node or t is Output:
                child = _node_of(e)
                nr = e.nr if t is Output else 0  # type: ignore[union-attr]
                if id(child) in needed or (id(child), nr) in wanted_outputs:
                    needed.add(id(node))
                    break
            elif e is not None and id(e) in wanted_leaves:
                needed.add(id(node))
                break
    return needed


# ---------------------------------------------------------------------------------------------
# The walk
# ---------------------------------------------------------------------------------------------


class _Walk:
    """One backward: pending gradients of nodes and leaves, in torch's order."""

    __slots__ = ("node_grads", "heap", "leaf_grads", "leaf_deps", "needed", "wanted",
                 "accumulate", "captures", "retain_graph", "check_nan", "seeds")

    def __init__(self, retain_graph: bool, accumulate: bool) -> None:
        self.node_grads: dict[Node, Any] = {}  # a node's output gradient (a list: several)
        self.heap: list[tuple[int, Node]] = []
        self.leaf_grads: dict[int, list[Any]] = {}  # id(leaf) -> [leaf, summed gradient]
        self.leaf_deps: dict[int, int] = {}  # id(leaf) -> gradients still to arrive
        self.needed: set[int] | None = None  # ids of the nodes that run (None: all)
        self.wanted: set[tuple[int, int]] = set()  # (id(node), output) of non-leaf inputs
        self.accumulate = accumulate  # into .grad (backward) or only captured (grad)
        self.captures: dict[Any, Tensor | None] | None = None
        self.retain_graph = retain_graph
        # torch.autograd.detect_anomaly(): every backward output is checked for NaN.
        self.check_nan = _checks_nan()
        self.seeds: list[tuple[Tensor, int]] = []  # implicit root gradients, to recycle

    def send(self, e: Edge, grads: list[Any], i: int) -> None:
        """Hand ``grads[i]`` to its edge (taking it out of the list, so that only the engine
        holds it): torch's input buffer, the first gradient, then ``old + new``."""
        g = grads[i]
        grads[i] = None
        t = type(e)
        if t is Node:
            node = cast(Node, e)
            prev = self.node_grads.get(node)
            if prev is None:
                if self.needed is not None and id(node) not in self.needed and (
                        id(node), 0) not in self.wanted:
                    return
                self.node_grads[node] = g
                heapq.heappush(self.heap, (-node.seq, node))
            else:
                self.node_grads[node] = prev + g
        elif t is Output:
            node, nr = e.node, e.nr  # type: ignore[union-attr]
            pending = self.node_grads.get(node)
            if pending is None:
                if self.needed is not None and id(node) not in self.needed and (
                        id(node), nr) not in self.wanted:
                    return
                pending = self.node_grads[node] = [None] * node.outputs  # type: ignore[operator]
                heapq.heappush(self.heap, (-node.seq, node))
            prev = pending[nr]
            pending[nr] = g if prev is None else prev + g
        else:
            key = id(e)
            remaining = self.leaf_deps.get(key)
            if remaining is None:
                return  # a leaf nobody asked for (backward(inputs=...), grad)
            entry = self.leaf_grads.get(key)
            if entry is None:
                entry = self.leaf_grads[key] = [e, g]
            else:
                entry[1] = entry[1] + g
            del g
            if remaining > 1:
                self.leaf_deps[key] = remaining - 1
                return
            del self.leaf_deps[key], self.leaf_grads[key]
            leaf = entry[0]
            del entry[0]
            self.leaf_ready(leaf, entry)

    def no_gradient(self, leaf: Tensor) -> None:
        """A backward returned no gradient for ``leaf``: it waits for one fewer."""
        key = id(leaf)
        remaining = self.leaf_deps.get(key)
        if remaining is None:
            return
        if remaining > 1:
            self.leaf_deps[key] = remaining - 1
            return
        del self.leaf_deps[key]
        entry = self.leaf_grads.pop(key, None)
        if entry is not None:
            del entry[0]
            self.leaf_ready(leaf, entry)
        elif self.captures is None:
            self.accumulate_grad_hooks(leaf)  # torch runs AccumulateGrad, with no gradient

    def accumulate_grad_hooks(self, leaf: Tensor) -> None:
        """The leaf's AccumulateGrad hooks, for a leaf whose gradients all were undefined."""
        if _ACCUMULATE_GRAD_HOOKS:
            _run_accumulate_grad_hooks(leaf)

    def flush(self) -> None:
        """Leaves still waiting when the walk ends (a node on their path received no gradient,
        so its backward never ran): they get what did arrive."""
        while self.leaf_grads:
            key = next(iter(self.leaf_grads))
            entry = self.leaf_grads.pop(key)
            self.leaf_deps.pop(key, None)
            leaf = entry[0]
            del entry[0]
            self.leaf_ready(leaf, entry)
        if _ACCUMULATE_GRAD_HOOKS and self.captures is None:
            # Leaves that no gradient reached: torch's engine still runs their AccumulateGrad
            # (every node it reaches runs, with undefined gradients).
            for key in list(self.leaf_deps):
                hooked = _ACCUMULATE_GRAD_HOOKS.get(key)
                leaf = hooked[0]() if hooked is not None else None
                if leaf is not None:
                    del self.leaf_deps[key]
                    _run_accumulate_grad_hooks(leaf)

    def leaf_ready(self, leaf: Tensor, box: list[Tensor]) -> None:
        """Every gradient of ``leaf`` has arrived (in ``box``): AccumulateGrad, or a capture for
        ``grad``."""
        captures = self.captures
        if captures is None:
            _leaf_ready(leaf, box)
            return
        if id(leaf) in captures:
            _cast_to_leaf(leaf, box)
            g = box.pop()
            hooks = leaf._backward_hooks  # torch runs a leaf's hooks before capturing it
            if hooks:
                for hook in tuple(hooks.values()):
                    replaced = hook(g)
                    if replaced is not None:
                        g = replaced
            captures[id(leaf)] = g

    def run(self) -> None:
        heap, node_grads, pop = self.heap, self.node_grads, heapq.heappop
        needed, captures, retain_graph = self.needed, self.captures, self.retain_graph
        while heap:
            _, node = pop(heap)
            grad = node_grads.pop(node)
            if needed is not None and id(node) not in needed:
                # A node only on the way to a wanted non-leaf: torch runs its tensor hooks and
                # captures the gradient, but not its backward.
                if node.hooks or node.retained:
                    grad = _run_tensor_hooks(node, grad)
                self._capture(node, grad)
                continue
            if captures is not None:
                self._capture(node, grad)  # torch captures a node that runs before its hooks
            if node.hooks or node.retained:
                grad = _run_tensor_hooks(node, grad)
            _check_saved(node)
            backward_fn = node.backward
            if not retain_graph:
                # The node's own references go now: a node that frees as it goes (a fused chain)
                # then holds each saved tensor only as long as its backward needs it.
                node.release()
            # The incoming gradient is handed over, not kept here: a fused chain frees it once
            # its last layer has used it, as torch's engine frees a consumed input buffer.
            if node.takes_retain:
                input_grads = backward_fn(grad, retain_graph)  # type: ignore[misc]
            else:
                input_grads = backward_fn(grad)  # type: ignore[misc]
            del backward_fn, grad
            # A list the walk owns: send takes each gradient out of it (see _accumulate_leaf).
            input_grads = list(input_grads)
            if self.check_nan:
                _check_nan(node, input_grads)
            for i, e in enumerate(node.inputs[:len(input_grads)]):
                if e is not None:
                    if input_grads[i] is not None:
                        self.send(e, input_grads, i)
                    elif type(e) is not Node and type(e) is not Output:
                        self.no_gradient(cast(Tensor, e))  # torch's undefined gradient
        self.flush()

    def _capture(self, node: Node, grad: Any) -> None:
        captures = self.captures
        if captures is None:
            return
        if node.outputs is None:
            if (id(node), 0) in captures:
                captures[(id(node), 0)] = grad
        else:
            for nr, g in enumerate(grad):
                if (id(node), nr) in captures:
                    captures[(id(node), nr)] = g


def _check_nan(node: Node, grads: list[Any]) -> None:
    """torch's anomaly mode: a backward that returns NaN names its node."""
    for i, g in enumerate(grads):
        if isinstance(g, Tensor) and bool(torch.isnan(g).any()):
            raise RuntimeError(f"Function '{node.name}' returned nan values in its {i}th output.")


# 0-d CPU ones that came back from a backward untouched and unreferenced, by dtype: torch makes
# the seed of a scalar loss anew per backward (it may end up as a leaf's .grad, or be kept or
# modified by a hook); one that provably did none of that is as good as a new one, and cheaper.
_SEEDS: dict[torch.dtype, list[Tensor]] = {}


def _seed(root: Tensor) -> Tensor:
    """The implicit gradient of a single-element root: ones."""
    if root.dim() == 0 and root.is_cpu:
        pool = _SEEDS.get(root.dtype)
        return pool.pop() if pool else torch.ones((), dtype=root.dtype)
    return torch.ones_like(root, memory_format=torch.preserve_format)


def _recycle(seeds: list[tuple[Tensor, int]]) -> None:
    """Keep the seeds that nothing references (no .grad, no hook's list, no view of them, no
    tensor sharing their memory, such as a .grad that is a detached view of one) and nothing
    modified."""
    while seeds:
        seed, version = seeds.pop()
        if sys.getrefcount(seed) <= 2 and seed._use_count() == 1 and (  # type: ignore[attr-defined]
                seed._version == version) and _memory_unshared(seed):
            _SEEDS.setdefault(seed.dtype, []).append(seed)
        del seed


_storage_use_count: Any = torch._C._storage_Use_Count


def _memory_unshared(t: Tensor) -> bool:
    """No other tensor (and no Python storage object held elsewhere) uses the memory of ``t``:
    its storage is referenced by ``t`` and by the storage object made here only."""
    storage = t.untyped_storage()
    return sys.getrefcount(storage) <= 2 and _storage_use_count(storage._cdata) <= 2


def _root_grad(i: int, root: Tensor, grad: Tensor | None) -> Tensor:
    if grad is None:
        if root.numel() != 1:
            raise RuntimeError("grad can be implicitly created only for scalar outputs")
        if not root.dtype.is_floating_point and not root.dtype.is_complex:
            raise RuntimeError(
                f"grad can be implicitly created only for real scalar outputs but got {root.dtype}"
            )
        return _seed(root)
    if not isinstance(grad, Tensor):
        raise TypeError(
            f"gradients can be either Tensors or None, but got {type(grad).__name__}")
    if grad.shape != root.shape:
        raise RuntimeError(
            f"Mismatch in shape: grad_output[{i}] has a shape of {grad.shape} and output[{i}] "
            f"has a shape of {root.shape}."
        )
    if grad.dtype != root.dtype:
        grad = grad.to(root.dtype)
    return grad


def _target_key(t: Tensor) -> Any:
    """How the walk names a wanted tensor: its id (a leaf) or (id(node), output number)."""
    if type(t) is TrackedTensor and t._node is not None:
        return (id(t._node), t._output_nr)
    return id(t)


def _count_leaf_edges(nodes: list[Node], root_edges: list[Edge], wanted: set[int] | None,
                      deps: dict[int, int]) -> None:
    """How many gradients each (wanted) leaf will receive: one per edge into it from the nodes
    that run, one per root that is the leaf itself (torch's dependencies of AccumulateGrad)."""
    for e in [e for node in nodes for e in node.inputs] + [
            e for e in root_edges if _node_of(e) is None]:
        if e is not None and type(e) is not Node and type(e) is not Output:
            key = id(e)
            if wanted is None or key in wanted:
                deps[key] = deps.get(key, 0) + 1


def _roots(roots: Sequence[Tensor], grads: Sequence[Tensor | None]
           ) -> tuple[list[Edge], list[Tensor], list[tuple[Tensor, int]]]:
    """The roots' edges, their gradients, and the implicit ones among them (seeds to recycle,
    with their versions)."""
    root_edges: list[Edge] = []
    for i, root in enumerate(roots):
        e = edge(root)
        if e is None:
            raise RuntimeError(
                f"element {i} of tensors does not require grad and does not have a grad_fn")
        root_edges.append(e)
    root_grads = [_root_grad(i, r, g) for i, (r, g) in enumerate(zip(roots, grads))]
    seeds = [(g, g._version) for g, given in zip(root_grads, grads)
             if given is None and g.dim() == 0 and g.is_cpu]
    return root_edges, root_grads, seeds


def _start(roots: Sequence[Tensor], grads: Sequence[Tensor | None], retain_graph: bool,
           targets: Sequence[Tensor] | None, accumulate: bool) -> _Walk:
    walk = _Walk(retain_graph, accumulate)
    root_edges, root_grads, walk.seeds = _roots(roots, grads)
    deps = walk.leaf_deps
    if targets is None:
        _count_leaf_edges(_reachable(root_edges), root_edges, None, deps)
    else:
        nodes = _reachable(root_edges)
        wanted_leaves = {id(t) for t in targets if _node_of(edge(t)) is None}
        wanted_outputs = {k for k in map(_target_key, targets) if type(k) is tuple}
        walk.needed = needed = _needed(nodes, wanted_leaves, wanted_outputs)
        walk.wanted = wanted_outputs
        if not accumulate:
            walk.captures = dict.fromkeys(map(_target_key, targets))
        _count_leaf_edges([n for n in nodes if id(n) in needed], root_edges, wanted_leaves,
                          deps)
    for i, e in enumerate(root_edges):
        walk.send(e, root_grads, i)
    return walk


def backward(
    roots: Sequence[Tensor],
    grads: Sequence[Tensor | None],
    retain_graph: bool = False,
    inputs: Iterable[Tensor] | None = None,
) -> None:
    """Backpropagate from ``roots``, accumulating into the leaves' ``.grad``.

    Args:
        roots: output tensors to differentiate.
        grads: the gradient of each root (``None``: ones, for a single-element root).
        retain_graph: keep saved tensors so the graph can be walked again.
        inputs: if given, only these receive ``.grad`` (a non-leaf one as ``retain_grad``
            would), and only the nodes leading to them run.
    """
    targets = None
    if inputs is not None:
        targets = list(inputs)
        with no_dispatch():
            for t in targets:
                if type(t) is TrackedTensor and t._node is not None:
                    t.retain_grad()  # torch: a non-leaf input is filled through retain_grad
    _run(roots, grads, retain_graph, targets, accumulate=True)


def _run(roots: Sequence[Tensor], grads: Sequence[Tensor | None], retain_graph: bool,
         targets: list[Tensor] | None, accumulate: bool) -> _Walk | None:
    """The walk (returned, for its captures) of a backward or ``grad``; ``None`` where it ran in
    C++ (no ``inputs``, so nothing captured)."""
    prev_grad_mode = is_grad_enabled()
    set_grad_enabled(False)
    stack = getattr(_callbacks, "stack", None)
    if stack is None:
        stack = _callbacks.stack = []
    callbacks: list[Callable[[], None]] = []
    stack.append(callbacks)
    try:
        with no_dispatch():
            native = _native.get()
            if native is not None and targets is None and not _checks_nan():
                # _start and _Walk.run in C++ (the same plan, order and accumulation)
                root_edges, root_grads, seeds = _roots(roots, grads)
                native.backward(root_edges, root_grads, retain_graph, NATIVE_ENGINE)
                walk = None
            else:
                walk = _start(roots, grads, retain_graph, targets, accumulate)
                walk.run()
                seeds = walk.seeds
            i = 0
            while i < len(callbacks):  # a callback may queue another
                callbacks[i]()
                i += 1
            _recycle(seeds)
            return walk
    finally:
        stack.pop()
        set_grad_enabled(prev_grad_mode)


_anomaly_enabled = torch.is_anomaly_enabled


def _checks_nan() -> bool:
    """torch.autograd.detect_anomaly() with its NaN check: every backward output is checked."""
    return _anomaly_enabled() and torch.is_anomaly_check_nan_enabled()


def grad(
    outputs: Sequence[Tensor],
    inputs: Sequence[Tensor],
    grad_outputs: Sequence[Tensor | None],
    retain_graph: bool,
    allow_unused: bool,
    materialize_grads: bool,
) -> tuple[Tensor | None, ...]:
    """``torch.autograd.grad`` over shimnn's graph: the gradients of ``outputs`` with respect
    to ``inputs``, returned, with no ``.grad`` touched."""
    with no_dispatch():
        for t in inputs:
            if edge(t) is None:
                raise RuntimeError("One of the differentiated Tensors does not require grad")
    walk = _run(outputs, grad_outputs, retain_graph, list(inputs), accumulate=False)
    assert walk is not None and walk.captures is not None
    captures = walk.captures
    result: list[Tensor | None] = []
    with no_dispatch():
        for i, t in enumerate(inputs):
            g = captures.get(_target_key(t))
            if g is None:
                if materialize_grads:
                    g = torch.zeros_like(t)
                elif not allow_unused:
                    raise RuntimeError(_unused_message(i))
            result.append(g)
    return tuple(result)


# torch's engine words this error in C++, which shimnn cannot call without running it; the text
# changed in torch 2.13 (the index of the input was added).
_NAMES_UNUSED_INDEX = torch.torch_version.TorchVersion(torch.__version__) >= (2, 13)  # type: ignore[operator]


def _unused_message(i: int) -> str:
    """torch.autograd.grad's error for input ``i`` that the outputs do not depend on, in the
    installed torch's words."""
    which = (f"The differentiated Tensor at index {i}" if _NAMES_UNUSED_INDEX
             else "One of the differentiated Tensors")
    return (f"{which} appears to not have been used in the graph. Set allow_unused=True if "
            "this is the desired behavior.")


def _as_tuple(value: Any) -> tuple[Any, ...]:
    if value is None or isinstance(value, Tensor):
        return (value,)
    return tuple(value)


def _no_higher_order(create_graph: bool, is_grads_batched: bool = False) -> None:
    if create_graph:
        raise NotImplementedError(
            "shimnn computes gradients by hand and does not record the backward pass: "
            "create_graph=True (higher-order gradients) is not supported")
    if is_grads_batched:
        raise NotImplementedError("shimnn: is_grads_batched=True is not supported")


@implements(torch.autograd.grad)
@trims_traceback
def autograd_grad(
    outputs: Any, inputs: Any, grad_outputs: Any = None, retain_graph: bool | None = None,
    create_graph: bool = False, only_inputs: bool = True, allow_unused: bool | None = None,
    is_grads_batched: bool = False, materialize_grads: bool = False,
) -> tuple[Tensor | None, ...]:
    """``torch.autograd.grad`` on shimnn tensors: shimnn's engine, torch's semantics."""
    _no_higher_order(create_graph, is_grads_batched)
    if allow_unused is None:
        allow_unused = materialize_grads
    elif materialize_grads and not allow_unused:
        raise ValueError(
            "Expected allow_unused to be True or not passed when materialize_grads=True, "
            "but got: allow_unused=False.")
    outs = _as_tuple(outputs)
    ins = inputs if isinstance(inputs, tuple) else _as_tuple(inputs)
    if len(ins) == 0:
        raise RuntimeError("`inputs` argument to `grad()` cannot be empty.")
    grads = _as_tuple(grad_outputs) if grad_outputs is not None else (None,) * len(outs)
    if len(grads) != len(outs):
        raise RuntimeError(f"got {len(outs)} tensors and {len(grads)} gradients")
    return grad(outs, ins, grads, bool(create_graph if retain_graph is None else retain_graph),
                allow_unused, materialize_grads)


@implements(torch.autograd.backward)
@trims_traceback
def autograd_backward(
    tensors: Any, grad_tensors: Any = None, retain_graph: bool | None = None,
    create_graph: bool = False, grad_variables: Any = None, inputs: Any = None,
) -> None:
    """``torch.autograd.backward`` on shimnn tensors: shimnn's engine, torch's semantics."""
    _no_higher_order(create_graph)
    if grad_variables is not None and grad_tensors is None:
        grad_tensors = grad_variables
    roots = _as_tuple(tensors)
    grads = _as_tuple(grad_tensors) if grad_tensors is not None else (None,) * len(roots)
    if len(grads) != len(roots):
        raise RuntimeError(f"got {len(roots)} tensors and {len(grads)} gradients")
    if inputs is not None and len(_as_tuple(inputs)) == 0:
        raise RuntimeError("`inputs` argument to `backward()` cannot be empty.")
    backward(roots, grads, bool(create_graph if retain_graph is None else retain_graph),
             None if inputs is None else _as_tuple(inputs))


@trims_traceback
def tensor_backward(
    self: Tensor,
    gradient: Tensor | None = None,
    retain_graph: bool | None = None,
    create_graph: bool = False,
    inputs: Sequence[Tensor] | Tensor | None = None,
) -> None:
    """``Tensor.backward`` for shimnn's tensors (tracked tensors and parameters)."""
    if gradient is None and inputs is None and not create_graph:
        native = _native.get()
        if native is not None and not _anomaly_enabled() and native.backward_root(
                self, bool(retain_graph), NATIVE_ENGINE):
            return  # a scalar loss: backward() -> _run in C++ (False: not that case, not done)
    if create_graph:
        raise NotImplementedError(
            "shimnn computes gradients by hand and does not record the backward pass: "
            "create_graph=True (higher-order gradients) is not supported"
        )
    if isinstance(inputs, Tensor):
        inputs = [inputs]
    if inputs is not None and len(inputs) == 0:
        raise RuntimeError("`inputs` argument to `backward()` cannot be empty.")
    backward([self], [gradient], bool(retain_graph), inputs)


NATIVE_ENGINE = (Node, Output, TrackedTensor, _run_tensor_hooks, _check_saved, _leaf_ready,
                 _SEEDS, _ACCUMULATE_GRAD_HOOKS, _run_accumulate_grad_hooks, _callbacks)
"""What the compiled walk (``backward`` and ``backward_root`` in ``shimnn/csrc/native.cpp``)
takes from Python: the graph's types and the functions for what it does not do itself."""
