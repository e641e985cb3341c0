"""torch 2.13's DDP reducer (``c10d::Reducer``, ``torch/csrc/distributed/c10d/reducer.cpp``),
transcribed to run from shimnn's engine: see :mod:`shimnn._ddp` for how torch's
``DistributedDataParallel`` uses it.

Each method keeps the C++ name and does what the C++ does, in the same order (the C++ comments
that explain why are kept short here); the methods torch's DDP calls from Python keep their
Python names (``prepare_for_backward``, ``_rebuild_buckets``, ``_set_static_graph``...), so
torch's own DDP code drives this object as it drives its reducer. The bits depend on three
things, all torch's: the copy into the bucket (``mul_out`` by the wrapped scalar
``1 / world_size``, or a true division once the gradient is the bucket's view or with
``batched_grad_copy``), the bucket layout (torch's ``_compute_bucket_assignment_by_size``,
rebuilt once in the order gradients became ready, rank 0's broadcast), and the collective (the
process group's ``allreduce`` of each flat bucket, SUM, in bucket order).
"""

from __future__ import annotations

import functools
import os
import sys
import time
import warnings
import weakref
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from . import _engine
from ._engine import _clone_obey_contract, _non_overlapping_and_dense
from ._graph import Node, Output, TrackedTensor, no_dispatch

__all__ = ["GradBucket", "Reducer", "refuse"]

_UNSET_DIV_FACTOR = -1
_is_alias_of: Callable[[Tensor, Tensor], bool] = torch._C._is_alias_of  # type: ignore[attr-defined]


def refuse(what: str) -> NotImplementedError:
    """The error for a DDP feature shimnn's reducer does not implement."""
    return NotImplementedError(
        f"shimnn: DistributedDataParallel with {what} is not supported for a model with shimnn "
        "parameters (shimnn's reducer does not implement it; torch's would not run).")


# ---------------------------------------------------------------------------------------------
# GradBucket: what a communication hook receives
# ---------------------------------------------------------------------------------------------


class GradBucket:
    """torch's ``dist.GradBucket`` for Python communication hooks: the bucket's flat buffer,
    its index among the buckets, the parameters whose gradients it holds and views of each
    gradient in the buffer (``c10d::GradBucket``'s methods, same names and results)."""

    __slots__ = ("_index", "_bucket_count", "_buffer", "_offsets", "_lengths", "_sizes",
                 "_parameters")

    def __init__(self, index: int, bucket_count: int, buffer: Tensor, offsets: list[int],
                 lengths: list[int], sizes: list[torch.Size], parameters: list[Tensor]) -> None:
        self._index = index
        self._bucket_count = bucket_count
        self._buffer = buffer
        self._offsets = offsets
        self._lengths = lengths
        self._sizes = sizes
        self._parameters = parameters

    def index(self) -> int:
        """The bucket's index (0: the bucket reduced first, holding the last layers)."""
        return self._index

    def buffer(self) -> Tensor:
        """The flattened 1-d gradient buffer."""
        return self._buffer

    def gradients(self) -> list[Tensor]:
        """Each parameter's gradient as a view of the buffer."""
        return [self._buffer[o:o + n].view(s)
                for o, n, s in zip(self._offsets, self._lengths, self._sizes)]

    def is_last(self) -> bool:
        """Whether this is the last bucket of the iteration (holding the first layers)."""
        return self._index == self._bucket_count - 1

    def parameters(self) -> list[Tensor]:
        """The parameters whose gradients the buffer holds, in buffer order."""
        return self._parameters

    def set_buffer(self, buffer: Tensor) -> None:
        """Replace the buffer (a hook returning a new tensor)."""
        self._buffer = buffer

    def __repr__(self) -> str:
        return f"<shimnn GradBucket {self._index} of {self._bucket_count}>"


class _Bucket:
    """``Reducer::Bucket``: a flat gradient tensor and the views of each variable in it."""

    __slots__ = ("gradients", "views_in", "views_out", "variables", "offsets", "lengths",
                 "sizes", "pending", "variable_indices", "future_work", "deferred")

    def __init__(self) -> None:
        self.gradients: Tensor = torch.empty(0)
        self.views_in: list[Tensor] = []
        self.views_out: list[Tensor] = []
        self.variables: list[Tensor] = []
        self.offsets: list[int] = []
        self.lengths: list[int] = []
        self.sizes: list[torch.Size] = []
        self.pending = 0
        self.variable_indices: list[int] = []
        self.future_work: Any | None = None
        self.deferred: list[int] = []  # batched_grad_copy: copies still to do


def _view(tensor: Tensor, variable: Tensor, offset: int, length: int) -> Tensor:
    """A view of ``tensor`` for ``variable``'s gradient at ``offset``: the variable's strides
    when it is dense (torch's gradient layout contract), else contiguous."""
    if _non_overlapping_and_dense(variable):
        return tensor.as_strided(variable.shape, variable.stride(), offset)
    return tensor.narrow(0, offset, length).view(variable.shape)


def _hook_result(value: Any) -> Tensor:
    """``detail::parseCppCommHookResult``: a hook's future holds a tensor or a tensor list."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], Tensor):
        return value[0]
    raise RuntimeError("expected the hook result is either a Tensor or a TensorList found "
                       f"{type(value).__name__}")


_warned_no_unused = False


# ---------------------------------------------------------------------------------------------
# The reducer
# ---------------------------------------------------------------------------------------------


class Reducer:
    """torch 2.13's ``c10d::Reducer``, run from shimnn's engine (see the module docstring).

    Methods keep the C++ names; those DDP's Python code calls keep its Python names
    (``_rebuild_buckets``, ``prepare_for_backward``, ...), so torch's DDP drives this object
    exactly as it drives its own reducer.
    """

    def __init__(self, cpp: Any, logger: Any, params: list[Tensor],
                 bucket_indices: list[list[int]], process_group: Any,
                 expect_sparse_gradients: list[bool], bucket_bytes_cap: int,
                 find_unused_parameters: bool, gradient_as_bucket_view: bool,
                 param_names: dict[int, str], first_bucket_bytes_cap: int,
                 skip_all_reduce_unused_params: bool, bucket_bytes_cap_list: list[int],
                 batched_grad_copy: bool) -> None:
        if any(expect_sparse_gradients):
            raise refuse("sparse gradients (an Embedding with sparse=True)")
        if any(p.is_complex() for p in params):
            raise refuse("complex parameters")
        self._cpp = cpp  # torch's reducer: the logger's, and the built-in hooks' runner
        self._logger = logger
        self.params = params
        self.process_group = process_group
        self.expect_sparse_gradients = expect_sparse_gradients
        self.expect_hooks = False
        self.require_finalize = False
        self.next_bucket = 0
        self.has_marked_unused_parameters = False
        self.find_unused_parameters = find_unused_parameters
        self.gradient_as_bucket_view = gradient_as_bucket_view
        self.batched_grad_copy = batched_grad_copy
        self.unused_parameters: list[int] = []
        self.prev_iteration_unused_parameters: list[int] = []
        self.ddp_graph_static = True
        self.local_used_map: list[int] = []
        self.local_used_map_dev: Tensor | None = None
        self.local_used_map_reduced = False
        self.local_used_work: Any = None
        self.installed_futures: list[Any] | None = None
        self.forward_work: Any = None
        self.use_static_world_size = False
        self.num_iterations = 0
        self.num_bwd_calls = 0
        self.first_hook_called = False
        self.num_buckets_ready = 0
        self.num_buckets_reduced = 0
        self.backward_compute_start_time = -1
        self.backward_stats = [0] * len(params)
        self.has_rebuilt_bucket = False
        self.rebuilt_params: list[Tensor] = []
        self.rebuilt_param_indices: list[int] = []
        self.bucket_bytes_cap = bucket_bytes_cap
        self.first_bucket_bytes_cap = first_bucket_bytes_cap
        self.bucket_bytes_cap_list = list(bucket_bytes_cap_list)
        self.div_factor = _UNSET_DIV_FACTOR
        self.static_graph = False
        self.delay_all_reduce_queued = False
        self.skip_all_reduce_unused_params = skip_all_reduce_unused_params
        # None (allreduce), ("python", state, hook) or ("builtin", torch's GradBucket).
        self.comm_hook: tuple[Any, ...] | None = None
        self.param_names = param_names
        self.num_grad_hooks_triggered = dict.fromkeys(range(len(params)), 0)
        self.num_grad_hooks_triggered_per_iteration: dict[int, int] = {}
        self.grad_ready_order_indices: list[int] = []
        self.per_iteration_ready_params: set[int] = set()
        self.sample_rate = 100
        self.debug_level = dist.get_debug_level()
        self.buckets: list[_Bucket] = []
        self.variable_locators: list[tuple[int, int]] = []
        self.cached_variables_for_bucket: dict[int, list[Tensor]] = {}
        with no_dispatch():
            self.initialize_buckets(bucket_indices)
        me = weakref.ref(self)
        self.hooks = [_engine.register_accumulate_grad_hook(p, functools.partial(_hook, me, i))
                      for i, p in enumerate(params)]
        if find_unused_parameters:
            self.initialize_local_used_map()

    def __del__(self) -> None:
        self.remove_hooks()

    # -- checks and errors -------------------------------------------------------------------

    def _fail(self, message: str, error: type[Exception] = RuntimeError) -> Exception:
        """REDUCER_CHECK: the message goes to DDP's logging data, then raises."""
        if self._logger is not None:
            try:
                self._logger.set_error_and_log(message)
            except Exception:  # noqa: BLE001 - logging must not hide the error
                pass
        return error(message)

    def dynamic_graph_find_unused(self) -> bool:
        return not self.static_graph and self.find_unused_parameters

    def static_graph_first_iteration(self) -> bool:
        return self.static_graph and self.num_bwd_calls == 1

    def static_graph_after_first_iteration(self) -> bool:
        return self.static_graph and self.num_bwd_calls > 1

    def should_rebuild_buckets(self) -> bool:
        return (self.static_graph or not self.find_unused_parameters) and (
            not self.has_rebuilt_bucket)

    def initialize_local_used_map(self) -> None:
        n = len(self.params)
        self.local_used_map = [0] * n
        self.local_used_map_dev = torch.empty(n, dtype=torch.int32, device=self.params[0].device)

    def check_grad_layout(self, grad: Tensor, bucket_view: Tensor) -> None:
        if grad.dtype != bucket_view.dtype:
            raise self._fail(f"Expected {_scalar_name(bucket_view.dtype)}, got "
                             f"{_scalar_name(grad.dtype)}")
        if grad.stride() != bucket_view.stride():
            warnings.warn(
                "Grad strides do not match bucket view strides. This may indicate grad was not "
                "created according to the gradient layout contract, or that the param's "
                "strides changed since DDP was constructed.  This is not an error, but may "
                f"impair performance.\ngrad.sizes() = {list(grad.shape)}, strides() = "
                f"{list(grad.stride())}\nbucket_view.sizes() = {list(bucket_view.shape)}, "
                f"strides() = {list(bucket_view.stride())}", UserWarning, stacklevel=2)

    # -- buckets -------------------------------------------------------------------------------

    def initialize_buckets(self, bucket_indices: list[list[int]]) -> None:
        if self.expect_hooks:
            raise self._fail(
                "`initialize_buckets` must NOT be called during autograd execution.")
        self.buckets = []
        self.variable_locators = [(0, 0)] * len(self.params)
        for bucket_index, indices in enumerate(bucket_indices):
            if not indices:
                raise self._fail("Empty bucket specified.")
            bucket = _Bucket()
            device = dtype = None
            offset = 0
            for variable_index in indices:
                variable = self.params[variable_index]
                if device is None:
                    device = variable.device
                elif variable.device != device:
                    raise self._fail("All parameters in a bucket must be placed on the same "
                                     "device.")
                if dtype is None:
                    dtype = variable.dtype
                elif variable.dtype != dtype:
                    raise self._fail("All parameters in a bucket must have the same dtype.")
                length = variable.numel()
                bucket.variables.append(variable)
                bucket.offsets.append(offset)
                bucket.lengths.append(length)
                bucket.sizes.append(variable.shape)
                offset += length
            bucket.gradients = torch.empty(offset, dtype=dtype, device=device)
            self.initialize_bucket_views(bucket)
            for i, variable_index in enumerate(indices):
                self.variable_locators[variable_index] = (bucket_index, i)
            bucket.variable_indices = list(indices)
            self.buckets.append(bucket)

    def initialize_bucket_views(self, bucket: _Bucket) -> None:
        for v, offset, length in zip(bucket.variables, bucket.offsets, bucket.lengths):
            view = _view(bucket.gradients, v, offset, length)
            bucket.views_in.append(view)
            # A gradient already there (buckets rebuilt) moves into its view; at construction
            # there is none, and a globally unused parameter's must stay undefined.
            if self.gradient_as_bucket_view:
                grad = v.grad
                if grad is not None and not _is_alias_of(grad, view):
                    view.copy_(grad)
                    v.grad = view
        bucket.views_out = list(bucket.views_in)

    def populate_bucket_views_out(self, bucket: _Bucket, tensor: Tensor) -> None:
        bucket.views_out = [_view(tensor, v, o, n) for v, o, n in
                            zip(bucket.variables, bucket.offsets, bucket.lengths)]

    def get_variables_for_bucket(self, bucket_index: int, bucket: _Bucket) -> list[Tensor]:
        if self.has_rebuilt_bucket:
            cached = self.cached_variables_for_bucket.get(bucket_index)
            if cached is not None:
                return cached
        variables = [bucket.variables[self.variable_locators[i][1]]
                     for i in bucket.variable_indices]
        if self.has_rebuilt_bucket:
            self.cached_variables_for_bucket[bucket_index] = variables
        return variables

    def reset_bucket_counting(self) -> None:
        self.next_bucket = 0
        self.num_buckets_ready = 0
        self.num_buckets_reduced = 0
        for bucket in self.buckets:
            bucket.pending = len(bucket.variables)
            bucket.deferred.clear()
        if self.static_graph:
            self.num_grad_hooks_triggered_per_iteration = dict(self.num_grad_hooks_triggered)

    # -- the backward ----------------------------------------------------------------------------

    def set_divide_factor(self) -> None:
        if self.div_factor == _UNSET_DIV_FACTOR:
            self.div_factor = self.process_group.size()
            work = self.forward_work
            if work is not None and not self.use_static_world_size:
                work.wait()
                self.div_factor = int(_hook_result(work.get_future().value()).item())

    def accumulate_grad_hook(self, index: int) -> None:
        """Called after ``params[index]``'s gradient was accumulated: C++ ``autograd_hook``,
        torch's hook on the parameter's AccumulateGrad."""
        if not self.first_hook_called:
            self.first_hook_called = True
            self.num_bwd_calls += 1
        if self.dynamic_graph_find_unused() or self.static_graph_first_iteration():
            if self.params[index].grad is not None:
                self.local_used_map[index] = 1
        if self.static_graph_first_iteration():
            self.num_grad_hooks_triggered[index] += 1
            if not self.delay_all_reduce_queued:
                # torch's _DDPSink.backward queues it at the start of this backward
                self.delay_all_reduce_queued = True
                _engine.queue_callback(self._delay_all_reduce)
            return
        if not self.expect_hooks:
            return  # no_sync, or no prepare_for_backward: gradients accumulate locally
        self.grad_ready_order_indices.append(index)
        if not self.has_marked_unused_parameters:
            self.has_marked_unused_parameters = True
            for unused_index in self.unused_parameters:
                self.mark_variable_ready(unused_index)
        if self.static_graph_after_first_iteration():
            remaining = self.num_grad_hooks_triggered_per_iteration.get(index, 0)
            if remaining <= 0:
                raise self._fail(
                    "Your training graph has changed in this iteration, e.g., one parameter "
                    "is unused in first iteration, but then got used in the second iteration. "
                    "this is not compatible with static_graph set to True.")
            self.num_grad_hooks_triggered_per_iteration[index] = remaining - 1
            if remaining == 1:
                if self.should_rebuild_buckets():
                    self.push_rebuilt_params(index)
                self.mark_variable_ready(index)
        else:
            if self.should_rebuild_buckets():
                self.push_rebuilt_params(index)
            self.mark_variable_ready(index)

    def push_rebuilt_params(self, index: int) -> None:
        self.rebuilt_params.append(self.params[index])
        self.rebuilt_param_indices.append(index)

    def check_and_raise_marked_twice(self, index: int) -> None:
        if index not in self.per_iteration_ready_params:
            return
        name = self.param_names.get(index)
        info = (f"Parameter at index {index}"
                f"{f' with name {name}' if name is not None else ''} has been marked as ready "
                "twice. This means that multiple autograd engine  hooks have fired for this "
                "particular parameter during this iteration.")
        if name is None:
            info += (" You can set the environment variable TORCH_DISTRIBUTED_DEBUG to either "
                     "INFO or DETAIL to print parameter names for further debugging.")
        common = (
            "Expected to mark a variable ready only once. This error is caused by one of the "
            "following reasons: 1) Use of a module parameter outside the `forward` function. "
            "Please make sure model parameters are not shared across multiple concurrent "
            "forward-backward passes. or try to use _set_static_graph() as a workaround if "
            "this module graph does not change during training loop.2) Reused parameters in "
            "multiple reentrant backward passes. For example, if you use multiple "
            "`checkpoint` functions to wrap the same part of your model, it would result in "
            "the same set of parameters been used by different reentrant backward passes "
            "multiple times, and hence marking a variable ready multiple times. DDP does not "
            "support such use cases in default. You can try to use _set_static_graph() as a "
            "workaround if your module graph does not change over iterations.")
        common += "\n" + info
        if not self.has_marked_unused_parameters:
            raise self._fail(
                common + "3) Incorrect unused parameter detection. The return value of the "
                "`forward` function is inspected by the distributed data parallel wrapper to "
                "figure out if any of the module's parameters went unused. For unused "
                "parameters, DDP would not expect gradients from then. However, if an unused "
                "parameter becomes part of the autograd graph at a later point in time (e.g., "
                "in a reentrant backward when using `checkpoint`), the gradient will show up "
                "unexpectedly. If all parameters in the model participate in the backward "
                "pass, you can disable unused parameter detection by passing the keyword "
                "argument `find_unused_parameters=False` to "
                "`torch.nn.parallel.DistributedDataParallel`. If unused parameters in the "
                "model do not change over iterations, You can try to use _set_static_graph() "
                "as a workaround if this module graph does not change during training loop.")
        raise self._fail(common)

    def mark_variable_ready(self, index: int) -> None:
        if index >= len(self.variable_locators):
            raise self._fail("Out of range variable index.")
        if index in self.per_iteration_ready_params:
            self.check_and_raise_marked_twice(index)
        self.per_iteration_ready_params.add(index)
        self.backward_stats[index] = time.perf_counter_ns() - self.backward_compute_start_time
        self.require_finalize = True
        bucket_index, _ = self.variable_locators[index]
        bucket = self.buckets[bucket_index]
        if self.div_factor == _UNSET_DIV_FACTOR:
            self.set_divide_factor()
        self.mark_variable_ready_dense(index)
        bucket.pending -= 1
        if bucket.pending == 0:
            if self.batched_grad_copy:
                self.flush_deferred_copies(bucket, bucket_index)
            self.mark_bucket_ready(bucket_index)
        if self.next_bucket == len(self.buckets):
            if self.dynamic_graph_find_unused():
                self.all_reduce_local_used_map()
            _engine.queue_callback(self._final_callback)

    def mark_variable_ready_dense(self, index: int) -> None:
        bucket_index, i = self.variable_locators[index]
        bucket = self.buckets[bucket_index]
        variable = bucket.variables[i]
        bucket_view = bucket.views_in[i]
        grad = variable.grad
        if grad is not None:
            if grad.dtype != bucket_view.dtype or grad.stride() != bucket_view.stride():
                self.check_grad_layout(grad, bucket_view)
            if not _is_alias_of(grad, bucket_view):
                if self.batched_grad_copy and not grad.requires_grad:
                    bucket.deferred.append(i)  # one _foreach_copy_ and one division later
                    return
                if self.comm_hook is None:
                    if not grad.requires_grad:
                        # at::mul_out(bucket_view, grad, wrapped_scalar_tensor(1. / n)): the
                        # division while copying, as a multiplication by 1/n
                        torch.mul(grad, 1.0 / self.div_factor, out=bucket_view)
                    else:
                        bucket_view.copy_(torch.mul(grad, 1.0 / self.div_factor))
                else:
                    bucket_view.copy_(grad)
                if self.gradient_as_bucket_view:
                    variable.grad = bucket_view
            elif not self.batched_grad_copy and self.comm_hook is None:
                bucket_view.div_(self.div_factor)  # already the bucket's: a true division
        else:
            if (self.dynamic_graph_find_unused() or self.static_graph_first_iteration()) and (
                    self.local_used_map[index] != 0):
                raise self._fail(
                    "Encountered gradient which is undefined, but still allreduced by DDP "
                    "reducer. This indicates a bug in DDP implementation, please report a bug "
                    "with a repro to PyTorch.")
            bucket_view.zero_()

    def flush_deferred_copies(self, bucket: _Bucket, bucket_index: int) -> None:
        if bucket.deferred:
            dsts, srcs = [], []
            for i in bucket.deferred:
                grad = bucket.variables[i].grad
                if grad is None:
                    raise RuntimeError(
                        f"Gradient became undefined between defer and flush for variable {i} "
                        f"in bucket {bucket_index}. This indicates a bug — gradients should not "
                        "be modified during backward.")
                dsts.append(bucket.views_in[i])
                srcs.append(grad)
            torch._foreach_copy_(dsts, srcs)
            if self.gradient_as_bucket_view:
                for i in bucket.deferred:
                    bucket.variables[i].grad = bucket.views_in[i]
            bucket.deferred.clear()
        if self.comm_hook is None:
            bucket.gradients.div_(self.div_factor)

    def is_unused_bucket(self, bucket: _Bucket) -> bool:
        return all(i in self.unused_parameters for i in bucket.variable_indices)

    def mark_bucket_ready(self, bucket_index: int) -> None:
        if bucket_index > self.next_bucket:
            return  # buckets are reduced in order
        while self.next_bucket < len(self.buckets) and (
                self.buckets[self.next_bucket].pending == 0):
            self.num_buckets_ready += 1
            bucket = self.buckets[self.next_bucket]
            if not (self.skip_all_reduce_unused_params and self.is_unused_bucket(bucket)):
                self.all_reduce_bucket(bucket)
                self.num_buckets_reduced += 1
            self.next_bucket += 1

    def all_reduce_bucket(self, bucket: _Bucket) -> None:
        grad_bucket = GradBucket(
            self.next_bucket, len(self.buckets), bucket.gradients, bucket.offsets,
            bucket.lengths, bucket.sizes, self.get_variables_for_bucket(self.next_bucket, bucket))
        bucket.future_work = self.run_comm_hook(grad_bucket)

    def run_comm_hook(self, grad_bucket: GradBucket) -> Any:
        """The registered hook, or torch's ``_AllReduceBySumCommHook``: an allreduce (SUM) of
        the buffer on the process group."""
        hook = self.comm_hook
        if hook is None:
            return self.process_group.allreduce([grad_bucket.buffer()]).get_future()
        if hook[0] == "builtin":  # torch's C++ hook: it reads the buffer only
            cpp_bucket = hook[1]
            cpp_bucket.set_buffer(grad_bucket.buffer())
            return self._cpp._run_comm_hook(cpp_bucket)  # type: ignore[no-any-return]
        _, state, python_hook = hook
        future = python_hook(state, grad_bucket)
        if not isinstance(future, torch._C.Future):
            kind = type(future)
            raise RuntimeError(
                "DDP communication hook's callback must return a torch.futures.Future object, "
                f"but got {kind.__module__}.{kind.__qualname__}")
        return future  # type: ignore[return-value]

    def all_reduce_local_used_map(self) -> None:
        assert self.local_used_map_dev is not None
        self.local_used_map_dev.copy_(torch.tensor(self.local_used_map, dtype=torch.int32),
                                      non_blocking=True)
        self.local_used_work = self.process_group.allreduce([self.local_used_map_dev])

    def _final_callback(self) -> None:
        """The callback torch queues once the last bucket is ready: the end of the backward."""
        assert self.next_bucket == len(self.buckets)
        with no_dispatch():
            if self.static_graph_after_first_iteration() and self.should_rebuild_buckets():
                for unused_index in self.unused_parameters:
                    self.push_rebuilt_params(unused_index)
            self.finalize_backward()

    def _delay_all_reduce(self) -> None:
        """``delay_all_reduce``: static graph's first iteration, once its backward is over."""
        with no_dispatch():
            self.all_reduce_local_used_map()
            self.unused_parameters = []
            self.require_finalize = True
            for index in range(len(self.params)):
                if self.num_grad_hooks_triggered[index] == 0:
                    self.unused_parameters.append(index)
                self.set_divide_factor()
                self.mark_variable_ready_dense(index)
            if self.debug_level != dist.DebugLevel.OFF and self.unused_parameters:
                names = "".join(f"{{{self.param_names.get(i)},{i}}}"
                                for i in self.unused_parameters)
                print(f"[Rank {self.process_group.rank()}]: Parameter(s) (in the format of "
                      f"{{param_name, index}}): {names} is(are) unused during first iteration. "
                      "Since static_graph=True is enabled for DDP, we expect this set of unused "
                      "parameters to remain consistent on this rank throughout the training.",
                      file=sys.stderr)
            for bucket_index, bucket in enumerate(self.buckets):
                if self.batched_grad_copy:
                    self.flush_deferred_copies(bucket, bucket_index)
                self.all_reduce_bucket(bucket)  # torch's index: next_bucket, still 0
            self.finalize_backward()

    def finalize_bucket_dense(self, bucket: _Bucket) -> None:
        for i, variable in enumerate(bucket.variables):
            global_unused = False
            if self.static_graph or self.find_unused_parameters:
                variable_index = bucket.variable_indices[i]
                # Used locally: used globally. Else wait for the reduced map (lazily, once).
                global_unused = self.local_used_map[variable_index] == 0
                if global_unused and not self.local_used_map_reduced:
                    self.local_used_work.wait()
                    assert self.local_used_map_dev is not None
                    self.local_used_map = self.local_used_map_dev.tolist()
                    global_unused = self.local_used_map[variable_index] == 0
                    self.local_used_map_reduced = True
            if not self.gradient_as_bucket_view:
                if not global_unused:  # copy_bucket_to_grad
                    bucket_view = bucket.views_out[i]
                    grad = variable.grad
                    if grad is None:
                        variable.grad = _clone_obey_contract(bucket_view, variable)
                    else:
                        grad.copy_(bucket_view)
                continue
            view_out, view_in = bucket.views_out[i], bucket.views_in[i]
            if not _is_alias_of(view_in, view_out):
                view_in.copy_(view_out)  # a hook's result in a new tensor
            if not global_unused:
                grad = variable.grad
                if grad is None:
                    variable.grad = view_in
                elif not _is_alias_of(grad, view_in):
                    raise self._fail(
                        "Detected at least one parameter gradient is not the expected DDP "
                        "bucket view with gradient_as_bucket_view=True. This may happen (for "
                        "example) if multiple allreduce hooks were registered onto the same "
                        "parameter. If you hit this error, please file an issue with a minimal "
                        "repro.")

    def finalize_backward(self) -> None:
        assert self.expect_hooks
        self.expect_hooks = False
        self.first_hook_called = False
        assert self.require_finalize
        self.require_finalize = False
        python_hook = self.comm_hook is not None and self.comm_hook[0] == "python"
        for bucket in self.buckets:
            future = bucket.future_work
            if future is None:  # skipped: a bucket of unused parameters
                assert self.skip_all_reduce_unused_params, (
                    "currently only support to skip all reduce for unused params when "
                    "skip_all_reduce_unused_params_ is true.")
                continue
            future.wait()
            value = future.value()
            if python_hook and not isinstance(value, Tensor):
                raise RuntimeError(
                    "DDP communication hook's future must hold a Tensor (torch.futures."
                    f"Future[torch.Tensor]), but it holds {type(value).__name__}")
            result = _hook_result(value)
            if result is bucket.gradients:  # reduced in place: the same views
                bucket.views_out = bucket.views_in
            else:
                self.populate_bucket_views_out(bucket, result)
            self.div_factor = _UNSET_DIV_FACTOR  # may change with join
            self.finalize_bucket_dense(bucket)
        if self.installed_futures is not None:
            torch.futures.collect_all(self.installed_futures).wait()
            self.installed_futures = None
        if (self.dynamic_graph_find_unused() or self.static_graph_first_iteration()) and (
                not self.local_used_map_reduced):
            self.local_used_work.wait()
        if self.dynamic_graph_find_unused():
            self.local_used_map = [0] * len(self.params)
            self.local_used_map_reduced = False

    def search_unused_parameters(self, outputs: list[Tensor]) -> None:
        """The parameters no output's graph reaches (torch traverses its autograd graph from
        the outputs' ``grad_fn``; this, shimnn's)."""
        seen: set[int] = set()
        reached: set[int] = set()
        stack: list[Node] = [t._node for t in outputs
                             if type(t) is TrackedTensor and t._node is not None]
        while stack:
            node = stack.pop()
            for e in node.inputs:
                t = type(e)
                if t is Node or t is Output:
                    child = e if t is Node else e.node  # type: ignore[union-attr]
                    if id(child) not in seen:
                        seen.add(id(child))
                        stack.append(child)  # type: ignore[arg-type]
                elif e is not None:
                    reached.add(id(e))
        self.unused_parameters = [i for i, p in enumerate(self.params) if id(p) not in reached]
        if not self.unused_parameters:
            global _warned_no_unused
            if not _warned_no_unused:
                _warned_no_unused = True
                warnings.warn(
                    "find_unused_parameters=True was specified in DDP constructor, but did not "
                    "find any unused parameters in the forward pass. This flag results in an "
                    "extra traversal of the autograd graph every iteration,  which can "
                    "adversely affect performance. If your model indeed never has any unused "
                    "parameters in the forward pass, consider turning this flag off. Note that "
                    "this warning may be a false positive if your model has flow control "
                    "causing later iterations to have unused parameters.", UserWarning,
                    stacklevel=4)
        if not self.static_graph and self.ddp_graph_static:
            if self.num_iterations > 1:
                self.ddp_graph_static = (
                    self.prev_iteration_unused_parameters == self.unused_parameters)
            self.prev_iteration_unused_parameters = list(self.unused_parameters)

    def ensure_prior_reduction_finished(self) -> None:
        if not self.require_finalize:
            return
        unmarked = [i for i in range(len(self.params))
                    if i not in self.per_iteration_ready_params]
        base = ("Expected to have finished reduction in the prior iteration before starting a "
                "new one. This error indicates that your module has parameters that were not "
                "used in producing loss. ")
        outputs_not_used = ("making sure all `forward` function outputs participate in "
                            "calculating loss. ")
        ddp_bug = ("\nIf you already have done the above, then the distributed data parallel "
                   "module wasn't able to locate the output tensors in the return value of your "
                   "module's `forward` function. Please include the loss function and the "
                   "structure of the return value of `forward` of your module when reporting "
                   "this issue (e.g. list, dict, iterable).")
        if self.static_graph:
            base = ("Expected to have finished reduction in the prior iteration before "
                    "starting a new one. This error indicates that your training graph has "
                    "changed in this iteration, e.g., one parameter is used in first "
                    "iteration, but then got unused in the second iteration. this is not "
                    "compatible with static_graph set to True.")
        elif not self.find_unused_parameters:
            base += ("You can enable unused parameter detection by passing the keyword "
                     "argument `find_unused_parameters=True` to "
                     "`torch.nn.parallel.DistributedDataParallel`, and by \n")
            base += outputs_not_used + ddp_bug
        else:
            base += ("Since `find_unused_parameters=True` is enabled, this likely  means that "
                     "not all `forward` outputs participate in computing loss. You can fix "
                     "this by ")
            base += outputs_not_used + ddp_bug
        indices_info = (f"\nParameter indices which did not receive grad for rank "
                        f"{self.process_group.rank()}: {' '.join(map(str, unmarked))}")
        if self.debug_level == dist.DebugLevel.OFF:
            base += indices_info + (
                "\n In addition, you can set the environment variable TORCH_DISTRIBUTED_DEBUG "
                "to either INFO or DETAIL to print out information about which particular "
                "parameters did not receive gradient on this rank as part of this error")
        else:
            names = ", ".join(self.param_names[i] for i in unmarked if i in self.param_names)
            base += (f"\nParameters which did not receive grad for rank "
                     f"{self.process_group.rank()}: {names}") + indices_info
        raise self._fail(base)

    # -- what DistributedDataParallel calls (torch's Python names) -------------------------------

    def prepare_for_forward(self) -> None:
        self.num_iterations += 1

    def prepare_for_backward(self, outputs: list[Tensor]) -> None:
        with no_dispatch():
            self.backward_compute_start_time = time.perf_counter_ns()
            self.expect_hooks = True
            self.grad_ready_order_indices.clear()
            self.reset_bucket_counting()
            self.has_marked_unused_parameters = False
            self.per_iteration_ready_params.clear()
            if self.dynamic_graph_find_unused():
                self.unused_parameters = []
                self.search_unused_parameters(outputs)

    def _rebuild_buckets(self) -> bool:
        """Rebuild the buckets in the order gradients became ready (once), rank 0's layout."""
        self.ensure_prior_reduction_finished()
        if not self.should_rebuild_buckets() or not self.rebuilt_params:
            return False
        assert len(self.rebuilt_params) == len(self.rebuilt_param_indices)
        assert len(self.params) == len(self.rebuilt_param_indices), (
            "rebuilt parameter indices size is not same as original model parameters size."
            f"Original model param size is: {len(self.params)} versus rebuilt params size of: "
            f"{len(self.rebuilt_param_indices)}")
        limits = self.bucket_bytes_cap_list or [self.first_bucket_bytes_cap,
                                                self.bucket_bytes_cap]
        last_small = os.environ.get("DDP_SET_LAST_BUCKET_CAP", "N/A") == "1"
        if last_small:
            self.rebuilt_params.reverse()
            self.rebuilt_param_indices.reverse()
        indices, per_bucket_limits = dist._compute_bucket_assignment_by_size(
            self.rebuilt_params, limits, self.expect_sparse_gradients,
            self.rebuilt_param_indices)
        if last_small:
            indices.reverse()
            per_bucket_limits.reverse()
        with no_dispatch():
            indices = self.sync_bucket_indices(indices)
            self.has_rebuilt_bucket = True
            self.rebuilt_params = []
            self.rebuilt_param_indices = []
            self.initialize_buckets(indices)
        return True

    def sync_bucket_indices(self, bucket_indices: list[list[int]]) -> list[list[int]]:
        """Rank 0's bucket layout, broadcast (two broadcasts, as torch)."""
        device = self.params[0].device
        sizes = [len(b) for b in bucket_indices]
        total = sum(sizes)
        flat = torch.tensor([i for b in bucket_indices for i in b] + [len(bucket_indices)],
                            dtype=torch.int32)
        on_device = torch.empty(total + 1, dtype=torch.int32, device=device)
        on_device.copy_(flat, non_blocking=True)
        self.process_group.broadcast([on_device]).wait()
        flat.copy_(on_device)
        values = flat.tolist()
        num_buckets = values[total]
        size_list = [sizes[min(i, len(sizes) - 1)] for i in range(num_buckets)]
        sizes_on_device = torch.tensor(size_list, dtype=torch.int32).to(device)
        self.process_group.broadcast([sizes_on_device]).wait()
        received = sizes_on_device.tolist()
        out: list[list[int]] = []
        position = 0
        for bucket_size in received:
            if not 0 <= bucket_size <= total + 1:
                raise IndexError("received invalid bucket_size, was abort called?")
            out.append(values[position:position + bucket_size])
            position += bucket_size
        return out

    def _set_static_graph(self) -> None:
        if self.num_iterations != 0:
            raise self._fail("set_static_graph() should be called before training loop starts "
                             "and after DistributedDataParallel is constructed.")
        self.static_graph = True
        self.initialize_local_used_map()

    def _set_forward_pass_work_handle(self, work: Any, use_static_world_size: bool) -> None:
        self.forward_work = work
        self.use_static_world_size = use_static_world_size

    def _install_post_backward_futures(self, futures: list[Any]) -> None:
        if self.installed_futures is None:
            self.installed_futures = list(futures)
        else:
            self.installed_futures.extend(futures)

    def _push_all_rebuilt_params(self) -> None:
        if not self.should_rebuild_buckets() or self.rebuilt_param_indices:
            return
        for index in range(len(self.params)):
            self.push_rebuilt_params(index)

    def _get_zeros_like_grad_buckets(self) -> list[GradBucket]:
        return [GradBucket(i, len(self.buckets), torch.zeros_like(b.gradients), b.offsets,
                           b.lengths, b.sizes, self.get_variables_for_bucket(i, b))
                for i, b in enumerate(self.buckets)]

    def _run_comm_hook(self, grad_bucket: GradBucket) -> Any:
        return self.run_comm_hook(grad_bucket)

    def _run_allreduce_hook(self, grad_bucket: GradBucket) -> Any:
        return self.process_group.allreduce([grad_bucket.buffer()]).get_future()

    def _get_local_used_map(self) -> Tensor:
        assert self.local_used_map_dev is not None
        return self.local_used_map_dev

    def _check_reducer_finalized(self) -> None:
        self.ensure_prior_reduction_finished()

    def remove_hooks(self) -> None:
        """Unregister the hooks on the parameters' AccumulateGrad."""
        for handle in getattr(self, "hooks", ()):
            handle.remove()
        self.hooks = []

    _remove_autograd_hooks = remove_hooks  # torch's name (DDP._remove_autograd_hooks)

    def _reset_state(self) -> None:
        self.has_rebuilt_bucket = False
        self.rebuilt_params = []
        self.rebuilt_param_indices = []
        self.expect_hooks = False
        self.require_finalize = False
        self.first_hook_called = False
        self.div_factor = _UNSET_DIV_FACTOR
        if self.find_unused_parameters:
            self.local_used_map = [0] * len(self.params)
            self.local_used_map_reduced = False

    def _update_process_group(self, process_group: Any) -> None:
        self.process_group = process_group

    def _ddp_graph_static(self) -> bool:
        return self.ddp_graph_static

    def _set_ddp_runtime_logging_sample_rate(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate

    def get_backward_stats(self) -> list[int]:
        return list(self.backward_stats)

    def set_logger(self, logger: Any) -> None:
        self._logger = logger

    def register_comm_hook(self, state: object, hook: Callable[..., Any]) -> None:
        self.comm_hook = ("python", state, hook)

    def register_builtin_comm_hook(self) -> None:
        # torch registered the hook in its C++ reducer; a bucket of its to hand it buffers
        self.comm_hook = ("builtin", self._cpp._get_zeros_like_grad_buckets()[0])

    def _set_mixed_precision_param_dtype(self, dtype: torch.dtype) -> None:
        raise refuse("mixed_precision")

    def _set_optimizer_in_backward(self) -> None:
        raise refuse("an optimizer in backward (_register_fused_optim, "
                      "apply_optimizer_in_backward)")

    def _set_sparse_metadata(self, metadata: Any) -> None:
        raise refuse("sparse gradients")


def _hook(reducer: weakref.ref[Reducer], index: int, leaf: Tensor) -> None:
    """The hook on parameter ``index``'s AccumulateGrad (a weak reference: DDP owns it)."""
    r = reducer()
    if r is not None:
        r.accumulate_grad_hook(index)


def _scalar_name(dtype: torch.dtype) -> str:
    """c10's ScalarType name (``Float``, ``Double``...), as torch's reducer prints it."""
    return {torch.float32: "Float", torch.float64: "Double", torch.float16: "Half",
            torch.bfloat16: "BFloat16"}.get(dtype, str(dtype))
