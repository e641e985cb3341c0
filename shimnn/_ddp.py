"""shimnn under ``torch.nn.parallel.DistributedDataParallel``: torch's reducer, driven by shimnn.

torch's DDP reduces gradients from hooks on torch autograd's gradient accumulators and ends each
backward with a callback queued in torch's engine; neither runs when shimnn computes the
gradients, so wrapped around a shimnn model it would silently keep every rank's local gradient.
shimnn therefore does the reducer's work from its own engine, for torch's DDP class exactly as
users construct it (``import shimnn as nn`` with ``torch.nn.parallel.DistributedDataParallel``,
or an unmodified script under ``shimnn run`` / ``patch_torch``):

- :class:`~shimnn._reducer.Reducer` transcribes torch 2.13's ``c10d::Reducer``
  (``torch/csrc/distributed/c10d/reducer.cpp``) step by step: the same buckets (torch's own
  ``_compute_bucket_assignment_by_size``; one bucket in reverse registration order first, then
  rebuilt in the order gradients became ready, rank 0's layout broadcast), the same copy into
  the bucket (``mul_out`` by the wrapped scalar ``1 / world_size``; a true division once the
  gradient is a bucket view, or with ``batched_grad_copy``), the same collectives in the same
  order (the process group's ``allreduce`` of each bucket, SUM; the used-parameter map; the
  bucket-index broadcasts), ``no_sync``, ``find_unused_parameters``, ``static_graph``,
  ``gradient_as_bucket_view``, ``skip_all_reduce_unused_params`` and communication hooks
  (Python hooks get a :class:`~shimnn._reducer.GradBucket`; torch's built-in C++ hooks run
  as torch's own code).
  Its ``accumulate_grad_hook`` runs from shimnn's engine as a hook on each parameter's
  ``AccumulateGrad`` (:func:`shimnn._engine.register_accumulate_grad_hook`) and the end of a
  backward is a final callback of shimnn's walk (:func:`shimnn._engine.queue_callback`), where
  torch's reducer uses torch's engine for both.
- The DDP class stays torch's: its constructor (argument checks, parameter verification, the
  broadcast of parameters and buffers from rank 0), its forward (buffer broadcasts, join
  notifications, ``_DDPSink`` for unused-parameter detection) and ``no_sync`` run unchanged;
  :func:`install` wraps the few methods that hand torch's C++ reducer to C++ functions, and
  ``_ddp_init_helper`` replaces that reducer with :class:`Reducer` when the model has shimnn
  parameters. torch's C++ reducer is still built, for the DDP logger that holds it and for the
  built-in hooks; its autograd hooks are removed.

Refused with an error naming shimnn (at construction, or at the first forward for what torch
sets up lazily): ``mixed_precision``, ``delay_all_reduce_named_params``, the compiled
("python_reducer") mode, sparse gradients, complex parameters, optimizers applied in backward
(``_apply_optimizer_in_backward``), the uneven-input ``join``, and FSDP / ``fully_shard`` around a
model with shimnn parameters. A DDP built around a model without shimnn parameters whose
forward nevertheless produces shimnn tensors raises at the forward instead of training on local
gradients.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.util
import inspect
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from ._graph import TrackedTensor
from ._reducer import Reducer, refuse
from .modules.module import Parameter

__all__ = ["install", "is_shimnn_model"]

_DDP = torch.nn.parallel.DistributedDataParallel
_ddp_module = sys.modules[_DDP.__module__]


def is_shimnn_model(parameters: Sequence[Tensor]) -> bool:
    """Whether shimnn computes these parameters' gradients (any of them is a shimnn one)."""
    return any(isinstance(p, Parameter) for p in parameters)


# ---------------------------------------------------------------------------------------------
# torch's DistributedDataParallel, with shimnn's reducer for shimnn models
# ---------------------------------------------------------------------------------------------

_torch = {name: vars(_DDP)[name] for name in (
    "__init__", "_ddp_init_helper", "_set_static_graph", "register_comm_hook",
    "_register_builtin_comm_hook", "_post_forward", "join", "join_hook",
    "_setup_in_backward_optimizers")}


def _init(self: Any, module: torch.nn.Module, *args: Any, **kwargs: Any) -> None:
    if is_shimnn_model(list(module.parameters())):
        try:  # by the installed torch's parameters (they vary between releases)
            bound = _INIT_SIGNATURE.bind(self, module, *args, **kwargs).arguments
        except TypeError:
            bound = {}  # torch's __init__ raises its own error below
        if bound.get("mixed_precision") is not None:
            raise refuse("mixed_precision")
        if bound.get("delay_all_reduce_named_params") is not None or bound.get(
                "param_to_hook_all_reduce") is not None:
            raise refuse("delay_all_reduce_named_params")
        if torch._dynamo.utils.get_optimize_ddp_mode() == "python_reducer":
            raise refuse('torch._dynamo.config.optimize_ddp="python_reducer"')
    _torch["__init__"](self, module, *args, **kwargs)


_INIT_SIGNATURE = inspect.signature(_torch["__init__"])
functools.update_wrapper(_init, _torch["__init__"])  # torch's signature and docstring

# What torch's ``_ddp_init_helper`` passes its C++ ``dist.Reducer``, by position (the same order
# in torch 2.11 to 2.14; 2.11 has no ``batched_grad_copy``).
_REDUCER_ARGS = ("parameters", "bucket_indices", "per_bucket_size_limits", "process_group",
                 "expect_sparse_gradients", "bucket_bytes_cap", "find_unused_parameters",
                 "gradient_as_bucket_view", "param_names", "first_bucket_bytes_cap",
                 "skip_all_reduce_unused_params", "use_python_reducer", "bucket_bytes_cap_list",
                 "batched_grad_copy")
_CppReducer = dist.Reducer


class _CapturingReducer:
    """``dist.Reducer`` while torch's ``_ddp_init_helper`` runs for a shimnn model: it builds
    torch's C++ reducer and keeps the arguments the installed torch chose (the buckets, their
    limits, the flags), so shimnn's reducer gets the same ones whatever the release."""

    def __init__(self) -> None:
        self.arguments: dict[str, Any] = {}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.arguments = {**dict(zip(_REDUCER_ARGS, args)), **kwargs}
        return _CppReducer(*args, **kwargs)


def _ddp_init_helper(self: Any, parameters: list[Tensor], expect_sparse_gradient: list[bool],
                     param_to_name_mapping: dict[int, str], static_graph: bool) -> None:
    if not is_shimnn_model(parameters):
        _torch["_ddp_init_helper"](self, parameters, expect_sparse_gradient,
                                   param_to_name_mapping, static_graph)
        return
    capture = _CapturingReducer()
    dist.Reducer = capture  # type: ignore[misc, assignment]
    try:
        _torch["_ddp_init_helper"](self, parameters, expect_sparse_gradient,
                                   param_to_name_mapping, static_graph)
    finally:
        dist.Reducer = _CppReducer  # type: ignore[misc]
    given = capture.arguments
    cpp = self.reducer
    cpp._remove_autograd_hooks()
    self.reducer = Reducer(
        cpp, self.logger, list(parameters), list(given["bucket_indices"]), self.process_group,
        list(expect_sparse_gradient), given["bucket_bytes_cap"],
        given["find_unused_parameters"], given["gradient_as_bucket_view"], param_to_name_mapping,
        given["first_bucket_bytes_cap"], given["skip_all_reduce_unused_params"],
        list(given["bucket_bytes_cap_list"]), bool(given.get("batched_grad_copy", False)))


def _set_static_graph(self: Any) -> None:
    _torch["_set_static_graph"](self)
    if isinstance(self.reducer, Reducer):
        # shimnn's reducer queues its first-iteration reduction itself: torch's _DDPSink would
        # queue it in torch's engine, which does not run
        self._static_graph_delay_allreduce_enqueued = True


def _with_cpp_reducer(method: str) -> Callable[..., None]:
    """torch's ``register_comm_hook`` / ``_register_builtin_comm_hook`` (checks, logging, the
    registration in its C++ reducer), then the same hook for shimnn's reducer."""
    torch_method = _torch[method]

    @functools.wraps(torch_method)
    def register(self: Any, *args: Any) -> None:
        reducer = self.reducer
        if not isinstance(reducer, Reducer):
            torch_method(self, *args)
            return
        self.reducer = reducer._cpp
        try:
            torch_method(self, *args)
        finally:
            self.reducer = reducer
        if method == "register_comm_hook":
            reducer.register_comm_hook(*args)
        else:
            reducer.register_builtin_comm_hook()

    return register


def _post_forward(self: Any, output: Any) -> Any:
    if not isinstance(self.reducer, Reducer) and torch.is_grad_enabled() and (
            self.require_backward_grad_sync):
        for t in _ddp_module._find_tensors(output):
            if type(t) is TrackedTensor and t._node is not None:
                raise NotImplementedError(
                    "shimnn computed this DistributedDataParallel model's output, but the model "
                    "has no shimnn parameters, so DDP was built on torch's reducer, which only "
                    "torch's autograd drives: its ranks would train on local gradients. Make "
                    "the model's parameters shimnn's (shimnn.nn modules, shimnn.Parameter, or "
                    "shimnn.patch_torch / shimnn run before the model is built).")
    return _torch["_post_forward"](self, output)


def _setup_in_backward_optimizers(self: Any) -> None:
    # Refused before torch's own setup: that registers torch autograd hooks (and, in torch
    # 2.11/2.12, creates a device stream, which fails on a CUDA build without a GPU).
    if isinstance(self.reducer, Reducer) and any(
            hasattr(p, "_in_backward_optimizers") for p in self._module_parameters):
        self.reducer._set_optimizer_in_backward()
    _torch["_setup_in_backward_optimizers"](self)


def _join(self: Any, *args: Any, **kwargs: Any) -> Any:
    if isinstance(self.reducer, Reducer):
        raise refuse("join() (uneven inputs)")
    return _torch["join"](self, *args, **kwargs)


def _join_hook(self: Any, **kwargs: Any) -> Any:
    if isinstance(self.reducer, Reducer):
        raise refuse("the Join context manager (uneven inputs)")
    return _torch["join_hook"](self, **kwargs)


# ---------------------------------------------------------------------------------------------
# FSDP and fully_shard: refused (they hook torch's autograd), patched when imported
# ---------------------------------------------------------------------------------------------


def _refuse_sharding(name: str) -> NotImplementedError:
    return NotImplementedError(
        f"shimnn: {name} is not supported for a model with shimnn parameters: it shards and "
        "reduces gradients from hooks in torch's autograd, which shimnn replaces (its ranks "
        "would not synchronize). Use torch.nn.parallel.DistributedDataParallel.")


def _patch_fsdp(module: ModuleType) -> None:
    cls = module.FullyShardedDataParallel
    original = cls.__init__

    @functools.wraps(original)
    def __init__(self: Any, model: torch.nn.Module, *args: Any, **kwargs: Any) -> None:
        if is_shimnn_model(list(model.parameters())):
            raise _refuse_sharding("FullyShardedDataParallel")
        original(self, model, *args, **kwargs)

    cls.__init__ = __init__


def _patch_fully_shard(module: ModuleType) -> None:
    original = module.fully_shard

    @functools.wraps(original)
    def fully_shard(model: Any, *args: Any, **kwargs: Any) -> Any:
        models = model if isinstance(model, (list, tuple)) else [model]
        if any(is_shimnn_model(list(m.parameters())) for m in models):
            raise _refuse_sharding("fully_shard (FSDP2)")
        return original(model, *args, **kwargs)

    module.fully_shard = fully_shard  # type: ignore[attr-defined]


_AFTER_IMPORT: dict[str, Callable[[ModuleType], None]] = {
    "torch.distributed.fsdp.fully_sharded_data_parallel": _patch_fsdp,
    "torch.distributed.fsdp._fully_shard._fully_shard": _patch_fully_shard,
}


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: runs a patch right after one of these modules has executed
    (importing them eagerly would cost seconds)."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        patch = _AFTER_IMPORT.get(fullname)
        if patch is None:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_patch(module: ModuleType) -> None:
            exec_module(module)
            patch(module)

        spec.loader.exec_module = exec_then_patch  # type: ignore[method-assign]
        return spec


def install() -> None:
    """Serve shimnn models from torch's DDP class (see the module docstring); idempotent."""
    if vars(_DDP)["__init__"] is _init:
        return
    _DDP.__init__ = _init  # type: ignore[method-assign]
    _DDP._ddp_init_helper = _ddp_init_helper  # type: ignore[method-assign]
    _DDP._set_static_graph = _set_static_graph  # type: ignore[method-assign]
    _DDP.register_comm_hook = _with_cpp_reducer("register_comm_hook")  # type: ignore[method-assign]
    _DDP._register_builtin_comm_hook = _with_cpp_reducer(  # type: ignore[method-assign]
        "_register_builtin_comm_hook")
    _DDP._post_forward = _post_forward  # type: ignore[method-assign]
    _DDP.join = _join  # type: ignore[method-assign]
    _DDP._setup_in_backward_optimizers = (  # type: ignore[method-assign]
        _setup_in_backward_optimizers)
    _DDP.join_hook = _join_hook  # type: ignore[method-assign]
    for name, patch in _AFTER_IMPORT.items():
        if name in sys.modules:
            patch(sys.modules[name])
    sys.meta_path.insert(0, _PatchOnImport())
