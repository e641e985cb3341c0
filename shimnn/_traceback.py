"""Tracebacks that show the user's code, not shimnn's internals.

An error raised inside shimnn's engine (a refused backward, a bad gradient) would otherwise
show a dozen of shimnn's frames before its message. The entry points users call
(``loss.backward()``, ``torch.autograd.grad``/``backward`` on shimnn tensors, a shimnn module's
call) re-raise the same exception, of the same type and message, with shimnn's own frames
removed from its traceback; the one frame Python adds for the re-raise remains.
``SHIMNN_FULL_TRACEBACK=1`` keeps every frame (for debugging shimnn).
"""

from __future__ import annotations

import functools
import os
import types
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["trims_traceback", "without_shimnn_frames"]

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep
F = TypeVar("F", bound=Callable[..., Any])


def without_shimnn_frames(error: BaseException) -> BaseException:
    """``error`` with the frames of shimnn's own files dropped from its traceback (kept, all of
    them, under ``SHIMNN_FULL_TRACEBACK=1``)."""
    if os.environ.get("SHIMNN_FULL_TRACEBACK") == "1":
        return error
    kept = []
    tb = error.__traceback__
    while tb is not None:
        if not tb.tb_frame.f_code.co_filename.startswith(_PACKAGE):
            kept.append(tb)
        tb = tb.tb_next
    trimmed = None
    for entry in reversed(kept):
        trimmed = types.TracebackType(trimmed, entry.tb_frame, entry.tb_lasti, entry.tb_lineno)
    return error.with_traceback(trimmed)


def trims_traceback(fn: F) -> F:
    """Decorate a user-facing entry point: errors leave it without shimnn's inner frames."""

    @functools.wraps(fn)
    def entry_point(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as error:
            raise without_shimnn_frames(error)  # noqa: B904  shimnn frames hidden: SHIMNN_FULL_TRACEBACK=1

    return entry_point  # type: ignore[return-value]
